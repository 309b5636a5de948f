//! One `Config`, layered: embedded `config/default.toml` → `--config FILE` → `HMR2_*`
//! environment (nested with `__`) → command-line flags; validated once at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The embedded defaults, which double as the reference documentation of every setting.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Everything the worker can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Redis is.
    pub redis: RedisConfig,
    /// The queue protocol.
    pub queue: QueueConfig,
    /// Which model, on which device.
    pub model: ModelConfig,
    /// The person detector for jobs without boxes.
    pub detector: DetectorConfig,
    /// GPU memory policy.
    pub gpu: GpuConfig,
    /// Input limits.
    pub limits: LimitsConfig,
    /// CPU-side pipeline sizing.
    pub pipeline: PipelineConfig,
    /// The metrics and health listener.
    pub http: HttpConfig,
    /// Log output.
    pub log: LogConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Tracked videos: collecting their frames (DESIGN §13).
    pub video: VideoConfig,
    /// The tracker: association, gap bridging, smoothing (DESIGN §13).
    pub track: TrackConfig,
}

/// Tracked videos (DESIGN §13).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// A video whose frames stop coming expires this long after its last recorded frame, with
    /// a `done` entry of status `expired` and the frames it got, seconds.
    pub ttl_s: u64,
    /// How often each worker looks for expired videos, milliseconds.
    pub expire_interval_ms: u64,
}

/// Smoothing strength (`track.smoothing`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmoothingConfig {
    /// Raw per-frame values; still tracked, gaps still filled.
    None,
    /// The default.
    Default,
    /// Stronger: slow motion, noisy input.
    Strong,
}

impl From<SmoothingConfig> for hmr2_track::Smoothing {
    fn from(s: SmoothingConfig) -> Self {
        match s {
            SmoothingConfig::None => hmr2_track::Smoothing::None,
            SmoothingConfig::Default => hmr2_track::Smoothing::Default,
            SmoothingConfig::Strong => hmr2_track::Smoothing::Strong,
        }
    }
}

/// The tracker (DESIGN §13).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// Longest gap (a person hidden or missed) bridged within one track, seconds.
    pub max_gap_s: f64,
    /// `none`, `default` or `strong`.
    pub smoothing: SmoothingConfig,
    /// Run the tracker inside this worker process (`hmr2-worker run`). False when CPU-only
    /// pods run `hmr2-worker track` instead.
    pub in_worker: bool,
    /// Videos tracked at once by one process (each on one blocking thread).
    pub concurrency: usize,
}

/// Where Redis is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, possibly with credentials (never logged; see [`redact_url`]).
    /// On Redis Cluster, one or more seed nodes, separated by commas.
    pub url: String,
    /// Redis Cluster: a cluster-aware client (follows `MOVED`/`ASK`, fails over with the
    /// cluster) and sharded keys (DESIGN §11). Implied by several URLs in `url`.
    pub cluster: bool,
    /// Connections in the pool shared by the publishers and the gauges (the fetcher has its own).
    pub pool_size: usize,
    /// Time allowed to open one connection, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for one reply, milliseconds; 0 = sized for the largest read (`max_batch`
    /// entries of `max_job_bytes` at 25 MB/s, plus 5 s; see [`crate::queue::response_timeout`]).
    pub response_timeout_ms: u64,
    /// A pooled connection idle this long is checked with a `PING` before it is handed out,
    /// milliseconds; one in steady use is handed out as it is (a connection-level failure takes
    /// it out of the pool anyway). 0 = check at every checkout (one round trip more per result).
    pub pool_idle_check_ms: u64,
}

