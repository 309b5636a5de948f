//! The accelerator: its caching allocator through the C++ shim in `gpu/shim.cpp`, and the
//! gauges of a CUDA device (NVML and allocator, [`GpuSampler`]).
//!
//! tch has no binding for `emptyCache`, the allocator statistics or the device's memory info;
//! the shim wraps libtorch's device-generic `at::accelerator` API behind `extern "C"` functions
//! that never throw. On a machine without an accelerator every call answers
//! [`GpuError::NoAccelerator`] cleanly.

use std::ffi::{c_char, c_int, CStr};

use thiserror::Error;

mod sampler;
pub use sampler::{nvml_summary, GpuSampler};

extern "C" {
    fn hmr2_empty_cache(err: *mut c_char, len: usize) -> c_int;
    fn hmr2_device_stats(
        device: c_int,
        allocated: *mut i64,
        reserved: *mut i64,
        peak_allocated: *mut i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn hmr2_reset_peak_stats(device: c_int, err: *mut c_char, len: usize) -> c_int;
    fn hmr2_memory_info(
        device: c_int,
        free_bytes: *mut u64,
        total_bytes: *mut u64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// Why an allocator call gave no answer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GpuError {
    /// This process has no accelerator (CPU machine, or CUDA not loadable).
    #[error("no accelerator available")]
    NoAccelerator,
    /// libtorch raised; the message is its first line.
    #[error("libtorch: {0}")]
    Torch(String),
}

/// The caching allocator's view of one device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocatorStats {
    /// Bytes held by live tensors.
    pub allocated: i64,
    /// Bytes the allocator holds from the driver (allocated + cached).
    pub reserved: i64,
    /// Highest `allocated` since the last [`reset_peak`].
    pub peak_allocated: i64,
}

/// Free and total memory of one device as the driver sees it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryInfo {
    pub free: u64,
    pub total: u64,
}

const ERR_LEN: usize = 512;

fn check(code: c_int, err: &[c_char; ERR_LEN]) -> Result<(), GpuError> {
    match code {
        0 => Ok(()),
        1 => Err(GpuError::NoAccelerator),
        _ => {
            // SAFETY: the shim always NUL-terminates within ERR_LEN (buffer zeroed beforehand).
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
            Err(GpuError::Torch(
                msg.lines().next().unwrap_or("").to_string(),
            ))
        }
    }
}

/// Returns the allocator's unused cached blocks to the driver (`emptyCache`).
pub fn empty_cache() -> Result<(), GpuError> {
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: err is a valid buffer of ERR_LEN bytes.
    let code = unsafe { hmr2_empty_cache(err.as_mut_ptr(), ERR_LEN) };
    check(code, &err)
}

/// Allocator statistics of `device`.
pub fn stats(device: usize) -> Result<AllocatorStats, GpuError> {
    let mut s = AllocatorStats::default();
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: all out-pointers point at live locals; err holds ERR_LEN bytes.
    let code = unsafe {
        hmr2_device_stats(
            device as c_int,
            &mut s.allocated,
            &mut s.reserved,
            &mut s.peak_allocated,
            err.as_mut_ptr(),
            ERR_LEN,
        )
    };
    check(code, &err).map(|_| s)
}

/// Resets the peak statistics of `device`, so the next [`stats`] gives the peak since now.
pub fn reset_peak(device: usize) -> Result<(), GpuError> {
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: err holds ERR_LEN bytes.
    let code = unsafe { hmr2_reset_peak_stats(device as c_int, err.as_mut_ptr(), ERR_LEN) };
    check(code, &err)
}

/// Free and total memory of `device`.
pub fn memory_info(device: usize) -> Result<MemoryInfo, GpuError> {
    let mut m = MemoryInfo::default();
    let mut err = [0 as c_char; ERR_LEN];
    // SAFETY: out-pointers point at live locals; err holds ERR_LEN bytes.
    let code = unsafe {
        hmr2_memory_info(
            device as c_int,
            &mut m.free,
            &mut m.total,
            err.as_mut_ptr(),
            ERR_LEN,
        )
    };
    check(code, &err).map(|_| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU every call answers "no accelerator" instead of crashing;
    /// on a GPU machine the figures are consistent.
    #[test]
    fn shim_answers_cleanly() {
        if !tch::Cuda::is_available() {
            assert_eq!(empty_cache(), Err(GpuError::NoAccelerator));
            assert_eq!(stats(0), Err(GpuError::NoAccelerator));
            assert_eq!(reset_peak(0), Err(GpuError::NoAccelerator));
            assert_eq!(memory_info(0), Err(GpuError::NoAccelerator));
        } else {
            let t = tch::Tensor::zeros([1 << 20], (tch::Kind::Float, tch::Device::Cuda(0)));
            let s = stats(0).unwrap();
            assert!(s.allocated >= 4 << 20 && s.reserved >= s.allocated);
            drop(t);
            empty_cache().unwrap();
            let m = memory_info(0).unwrap();
            assert!(m.total > m.free);
        }
    }
}
