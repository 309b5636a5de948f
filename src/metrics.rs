//! Every metric name, unit and description (DESIGN §5), the closed label sets ([`Outcome`],
//! [`stage`]) and the Prometheus recorder. The GPU gauges are sampled in [`crate::gpu`].

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
pub const READY_INPUT: &str = "hmr2_worker_ready_input";
pub const REDIS_ERRORS: &str = "hmr2_redis_errors_total";
pub const UNREAD_SHARDS: &str = "hmr2_queue_unread_shards";
pub const PEOPLE_DROPPED: &str = "hmr2_people_dropped_total";
pub const FRAMES_TRUNCATED: &str = "hmr2_frames_truncated_total";
pub const VIDEOS: &str = "hmr2_videos_total";
pub const VIDEO_DURATION: &str = "hmr2_video_duration_seconds";
pub const TRACKS_PER_VIDEO: &str = "hmr2_tracks_per_video";
pub const VIDEOS_OPEN: &str = "hmr2_videos_open";
pub const VIDEOS_WAITING: &str = "hmr2_videos_waiting";

/// `status` label values of [`VIDEOS`].
pub const VIDEO_STATUSES: [&str; 3] = ["ok", "expired", "dead_lettered"];

/// Counts a Redis error of operation `op` (`read`, `claim`, `renew`, `publish`, ...) in
/// [`REDIS_ERRORS`], labelled with the server's code.
pub fn redis_error(op: &'static str, e: &crate::error::QueueError) {
    metrics::counter!(REDIS_ERRORS, "op" => op, "code" => e.server_code()).increment(1);
}

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

/// How a job ended on this worker: the `outcome` label of [`JOBS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Result published and the job acknowledged.
    Ok,
    /// Bad input: error result, dead letter, acknowledged.
    InvalidInput,
    /// Inference failed; left pending for a retry.
    Failed,
    /// Delivered too often (`queue.max_deliveries`): error result, dead letter.
    DeadLettered,
    /// Taken over from a consumer presumed dead (counted when claimed, before its end).
    Reclaimed,
}

impl Outcome {
    /// Every outcome, so each counter exists from the start (rates and alerts see a zero).
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::InvalidInput,
        Outcome::Failed,
        Outcome::DeadLettered,
        Outcome::Reclaimed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Failed => "failed",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Reclaimed => "reclaimed",
        }
    }

    /// Counts one job with this outcome.
    pub fn count(self) {
        metrics::counter!(JOBS, "outcome" => self.as_str()).increment(1);
    }
}

/// `stage` label values of [`STAGE_DURATION`].
pub mod stage {
    pub const DECODE: &str = "decode";
    pub const PREPROCESS: &str = "preprocess";
    pub const INFERENCE: &str = "inference";
    pub const POSTPROCESS: &str = "postprocess";
    /// Tracking and smoothing one video (DESIGN §13), its output built.
    pub const TRACK: &str = "track";
    pub const PUBLISH: &str = "publish";
    /// Person detection: letterbox + forward + post-processing, per batch.
    pub const DETECT: &str = "detect";
    /// Letterboxing alone, per frame (a part of `detect` spent on the decode threads).
    pub const LETTERBOX: &str = "letterbox";
}

/// `reason` label values of [`PEOPLE_DROPPED`].
pub mod dropped {
    /// A number of the person's outputs was NaN or ±∞.
    pub const NON_FINITE: &str = "non_finite";
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
const TRACKS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0];

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
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(VIDEO_DURATION.into()), WAIT_SECONDS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TRACKS_PER_VIDEO.into()), TRACKS)
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
    describe_counter!(
        FRAMES_TRUNCATED,
        "Frames in which the person detector found more people than limits.max_boxes (the rest are left out; the result's `detected` says how many were found)."
    );
    describe_counter!(
        VIDEOS,
        "Tracked videos finished, by status: ok, expired (frames stopped coming; written with the frames it got), dead_lettered (could not be tracked)."
    );
    describe_histogram!(
        VIDEO_DURATION,
        Unit::Seconds,
        "Time from a video's first recorded frame to its output written."
    );
    describe_histogram!(TRACKS_PER_VIDEO, "Tracks (people) per written video.");
    describe_gauge!(
        VIDEOS_OPEN,
        "Videos with frames recorded that are not complete yet (all shards; the same queue-wide value from every worker)."
    );
    describe_gauge!(
        VIDEOS_WAITING,
        "Complete or expired videos queued for tracking and not written yet (all shards)."
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
        READY_INPUT,
        "1 when this input of readiness is up, 0 when down: warm, redis_read, redis_publish, batches."
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis errors met, by operation (read, claim, renew, publish, dead_letter, ...) and the server's error code (OOM, NOPERM, NOGROUP, ERR, ...; io, timeout, pool, parse for client-side failures)."
    );
    describe_gauge!(
        UNREAD_SHARDS,
        "Job streams under the prefix for shard numbers at or past queue.shards that hold entries: producers shard wider than the workers read."
    );
    describe_counter!(
        PEOPLE_DROPPED,
        "People left out of ok results, by reason: non_finite (an output held NaN or infinity; the result carries a non_finite_output warning)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the version, libtorch, device and model."
    );
}