/// The queue protocol's knobs (DESIGN §3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Key prefix: `{prefix}:jobs`, `{prefix}:results`, `{prefix}:dead`, group `{prefix}-workers`.
    pub prefix: String,
    /// Shards of the queue (DESIGN §11): with more than one, or on Redis Cluster, shard k's keys
    /// are `{<prefix>:<k>}:jobs` etc. Every worker serves every shard.
    pub shards: usize,
    /// Largest number of frames (person crops) per forward pass, and jobs per XREADGROUP.
    pub max_batch: usize,
    /// How long one XREADGROUP waits for new jobs, milliseconds (also bounds shutdown latency).
    pub block_ms: u64,
    /// An entry pending this long on another consumer is presumed orphaned and reclaimed,
    /// milliseconds.
    pub claim_idle_ms: u64,
    /// How often this worker looks for orphaned entries (XPENDING IDLE, then XCLAIM), milliseconds.
    pub claim_interval_ms: u64,
    /// An entry delivered more often than this is dead-lettered with an error result.
    pub max_deliveries: u64,
    /// Approximate cap on the default results stream (`XADD MAXLEN ~`).
    pub results_maxlen: u64,
    /// Approximate cap on the dead-letter stream.
    pub dead_maxlen: u64,
    /// Consumer name in the group; empty = `<hostname>/<pid>` (see [`Config::consumer_name`]).
    pub consumer: String,
    /// How often the queue gauges (length, pending, lag) are sampled, milliseconds.
    pub gauge_interval_ms: u64,
    /// Expiry of per-job reply streams (a `reply_to` other than `{prefix}:results`), seconds,
    /// renewed by every result written to them; 0 = never expire.
    pub reply_ttl_s: u64,
    /// Whether dead letters keep the frame (`image` and `image_base64`); by default they keep
    /// the job's other fields and the error only.
    pub dead_keep_image: bool,
    /// Consumers that hold no entry and have been idle this long are removed from the group
    /// (workers long gone), seconds; 0 = never.
    pub prune_consumers_after_s: u64,
}

/// Which model, on which device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// TorchScript file made by `python -m models.export`.
    pub path: PathBuf,
    /// `auto` (cuda:0 when available, else cpu), `cpu`, `cuda` (= cuda:0) or `cuda:N`.
    pub device: String,
}

/// The person detector (DESIGN §12): runs on jobs without boxes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// TorchScript file of contract `person-detector/1`; empty = no detector (whole-frame box).
    pub path: PathBuf,
    /// Detections scoring below this are dropped (0-1). Unset: the detector file's
    /// recommendation (its `meta()`), else 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    /// Detections narrower or shorter than this, in frame pixels, are dropped.
    pub min_box_px: f32,
    /// What a frame in which the detector finds nobody gets.
    pub on_empty: OnEmpty,
}

/// The answer for a frame in which the detector finds nobody.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnEmpty {
    /// No people: an `ok` result with `"people": []`.
    None,
    /// One person with the whole-frame box (the replaced service's fallback).
    WholeFrame,
}

/// GPU memory policy (DESIGN §4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// When the caching allocator's unused blocks go back to the driver.
    pub release: ReleasePolicy,
    /// Reserved-bytes threshold for [`ReleasePolicy::Threshold`], bytes.
    pub release_threshold_bytes: u64,
    /// Allowed growth of allocated bytes over the post-warm-up baseline after a batch before
    /// it is reported as drift, bytes.
    pub drift_tolerance_bytes: u64,
    /// Consecutive failed batches after which the worker reports not-ready.
    pub max_consecutive_failures: u32,
    /// Seconds a forward pass (or a publish) may run before the worker reports not live.
    pub stall_timeout_s: u64,
}

/// When the caching allocator's unused blocks go back to the driver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReleasePolicy {
    PerJob,
    Threshold,
    Never,
}

/// Input limits: anything beyond them is rejected before it costs memory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted encoded image, bytes (after base64 decoding).
    pub max_image_bytes: usize,
    /// Largest accepted image, pixels (width x height), checked before decoding.
    pub max_pixels: u64,
    /// Most person boxes per frame.
    pub max_boxes: usize,
    /// Largest accepted job JSON, bytes: at least the base64 size of `max_image_bytes`
    /// ([`LimitsConfig::base64_image_bytes`], checked at start-up) plus a margin for the rest of
    /// the JSON (the default: 1 MiB).
    pub max_job_bytes: usize,
    /// Decoded pixels the worker may hold at once, bytes (3 per pixel): frames being decoded
    /// and frames waiting for the detector; decoding and fetching wait while it is spent.
    /// 0 = eight of the largest frames (8 × 3 × `max_pixels`); else at least one
    /// (3 × `max_pixels`, checked at start-up).
    pub max_decoded_bytes_in_flight: u64,
    /// Most frames a tracked video may have (`video.frames`): a video is held, and tracked,
    /// whole, so this bounds what one video can cost Redis and the tracker.
    pub max_video_frames: u64,
}

impl LimitsConfig {
    /// The base64 text of the largest accepted image, bytes: 4 × ⌈`max_image_bytes` / 3⌉ (the
    /// least `max_job_bytes` can be).
    pub fn base64_image_bytes(&self) -> usize {
        self.max_image_bytes.div_ceil(3).saturating_mul(4)
    }

