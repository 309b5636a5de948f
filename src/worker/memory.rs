//! The GPU memory policy of one device (DESIGN §4), applied by the inference thread around
//! every batch: reset the peak before, then record it, return the allocator's cache to the
//! driver per `gpu.release`, and compare what stays allocated with the baseline taken after
//! warm-up (the drift watch that shows a leak early). Free of CUDA behind [`Allocator`], so
//! the policy is tested without a GPU.

use std::sync::Arc;

use metrics::{counter, histogram};

use crate::config::{GpuConfig, ReleasePolicy};
use crate::gpu::{self, AllocatorStats, GpuSampler};
use crate::metrics as m;

/// Whether the allocator's cache goes back to the driver after a batch (DESIGN §4).
pub(crate) fn should_release(policy: ReleasePolicy, reserved: i64, threshold: u64) -> bool {
    match policy {
        ReleasePolicy::PerJob => true,
        ReleasePolicy::Threshold => reserved > threshold as i64,
        ReleasePolicy::Never => false,
    }
}

/// The device allocator as the memory policy sees it: the seam that lets the policy be tested
/// without a GPU.
pub(crate) trait Allocator {
    /// Starts a new peak measurement.
    fn reset_peak(&self);
    /// Current figures (and refreshes the memory gauges when it has any).
    fn stats(&self) -> Option<AllocatorStats>;
    /// Returns unused cached blocks to the driver; true when that worked.
    fn release(&self) -> bool;
}

/// A CUDA device through the allocator shim; its figures go to the gauges of the one
/// [`GpuSampler`] of the device (which the gauge task also samples, NVML included).
pub(crate) struct Cuda {
    sampler: Arc<GpuSampler>,
}

impl Cuda {
    pub(crate) fn new(sampler: Arc<GpuSampler>) -> Self {
        Cuda { sampler }
    }
}

impl Allocator for Cuda {
    fn reset_peak(&self) {
        let _ = gpu::reset_peak(self.sampler.cuda_index());
    }
    fn stats(&self) -> Option<AllocatorStats> {
        // The allocator only: NVML is sampled by the gauge task, off this thread.
        self.sampler.sample_allocator()
    }
    fn release(&self) -> bool {
        gpu::empty_cache().is_ok()
    }
}

/// What the memory policy did after one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AfterBatch {
    pub(crate) released: bool,
    /// Bytes allocated over the baseline beyond the tolerance (a leak warning).
    pub(crate) drift: Option<i64>,
}

/// Memory bookkeeping of one device after every batch: release policy, gauges, drift watch.
pub(crate) struct Memory<A> {
    cfg: GpuConfig,
    alloc: Option<A>,
    label: String,
    baseline: Option<i64>,
}

impl<A: Allocator> Memory<A> {
    /// `alloc` is `None` on the CPU: every step is then a no-op.
    pub(crate) fn new(cfg: GpuConfig, alloc: Option<A>, label: String) -> Self {
        Memory {
            cfg,
            alloc,
            label,
            baseline: None,
        }
    }

    /// After an out-of-memory error: count it and free the cache before the smaller retry.
    pub(crate) fn on_oom(&self) {
        counter!(m::OOM, "gpu" => self.label.clone()).increment(1);
        if let Some(a) = &self.alloc {
            a.release();
        }
    }

    pub(crate) fn before_batch(&self) {
        if let Some(a) = &self.alloc {
            a.reset_peak();
        }
    }

    /// After warm-up: release everything, then remember what stays allocated (the weights).
    pub(crate) fn set_baseline(&mut self) {
        let Some(a) = &self.alloc else { return };
        a.release();
        if let Some(s) = a.stats() {
            self.baseline = Some(s.allocated);
            metrics::gauge!(m::TORCH_BASELINE, "gpu" => self.label.clone()).set(s.allocated as f64);
            tracing::info!(
                allocated = s.allocated,
                reserved = s.reserved,
                "allocator baseline after warm-up"
            );
        }
    }

