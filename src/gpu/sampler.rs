//! NVML and allocator gauges of one CUDA device.

use metrics::gauge;
use nvml_wrapper::Nvml;

use super::AllocatorStats;
use crate::metrics::{
    GPU_MEMORY_TOTAL, GPU_MEMORY_USED, GPU_UTILIZATION, TORCH_ALLOCATED, TORCH_RESERVED,
};

/// The GPU gauges of one CUDA device: NVML for the whole device, the caching allocator for
/// this process. One per device, shared: the inference thread reads the allocator after each
/// batch ([`GpuSampler::sample_allocator`], no NVML on that thread), the gauge task samples
/// both every `gauge_interval_ms` ([`GpuSampler::sample`]).
pub struct GpuSampler {
    cuda_index: usize,
    label: String,
    nvml: Option<(Nvml, String)>,
}

impl GpuSampler {
    /// Opens NVML (loaded at run time) and finds the NVML device of CUDA ordinal `cuda_index`,
    /// honouring `CUDA_VISIBLE_DEVICES`. Without NVML the NVML gauges are absent and this says
    /// so once in the log.
    pub fn new(cuda_index: usize) -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) => match nvml_device_uuid(&nvml, cuda_index) {
                Some(uuid) => Some((nvml, uuid)),
                None => {
                    tracing::warn!(
                        cuda_index,
                        "NVML has no device for this CUDA ordinal; NVML gauges disabled"
                    );
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "NVML is not available; whole-GPU memory gauges disabled");
                None
            }
        };
        GpuSampler {
            cuda_index,
            label: cuda_index.to_string(),
            nvml,
        }
    }

    /// The CUDA ordinal sampled.
    pub fn cuda_index(&self) -> usize {
        self.cuda_index
    }

    /// Samples NVML and the allocator into the gauges.
    pub fn sample(&self) {
        if let Some((nvml, uuid)) = &self.nvml {
            if let Ok(dev) = nvml.device_by_uuid(uuid.as_str()) {
                let labels = [("gpu", self.label.clone()), ("uuid", uuid.clone())];
                if let Ok(m) = dev.memory_info() {
                    gauge!(GPU_MEMORY_USED, &labels).set(m.used as f64);
                    gauge!(GPU_MEMORY_TOTAL, &labels).set(m.total as f64);
                }
                if let Ok(u) = dev.utilization_rates() {
                    gauge!(GPU_UTILIZATION, &labels).set(u.gpu as f64 / 100.0);
                }
            }
        }
        self.sample_allocator();
    }

    /// Samples the allocator alone into its gauges; returns its figures.
    pub fn sample_allocator(&self) -> Option<AllocatorStats> {
        let stats = super::stats(self.cuda_index).ok()?;
        let labels = [("gpu", self.label.clone())];
        gauge!(TORCH_ALLOCATED, &labels).set(stats.allocated as f64);
        gauge!(TORCH_RESERVED, &labels).set(stats.reserved as f64);
        Some(stats)
    }
}

/// One line about the NVML device behind CUDA ordinal `cuda_index`: name, UUID, memory used and
/// total, utilisation (for `check`).
pub fn nvml_summary(cuda_index: usize) -> Result<String, String> {
    let nvml = Nvml::init().map_err(|e| format!("NVML not available: {e}"))?;
    let uuid = nvml_device_uuid(&nvml, cuda_index).ok_or("no NVML device for this CUDA ordinal")?;
    let dev = nvml
        .device_by_uuid(uuid.as_str())
        .map_err(|e| e.to_string())?;
    let name = dev.name().unwrap_or_default();
    let mem = dev.memory_info().map_err(|e| e.to_string())?;
    let util = dev.utilization_rates().map(|u| u.gpu).unwrap_or(0);
    Ok(format!(
        "{name} {uuid}: {:.2} GiB used of {:.2} GiB, {util}% busy",
        mem.used as f64 / (1u64 << 30) as f64,
        mem.total as f64 / (1u64 << 30) as f64
    ))
}

/// Maps a CUDA ordinal to an NVML device UUID. `CUDA_VISIBLE_DEVICES` may list indices or
/// UUIDs; without it, ordinals follow NVML's (PCI bus) order, as with
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` (the usual setting on GPU nodes).
fn nvml_device_uuid(nvml: &Nvml, cuda_index: usize) -> Option<String> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let entry = visible.as_deref().and_then(|v| {
        v.split(',')
            .map(str::trim)
            .nth(cuda_index)
            .map(str::to_string)
    });
    let device = match entry {
        Some(e) if e.starts_with("GPU-") || e.starts_with("MIG-") => {
            nvml.device_by_uuid(e.as_str()).ok()?
        }
        Some(e) => nvml.device_by_index(e.parse().ok()?).ok()?,
        None => nvml.device_by_index(cuda_index as u32).ok()?,
    };
    device.uuid().ok()
}