    /// Bytes of the largest decoded frame: 3 × `max_pixels` (RGB).
    pub fn largest_frame_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(3)
    }

    /// The budget of decoded pixels in flight, bytes: `max_decoded_bytes_in_flight`, or
    /// eight of the largest frames when it is 0.
    pub fn decoded_bytes_in_flight(&self) -> u64 {
        match self.max_decoded_bytes_in_flight {
            0 => self.largest_frame_bytes().saturating_mul(8),
            n => n,
        }
    }

    /// The limits the wire contract's job parser enforces.
    pub fn job(&self) -> hmr2_client::Limits {
        hmr2_client::Limits {
            max_job_bytes: self.max_job_bytes,
            max_boxes: self.max_boxes,
        }
    }
}

/// CPU-side pipeline sizing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Threads that decode and crop images; 0 = one more than the CPU cores.
    pub decode_threads: usize,
    /// Batches queued ahead of the device (the backpressure bound).
    pub queue_depth: usize,
}

/// The metrics / health listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` listener.
    pub listen: String,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (`RUST_LOG`, when set, wins).
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: how long in-flight jobs may take to finish, seconds; the rest stays
    /// pending for other workers.
    pub grace_seconds: u64,
}

/// A device as configured: resolved to a concrete one at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "unknown device {other:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
                )),
            },
        }
    }
}

/// Setting overrides from the command line (the last layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides(Vec<(&'static str, figment::value::Value)>);

impl Overrides {
    /// Sets `key` (dotted, e.g. `"redis.url"`) when `value` is present.
    pub fn set<T: Serialize>(&mut self, key: &'static str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            if let Ok(v) = figment::value::Value::serialize(v) {
                self.0.push((key, v));
            }
        }
        self
    }
}

impl Config {
    /// The embedded defaults alone (no file, no environment).
    pub fn defaults() -> Self {
        Self::load(None, &Overrides::default(), false).expect("embedded defaults are valid")
    }