    pub(crate) fn after_batch(&mut self, batch: u64, n: usize) -> AfterBatch {
        let Some(a) = &self.alloc else {
            return AfterBatch::default();
        };
        let mut did = AfterBatch::default();
        if let Some(s) = a.stats() {
            histogram!(m::JOB_PEAK_ALLOCATED, "gpu" => self.label.clone())
                .record(s.peak_allocated as f64);
            if should_release(
                self.cfg.release,
                s.reserved,
                self.cfg.release_threshold_bytes,
            ) && a.release()
            {
                did.released = true;
                counter!(m::CACHE_RELEASES, "gpu" => self.label.clone()).increment(1);
            }
        }
        let Some(s) = a.stats() else { return did };
        tracing::debug!(
            batch,
            frames = n,
            allocated = s.allocated,
            reserved = s.reserved,
            peak_allocated = s.peak_allocated,
            "batch memory"
        );
        if let Some(base) = self.baseline {
            let over = s.allocated - base;
            if over > self.cfg.drift_tolerance_bytes as i64 {
                did.drift = Some(over);
                counter!(m::DRIFT, "gpu" => self.label.clone()).increment(1);
                tracing::warn!(
                    batch,
                    frames = n,
                    allocated = s.allocated,
                    baseline = base,
                    over,
                    "allocated memory did not return to the baseline after a batch"
                );
            }
        }
        did
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::config::Config;
    use crate::error::ModelError;
    use crate::worker::infer::ladder;

    #[test]
    fn release_policy_decisions() {
        assert!(should_release(ReleasePolicy::PerJob, 0, 100));
        assert!(!should_release(ReleasePolicy::Never, i64::MAX, 100));
        assert!(!should_release(ReleasePolicy::Threshold, 100, 100));
        assert!(should_release(ReleasePolicy::Threshold, 101, 100));
    }

    /// An allocator whose figures the test sets; `release` drops the cache to what is allocated.
    #[derive(Default)]
    struct FakeAlloc {
        allocated: Cell<i64>,
        reserved: Cell<i64>,
        releases: Cell<u32>,
        log: RefCell<Vec<&'static str>>,
    }

    impl Allocator for &FakeAlloc {
        fn reset_peak(&self) {
            self.log.borrow_mut().push("reset_peak");
        }
        fn stats(&self) -> Option<AllocatorStats> {
            Some(AllocatorStats {
                allocated: self.allocated.get(),
                reserved: self.reserved.get(),
                peak_allocated: self.allocated.get(),
            })
        }
        fn release(&self) -> bool {
            self.releases.set(self.releases.get() + 1);
            self.reserved.set(self.allocated.get());
            true
        }
    }

    fn gpu_cfg(release: ReleasePolicy) -> GpuConfig {
        let mut c = Config::defaults().gpu;
        c.release = release;
        c.release_threshold_bytes = 1000;
        c.drift_tolerance_bytes = 100;
        c
    }

    #[test]
    fn per_job_releases_after_every_batch_threshold_only_above_it_never_not_at_all() {
        for (policy, reserved, expect) in [
            (ReleasePolicy::PerJob, 500, true),
            (ReleasePolicy::Threshold, 500, false),
            (ReleasePolicy::Threshold, 5000, true),
            (ReleasePolicy::Never, 5000, false),
        ] {
            let a = FakeAlloc::default();
            a.allocated.set(200);
            let mut mem = Memory::new(gpu_cfg(policy), Some(&a), "0".into());
            mem.set_baseline();
            a.reserved.set(reserved);
            let did = mem.after_batch(1, 4);
            assert_eq!(did.released, expect, "{policy:?} at {reserved}");
            assert_eq!(a.reserved.get() == 200, expect || reserved == 200);
        }
    }

    #[test]
    fn memory_left_allocated_after_a_batch_is_reported_as_drift() {
        let a = FakeAlloc::default();
        a.allocated.set(1000);
        let mut mem = Memory::new(gpu_cfg(ReleasePolicy::PerJob), Some(&a), "0".into());
        mem.set_baseline();
        assert_eq!(mem.after_batch(1, 1).drift, None);
        a.allocated.set(1050);
        assert_eq!(mem.after_batch(2, 1).drift, None, "within tolerance");
        a.allocated.set(1500);
        assert_eq!(mem.after_batch(3, 1).drift, Some(500));
    }

    #[test]
    fn an_oom_frees_the_cache_before_the_retry() {
        let a = FakeAlloc::default();
        let mem = Memory::new(gpu_cfg(ReleasePolicy::Never), Some(&a), "0".into());
        // A model that fits one item: the pair runs out of memory once, then runs as two.
        let mut run = |_: &[u8], n: usize| {
            if n > 1 {
                Err(ModelError::OutOfMemory("fits 1".into()))
            } else {
                Ok(vec![()])
            }
        };
        ladder(&mut run, &[0, 0], 2, 1, &mut || mem.on_oom()).unwrap();
        assert_eq!(a.releases.get(), 1);
    }
}
