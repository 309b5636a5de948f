//! Every metric name, unit and description (DESIGN §5), the Prometheus recorder, and the GPU
//! gauges (NVML for the whole device, the caching allocator for this process).

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nvml_wrapper::Nvml;

use crate::gpu;

pub const GPU_MEMORY_USED: &str = "hmr2_gpu_memory_used_bytes";
pub const GPU_MEMORY_TOTAL: &str = "hmr2_gpu_memory_total_bytes";
pub const GPU_UTILIZATION: &str = "hmr2_gpu_utilization_ratio";
pub const TORCH_ALLOCATED: &str = "hmr2_torch_allocated_bytes";
pub const TORCH_RESERVED: &str = "hmr2_torch_reserved_bytes";
pub const TORCH_BASELINE: &str = "hmr2_torch_baseline_allocated_bytes";
pub const JOB_PEAK_ALLOCATED: &str = "hmr2_job_peak_allocated_bytes";
pub const CACHE_RELEASES: &str = "hmr2_gpu_cache_releases_total";
pub const OOM: &str = "hmr2_gpu_oom_total";
pub const DRIFT: &str = "hmr2_gpu_memory_drift_total";
pub const JOBS: &str = "hmr2_jobs_total";
pub const STAGE_DURATION: &str = "hmr2_stage_duration_seconds";
pub const QUEUE_WAIT: &str = "hmr2_job_queue_wait_seconds";
pub const JOB_DURATION: &str = "hmr2_job_duration_seconds";
pub const BATCH_SIZE: &str = "hmr2_batch_size";
pub const QUEUE_LENGTH: &str = "hmr2_queue_length";
pub const QUEUE_PENDING: &str = "hmr2_queue_pending";
pub const QUEUE_LAG: &str = "hmr2_queue_lag";
pub const WORKER_READY: &str = "hmr2_worker_ready";
pub const BUILD_INFO: &str = "hmr2_build_info";
pub const PEOPLE_PER_FRAME: &str = "hmr2_people_per_frame";

/// Metrics only a GPU machine exports (absent on a CPU machine).
pub const GPU_ONLY: &[&str] = &[
    GPU_MEMORY_USED,
    GPU_MEMORY_TOTAL,
    GPU_UTILIZATION,
    TORCH_ALLOCATED,
    TORCH_RESERVED,
    TORCH_BASELINE,
    JOB_PEAK_ALLOCATED,
];

/// `outcome` label values of [`JOBS`].
pub mod outcome {
    pub const OK: &str = "ok";
    pub const INVALID_INPUT: &str = "invalid_input";
    pub const FAILED: &str = "failed";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const RECLAIMED: &str = "reclaimed";
}

/// `stage` label values of [`STAGE_DURATION`].
pub mod stage {
    pub const DECODE: &str = "decode";
    pub const PREPROCESS: &str = "preprocess";
    pub const INFERENCE: &str = "inference";
    pub const POSTPROCESS: &str = "postprocess";
    pub const PUBLISH: &str = "publish";
    /// Person detection: letterbox + forward + post-processing, per batch.
    pub const DETECT: &str = "detect";
    /// Letterboxing alone, per frame (a part of `detect` spent on the decode threads).
    pub const LETTERBOX: &str = "letterbox";
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const WAIT_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    3600.0,
];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const PEOPLE: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0];

/// Installs the process-wide Prometheus recorder once and describes every metric; later calls
/// return the same handle (several workers in one test process share it).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let bytes: Vec<f64> = (26..=37).map(|p| (1u64 << p) as f64).collect();
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(STAGE_DURATION.into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), SECONDS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), WAIT_SECONDS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(PEOPLE_PER_FRAME.into()), PEOPLE)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(JOB_PEAK_ALLOCATED.into()), &bytes)
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(
        GPU_MEMORY_USED,
        Unit::Bytes,
        "Device memory in use on the whole GPU (NVML)."
    );
    describe_gauge!(
        GPU_MEMORY_TOTAL,
        Unit::Bytes,
        "Total device memory of the GPU (NVML)."
    );
    describe_gauge!(
        GPU_UTILIZATION,
        "GPU busy ratio over the last sample period, 0-1 (NVML)."
    );
    describe_gauge!(
        TORCH_ALLOCATED,
        Unit::Bytes,
        "Bytes held by live tensors in this process (caching allocator)."
    );
    describe_gauge!(
        TORCH_RESERVED,
        Unit::Bytes,
        "Bytes the caching allocator holds from the driver (allocated + cached)."
    );
    describe_gauge!(
        TORCH_BASELINE,
        Unit::Bytes,
        "Allocated bytes measured after warm-up; every batch must return to it."
    );
    describe_histogram!(
        JOB_PEAK_ALLOCATED,
        Unit::Bytes,
        "Peak allocated bytes during one batch."
    );
    describe_counter!(
        CACHE_RELEASES,
        "Times the caching allocator's unused blocks were released to the driver."
    );
    describe_counter!(
        OOM,
        "Device out-of-memory errors (each one splits the batch and retries)."
    );
    describe_counter!(
        DRIFT,
        "Batches after which allocated bytes stayed above the post-warm-up baseline."
    );
    describe_counter!(JOBS, "Jobs finished, by outcome: ok, invalid_input, failed (left for retry), dead_lettered, reclaimed.");
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Time spent per pipeline stage, per job or batch."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from enqueue (stream id) to fetch."
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "Time from fetch to acknowledgement."
    );
    describe_histogram!(BATCH_SIZE, "Frames (person crops) per forward pass.");
    describe_histogram!(
        PEOPLE_PER_FRAME,
        "People per answered frame, by where their boxes came from: job, detector, frame."
    );
    describe_gauge!(QUEUE_LENGTH, "Entries in the stream (XLEN).");
    describe_gauge!(
        QUEUE_PENDING,
        "Entries delivered but not acknowledged (XPENDING)."
    );
    describe_gauge!(
        QUEUE_LAG,
        "Entries not yet delivered to the group (XINFO GROUPS lag)."
    );
    describe_gauge!(
        WORKER_READY,
        "1 once warm-up is done, Redis answers and the worker is not failing."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version, libtorch, device and model."
    );
}

/// The GPU gauges of one CUDA device: NVML for the device, the allocator for this process.
pub struct GpuGauges {
    cuda_index: usize,
    label: String,
    nvml: Option<(Nvml, String)>,
}

impl GpuGauges {
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
        GpuGauges {
            cuda_index,
            label: cuda_index.to_string(),
            nvml,
        }
    }

    /// The `gpu` label value.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Samples NVML and the allocator into the gauges; returns the allocator figures.
    pub fn sample(&self) -> Option<gpu::AllocatorStats> {
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
        let stats = gpu::stats(self.cuda_index).ok()?;
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