    /// Loads every layer; `env` says whether `HMR2_*` variables are read.
    pub fn load(file: Option<&Path>, flags: &Overrides, env: bool) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        if env {
            // Only nested keys (HMR2_SECTION__KEY); other HMR2_* variables are not settings.
            fig = fig.merge(
                Env::prefixed("HMR2_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            );
        }
        for (key, value) in &flags.0 {
            fig = fig.merge(Serialized::default(key, value.clone()));
        }
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value once, with a message naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        }
        let schemes: std::collections::BTreeSet<&str> = self
            .redis
            .urls()
            .filter_map(|u| u.split_once("://").map(|(scheme, _)| scheme))
            .collect();
        if schemes.contains("redis") && schemes.contains("rediss") {
            return bad(
                "redis.url",
                format!(
                    "the seed list mixes redis:// and rediss:// ({}): every node of a cluster \
                     speaks TLS or none does; use one scheme for all",
                    redact_url(&self.redis.url)
                ),
            );
        }
        for one in self.redis.urls() {
            match url::Url::parse(one) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {}
                Ok(u) => {
                    return bad(
                        "redis.url",
                        format!(
                            "{} is not a redis:// or rediss:// URL with a host",
                            redact_url(u.as_str())
                        ),
                    )
                }
                Err(e) => return bad("redis.url", format!("cannot parse URL: {e}")),
            }
        }
        if self.redis.pool_size == 0 {
            return bad("redis.pool_size", "must be at least 1");
        }
        let p = &self.queue.prefix;
        if p.is_empty() || p.len() > 64 || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("queue.prefix", "must be 1-64 characters without whitespace");
        }
        if self.queue.shards == 0 || self.queue.shards > 1024 {
            return bad("queue.shards", "must be between 1 and 1024");
        }
        if self.sharded() && (p.contains('{') || p.contains('}')) {
            return bad(
                "queue.prefix",
                "must not contain braces with queue.shards > 1 or on Redis Cluster: each shard \
                 puts it in its own hash tag ({<prefix>:<k>})",
            );
        }
        if self.queue.max_batch == 0 || self.queue.max_batch > 1024 {
            return bad("queue.max_batch", "must be between 1 and 1024");
        }
        let inflight = self.queue.max_batch * (self.pipeline.queue_depth + 2);
        if self.queue.shards > inflight {
            return bad(
                "queue.shards",
                format!(
                    "{} shards need at least as many jobs in flight (max_batch × (queue_depth + 2) \
                     = {inflight}): every shard's reader holds one while it waits",
                    self.queue.shards
                ),
            );
        }
        if self.queue.block_ms == 0 {
            return bad(
                "queue.block_ms",
                "must be at least 1 (0 would block forever and stall shutdown)",
            );
        }
        if self.queue.claim_idle_ms < self.queue.block_ms {
            return bad(
                "queue.claim_idle_ms",
                "must be at least queue.block_ms, or live workers' entries would be stolen",
            );
        }
        if self.queue.claim_interval_ms == 0 || self.queue.gauge_interval_ms == 0 {
            return bad("queue.claim_interval_ms", "intervals must be at least 1 ms");
        }
        if self.queue.max_deliveries == 0 {
            return bad("queue.max_deliveries", "must be at least 1");
        }
        if self.queue.results_maxlen == 0 || self.queue.dead_maxlen == 0 {
            return bad("queue.results_maxlen", "stream caps must be at least 1");
        }
        if let Err(e) = DeviceSpec::parse(&self.model.device) {
            return bad("model.device", e);
        }
        if self.model.path.as_os_str().is_empty() {
            return bad("model.path", "must name a TorchScript file");
        }
        let d = &self.detector;
        if d.score_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return bad("detector.score_threshold", "must be between 0 and 1");
        }
        if !(d.min_box_px >= 0.0 && d.min_box_px.is_finite()) {
            return bad("detector.min_box_px", "must be a number of pixels >= 0");
        }
        if self.gpu.release == ReleasePolicy::Threshold && self.gpu.release_threshold_bytes == 0 {
            return bad(
                "gpu.release_threshold_bytes",
                "must be above 0 when gpu.release = \"threshold\"",
            );
        }
        if self.gpu.stall_timeout_s == 0 {
            return bad("gpu.stall_timeout_s", "must be above 0");
        }
        if self.limits.max_image_bytes == 0 || self.limits.max_pixels == 0 {
            return bad("limits.max_image_bytes", "image limits must be above 0");
        }
        if self.limits.max_job_bytes < self.limits.base64_image_bytes() {
            return bad(
                "limits.max_job_bytes",
                format!(
                    "{} is smaller than limits.max_image_bytes in base64 ({} bytes); use at \
                     least that plus a margin for the rest of the JSON (the default: 1 MiB)",
                    self.limits.max_job_bytes,
                    self.limits.base64_image_bytes()
                ),
            );
        }
        let decoded = self.limits.max_decoded_bytes_in_flight;
        if decoded != 0 && decoded < self.limits.largest_frame_bytes() {
            return bad(
                "limits.max_decoded_bytes_in_flight",
                format!(
                    "{decoded} cannot hold one frame of limits.max_pixels (3 × {} = {} bytes); \
                     use at least that, or 0 for eight such frames",
                    self.limits.max_pixels,
                    self.limits.largest_frame_bytes()
                ),
            );
        }
        if self.limits.max_video_frames == 0 {
            return bad("limits.max_video_frames", "must be at least 1");
        }
        if self.limits.max_boxes == 0 {
            return bad("limits.max_boxes", "must be at least 1");
        }
        if self.pipeline.queue_depth == 0 {
            return bad("pipeline.queue_depth", "must be at least 1");
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "http.listen",
                format!("{:?} is not an address like 0.0.0.0:9464", self.http.listen),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad("log.level", format!("not a valid filter: {e}"));
        }
        if self.video.ttl_s == 0 || self.video.expire_interval_ms == 0 {
            return bad(
                "video.ttl_s",
                "video.ttl_s and video.expire_interval_ms must be above 0",
            );
        }
        if !(self.track.max_gap_s >= 0.0 && self.track.max_gap_s <= 60.0) {
            return bad("track.max_gap_s", "must be between 0 and 60 seconds");
        }
        if self.track.concurrency == 0 {
            return bad("track.concurrency", "must be at least 1");
        }
        Ok(())
    }

    /// The configured device.
    pub fn device(&self) -> DeviceSpec {
        DeviceSpec::parse(&self.model.device).expect("validated")
    }

    /// Threads that decode images.
    pub fn decode_threads(&self) -> usize {
        match self.pipeline.decode_threads {
            // One more than the cores: hides the hand-offs between fetch, decode and batching.
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            n => n,
        }
    }

    /// Whether the queue is on Redis Cluster: `redis.cluster`, or several URLs in `redis.url`.
    pub fn cluster(&self) -> bool {
        self.redis.cluster || self.redis.urls().count() > 1
    }

    /// Whether the keys carry shard tags: on Redis Cluster, or with more than one shard.
    pub fn sharded(&self) -> bool {
        self.cluster() || self.queue.shards > 1
    }

    /// The queue's keys, shard by shard (DESIGN §11).
    pub fn layout(&self) -> hmr2_client::Layout {
        hmr2_client::Layout::new(&self.queue.prefix, self.queue.shards, self.cluster())
    }

    /// This worker's consumer name in the group.
    pub fn consumer_name(&self) -> String {
        if self.queue.consumer.is_empty() {
            worker_id()
        } else {
            self.queue.consumer.clone()
        }
    }

    /// The configuration as TOML, with the Redis password redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.redis.url = redact_url(&c.redis.url);
        toml::to_string_pretty(&c).unwrap_or_default()
    }
}

/// `<hostname>/<pid>`: names this worker in results, dead letters and the consumer group.
pub fn worker_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

impl RedisConfig {
    /// The URLs of `url`: one, or several seed nodes of a cluster separated by commas.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`; anything unparsable is hidden whole.
/// Several comma-separated URLs are redacted one by one.
pub fn redact_url(raw: &str) -> String {
    if raw.contains(',') {
        return raw
            .split(',')
            .map(|u| redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    /// Every setting of `config/default.toml` is a documented field of its section's struct.
    #[test]
    fn every_setting_is_a_documented_field() {
        let source = include_str!("config.rs");
        let table: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        for (section, keys) in &table {
            let keys = keys.as_table().expect("sections only");
            for key in keys.keys() {
                let field = format!("    pub {key}: ");
                let lines: Vec<&str> = source.lines().collect();
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&field))
                    .unwrap_or_else(|| panic!("[{section}] {key} has no field"));
                assert!(
                    lines[at - 1].trim_start().starts_with("///"),
                    "[{section}] {key} has no /// line"
                );
            }
        }
    }

    #[test]
    fn defaults_are_valid_and_match_design() {
        let c = Config::defaults();
        assert_eq!(c.queue.prefix, "hmr2");
        assert_eq!(c.gpu.release, ReleasePolicy::PerJob);
        assert_eq!(c.http.listen, "0.0.0.0:9464");
        assert_eq!(c.device(), DeviceSpec::Auto);
    }

    #[test]
    fn devices_parse() {
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert!(DeviceSpec::parse("tpu")
            .unwrap_err()
            .contains("unknown device"));
        assert!(DeviceSpec::parse("cuda:x").is_err());
    }

    fn invalid(jail_toml: &str) -> String {
        let mut msg = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", jail_toml)?;
            msg = Config::load(Some(Path::new("c.toml")), &Overrides::default(), false)
                .unwrap_err()
                .to_string();
            Ok(())
        });
        msg
    }

    #[test]
    fn the_detector_threshold_is_unset_unless_a_layer_sets_it() {
        assert_eq!(Config::defaults().detector.score_threshold, None);
        figment::Jail::expect_with(|jail| {
            jail.set_env("HMR2_DETECTOR__SCORE_THRESHOLD", "0.3");
            let c = Config::load(None, &Overrides::default(), true).unwrap();
            assert_eq!(c.detector.score_threshold, Some(0.3));
            Ok(())
        });
        assert!(invalid("[detector]\nscore_threshold = 1.5\n").contains("detector.score_threshold"));
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[queue]\nprefix = \"from-file\"\nmax_batch = 4\n[model]\ndevice = \"cpu\"\n",
            )?;
            jail.set_env("HMR2_QUEUE__MAX_BATCH", "6");
            jail.set_env("HMR2_REDIS__URL", "redis://env:6379");
            jail.set_env("HMR2_CACHE_DIR", "/not/a/setting");
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default(), true).unwrap();
            assert_eq!(c.queue.prefix, "from-file");
            assert_eq!(c.queue.max_batch, 6, "env beats file");
            assert_eq!(c.redis.url, "redis://env:6379");
            assert_eq!(c.model.device, "cpu");
            assert_eq!(
                c.queue.block_ms,
                Config::defaults().queue.block_ms,
                "defaults fill the rest"
            );
            let mut flags = Overrides::default();
            flags
                .set("queue.max_batch", Some(9))
                .set("redis.url", None::<String>);
            let c = Config::load(Some(Path::new("c.toml")), &flags, true).unwrap();
            assert_eq!(c.queue.max_batch, 9, "flags beat env");
            assert_eq!(
                c.redis.url, "redis://env:6379",
                "absent flags change nothing"
            );
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default(), false).unwrap();
            assert_eq!(c.queue.max_batch, 4, "env is ignored when not asked for");
            Ok(())
        });
    }

    #[test]
    fn several_urls_mean_a_cluster_with_sharded_keys() {
        let mut c = Config::defaults();
        assert!(!c.cluster());
        assert_eq!(c.layout().shard(0).jobs, "hmr2:jobs");
        c.redis.url = "redis://u:secret@a:1, redis://u:secret@b:2".into();
        c.validate().unwrap();
        assert!(c.cluster());
        assert_eq!(c.layout().shard(0).jobs, "{hmr2:0}:jobs");
        assert_eq!(
            redact_url(&c.redis.url),
            "redis://u:***@a:1,redis://u:***@b:2"
        );
        c.redis.url = "redis://a:1".into();
        c.queue.shards = 3;
        assert!(!c.cluster());
        assert_eq!(c.layout().shard(2).group, "{hmr2:2}-workers");
    }

    #[test]
    fn each_bad_value_names_its_setting() {
        let cases = [
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[redis]\nurl = \"not a url\"", "redis.url"),
            ("[queue]\nmax_batch = 0", "queue.max_batch"),
            ("[queue]\nblock_ms = 0", "queue.block_ms"),
            ("[queue]\nprefix = \"\"", "queue.prefix"),
            ("[queue]\nmax_deliveries = 0", "queue.max_deliveries"),
            ("[queue]\nclaim_idle_ms = 10", "queue.claim_idle_ms"),
            ("[queue]\nshards = 0", "queue.shards"),
            ("[queue]\nshards = 2\nprefix = \"{hmr2}\"", "queue.prefix"),
            (
                "[redis]\ncluster = true\n[queue]\nprefix = \"{hmr2}\"",
                "queue.prefix",
            ),
            ("[queue]\nshards = 200\nmax_batch = 4", "queue.shards"),
            ("[redis]\nurl = \"redis://a:1,http://b:2\"", "redis.url"),
            (
                "[limits]\nmax_pixels = 1000\nmax_decoded_bytes_in_flight = 2999",
                "limits.max_decoded_bytes_in_flight",
            ),
            ("[model]\ndevice = \"tpu:0\"", "unknown device"),
            ("[gpu]\nrelease = \"sometimes\"", "release"),
            (
                "[gpu]\nrelease = \"threshold\"\nrelease_threshold_bytes = 0",
                "gpu.release_threshold_bytes",
            ),
            ("[limits]\nmax_boxes = 0", "limits.max_boxes"),
            ("[http]\nlisten = \"nowhere\"", "http.listen"),
            ("[log]\nformat = \"xml\"", "format"),
            ("[queue]\nmax_btach = 3", "max_btach"),
        ];
        for (toml, needle) in cases {
            let msg = invalid(toml);
            assert!(msg.contains(needle), "{toml:?} gave {msg:?}");
        }
        let missing = Config::load(
            Some(Path::new("/no/such.toml")),
            &Overrides::default(),
            false,
        );
        assert!(missing.unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn a_seed_list_mixing_tls_and_plain_urls_is_refused() {
        let msg = invalid("[redis]\nurl = \"redis://u:hunter2@a:1, rediss://u:hunter2@b:2\"");
        assert!(msg.contains("redis.url"), "{msg}");
        assert!(msg.contains("mixes redis:// and rediss://"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let mut c = Config::defaults();
        c.redis.url = "rediss://a:1,rediss://b:2".into();
        c.validate().expect("one scheme for every seed");
    }

    #[test]
    fn the_decoded_pixel_budget_holds_at_least_one_largest_frame() {
        let mut c = Config::defaults();
        assert_eq!(c.limits.max_decoded_bytes_in_flight, 0);
        assert_eq!(c.limits.decoded_bytes_in_flight(), 8 * 3 * 40_000_000);
        c.limits.max_pixels = 1000;
        c.limits.max_decoded_bytes_in_flight = 3000;
        c.validate().expect("exactly one frame is enough");
        assert_eq!(c.limits.decoded_bytes_in_flight(), 3000);
    }

    #[test]
    fn the_redis_password_never_shows_in_errors() {
        let msg = invalid("[redis]\nurl = \"http://user:hunter2@x\"");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn redaction_hides_passwords() {
        let r = redact_url("redis://worker:s3cret@redis:6379/0");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("worker:***@redis"), "{r}");
        assert_eq!(redact_url("not a url"), "<unparsable url>");
        let mut c = Config::defaults();
        c.redis.url = "rediss://:hunter2@h:6380".into();
        assert!(!c.to_redacted_toml().contains("hunter2"));
    }
}
