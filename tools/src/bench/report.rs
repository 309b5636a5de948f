//! What `bench` reports: the JSON document (`--json`) and the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::measure::{ForwardRate, Percentiles, Rate, Scrape};
use hmr2_worker::metrics as m;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub setup: Setup,
    pub end_to_end: EndToEnd,
    pub stages: Vec<Stage>,
    pub batch_sizes: BatchSizes,
    pub memory: Memory,
    /// `probe` + `decode` only, at the worker's DCT scale, on `decode_threads` threads: both
    /// runs together (one before the worker run, one after, so a change in the machine's load
    /// shows as a difference between them).
    pub raw_decode: Rate,
    pub raw_decode_runs: [Rate; 2],
    /// `probe` + `decode` + every crop: the CPU work of the worker's decode stage.
    pub decode_and_crop: Rate,
    /// The model alone at `max_batch`, then at every `--sweep` size.
    pub model_only: Vec<ForwardRate>,
    pub derived: Derived,
    /// With `--video-frames`: the tracked videos.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<Videos>,
}

/// The tracked videos of a `--video-frames` run.
#[derive(Debug, Clone, Serialize)]
pub struct Videos {
    pub count: usize,
    pub frames_each: usize,
    /// From the last frame's result to the video's `done` entry, milliseconds (stream ids).
    pub done_after_last_result_ms: Percentiles,
    /// `timings_ms.tracking` of the `done` entries.
    pub tracking_ms: Percentiles,
}

/// Where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    /// `/proc/loadavg` (1, 5, 15 minutes) before and after the run: other work on the machine.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub libtorch: String,
    pub version: String,
}

/// What ran.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub frames: usize,
    pub size: [u32; 2],
    pub distinct_frames: usize,
    pub jpeg_bytes_mean: usize,
    pub people_per_frame: usize,
    /// The person detector's file when the boxes were left to it (`--detect`).
    pub detector: Option<String>,
    /// `image` field (raw bytes) instead of `image_base64`.
    pub raw: bool,
    pub model: String,
    pub model_label: String,
    pub device: String,
    pub max_batch: usize,
    pub decode_threads: usize,
    pub queue_depth: usize,
    pub gpu_release: String,
    pub jpeg_scale: u32,
    pub redis: String,
    /// How the frames reached the worker.
    pub method: String,
}

/// The worker draining the backlog, Redis to Redis.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub seconds: f64,
    pub frames_per_s: f64,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    /// `timings_ms.total` of each result: fetch (XREADGROUP) → result ready to publish.
    pub latency_ms: Percentiles,
    pub enqueue_seconds: f64,
    /// CPU seconds of this process (the worker and the result reader) per second of the run.
    pub cpu_cores: f64,
    /// The same for the throwaway redis-server (0 with `--redis-url`).
    pub redis_cpu_cores: f64,
}

/// One stage of `hmr2_stage_duration_seconds`.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub stage: String,
    pub seconds: f64,
    pub ms_per_frame: f64,
    /// Of the sum over all stages.
    pub share: f64,
    /// Seconds in the stage per second of wall time (>1: several threads at once).
    pub busy: f64,
}

/// `hmr2_batch_size`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSizes {
    pub forwards: u64,
    pub mean: f64,
    /// Forward passes per bucket, e.g. `"9-16": 120`.
    pub histogram: Vec<(String, u64)>,
}

/// Memory figures.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// `VmHWM` of the bench process after the worker run (frames are generated and enqueued
    /// before the peak is reset, when the kernel allows it).
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_reset: bool,
    pub gpu: Option<GpuPeaks>,
}

/// Maxima of the GPU gauges sampled from `/metrics` every 250 ms, and the OOM/release counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuPeaks {
    pub torch_allocated_max: f64,
    pub torch_reserved_max: f64,
    /// Lowest and highest reserved bytes seen after the first batch: flat when equal.
    pub torch_reserved_range: [f64; 2],
    pub nvml_used_max: Option<f64>,
    /// Upper bound of the highest `hmr2_job_peak_allocated_bytes` bucket that has a batch.
    pub job_peak_allocated_bucket: Option<f64>,
    pub cache_releases: f64,
    pub oom: f64,
    pub drift: f64,
}

/// Ratios the targets are stated in.
#[derive(Debug, Clone, Serialize)]
pub struct Derived {
    /// CPU device only: the frames/s of everything but the forward pass on all cores, from CPU
    /// time: `cores / (core-seconds per frame of the run, worker + redis-server, − core-seconds
    /// per frame of the model alone at max_batch)`. Idle cores are not counted.
    pub pipeline_except_forward_fps: Option<f64>,
    /// `pipeline_except_forward_fps / raw_decode` (target ≥ 0.8 on the CPU).
    pub pipeline_vs_raw_decode: Option<f64>,
    pub e2e_vs_raw_decode: f64,
    pub e2e_vs_model_only: f64,
}

impl Stage {
    /// Every stage of a scrape, in pipeline order.
    pub fn from_scrape(s: &Scrape, frames: usize, wall: f64) -> Vec<Stage> {
        let sums = s.by_label(&format!("{}_sum", m::STAGE_DURATION), "stage");
        let total: f64 = sums.values().sum();
        let order = [
            m::stage::DECODE,
            m::stage::LETTERBOX,
            m::stage::DETECT,
            m::stage::PREPROCESS,
            m::stage::INFERENCE,
            m::stage::POSTPROCESS,
            m::stage::PUBLISH,
        ];
        // The detector's stages only when the run had a detector.
        let mut names: Vec<&str> = order
            .iter()
            .copied()
            .filter(|n| {
                sums.contains_key(*n) || !matches!(*n, m::stage::LETTERBOX | m::stage::DETECT)
            })
            .collect();
        names.extend(
            sums.keys()
                .map(String::as_str)
                .filter(|k| !order.contains(k)),
        );
        names
            .into_iter()
            .map(|name| {
                let seconds = sums.get(name).copied().unwrap_or(0.0);
                Stage {
                    stage: name.to_string(),
                    seconds,
                    ms_per_frame: seconds * 1e3 / frames.max(1) as f64,
                    share: seconds / total.max(1e-12),
                    busy: seconds / wall.max(1e-12),
                }
            })
            .collect()
    }
}

impl BatchSizes {
    /// From the cumulative buckets of `hmr2_batch_size`.
    pub fn from_scrape(s: &Scrape) -> Self {
        let buckets = s.buckets(m::BATCH_SIZE);
        let forwards = s
            .get(&format!("{}_count", m::BATCH_SIZE), &[])
            .unwrap_or(0.0);
        let sum = s.get(&format!("{}_sum", m::BATCH_SIZE), &[]).unwrap_or(0.0);
        let mut histogram = Vec::new();
        let (mut below, mut prev) = (0.0, 0.0);
        for (le, cum) in buckets {
            let n = cum - below;
            if n > 0.0 {
                let lo = prev as u64 + 1;
                let label = if le.is_infinite() {
                    format!(">{}", prev as u64)
                } else if lo >= le as u64 {
                    format!("{}", le as u64)
                } else {
                    format!("{lo}-{}", le as u64)
                };
                histogram.push((label, n as u64));
            }
            below = cum;
            prev = le;
        }
        BatchSizes {
            forwards: forwards as u64,
            mean: sum / forwards.max(1.0),
            histogram,
        }
    }
}

fn mb(b: f64) -> String {
    format!("{:.0} MiB", b / (1u64 << 20) as f64)
}

/// The table printed at the end of a run.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.setup;
    let e = &r.end_to_end;
    let _ = writeln!(
        o,
        "\nhmr2 bench: {} frames {}x{} JPEG (q90, {} distinct, {} KB mean, {}), {} {}/frame",
        s.frames,
        s.size[0],
        s.size[1],
        s.distinct_frames,
        s.jpeg_bytes_mean / 1024,
        if s.raw {
            "raw image field"
        } else {
            "base64 in the job JSON"
        },
        s.people_per_frame,
        match &s.detector {
            Some(d) => format!("figure(s) found by the detector {d}"),
            None => "box(es) sent".to_string(),
        }
    );
    let _ = writeln!(
        o,
        "model {} ({}) on {}, max_batch {}, decode_threads {}, {} cores ({}), load {:.2} -> {:.2}",
        s.model_label,
        s.model,
        s.device,
        s.max_batch,
        s.decode_threads,
        r.machine.cores,
        r.machine.cpu,
        r.machine.load_before[0],
        r.machine.load_after[0]
    );
    let _ = writeln!(o, "{}", "-".repeat(78));
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "{k:<38} {v}");
    };
    row(
        &mut o,
        "end to end (Redis -> worker -> Redis)",
        format!(
            "{:>8.1} frames/s  ({} ok in {:.2} s{})",
            e.frames_per_s,
            e.ok,
            e.seconds,
            if e.errors.is_empty() {
                String::new()
            } else {
                format!(", errors {:?}", e.errors)
            }
        ),
    );
    row(
        &mut o,
        "  cores busy: worker / redis-server",
        format!("{:>8.2} / {:.2}", e.cpu_cores, e.redis_cpu_cores),
    );
    row(
        &mut o,
        "latency, fetch -> result (ms)",
        format!(
            "p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
            e.latency_ms.p50, e.latency_ms.p95, e.latency_ms.p99, e.latency_ms.max
        ),
    );
    row(
        &mut o,
        &format!("raw decode (1/{} scale)", s.jpeg_scale),
        format!(
            "{:>8.1} frames/s  (before {:.1}, after {:.1})",
            r.raw_decode.frames_per_s,
            r.raw_decode_runs[0].frames_per_s,
            r.raw_decode_runs[1].frames_per_s
        ),
    );
    row(
        &mut o,
        "decode + crop",
        format!("{:>8.1} frames/s", r.decode_and_crop.frames_per_s),
    );
    for f in &r.model_only {
        row(
            &mut o,
            &format!("model only, batch {}", f.batch),
            format!(
                "{:>8.1} frames/s  ({:.1} ms/batch, {:.2} cores busy)",
                f.frames_per_s, f.ms_per_batch, f.cpu_cores
            ),
        );
    }
    let d = &r.derived;
    if let (Some(p), Some(ratio)) = (d.pipeline_except_forward_fps, d.pipeline_vs_raw_decode) {
        row(
            &mut o,
            "pipeline except forward (derived)",
            format!(
                "{p:>8.1} frames/s = {:.0}% of raw decode (target >= 80%)",
                ratio * 100.0
            ),
        );
    }
    row(
        &mut o,
        "end to end / raw decode",
        format!("{:>8.0}%", d.e2e_vs_raw_decode * 100.0),
    );
    row(
        &mut o,
        "end to end / model only",
        format!("{:>8.0}%", d.e2e_vs_model_only * 100.0),
    );
    let shares: Vec<String> = r
        .stages
        .iter()
        .filter(|st| st.seconds > 0.0)
        .map(|st| {
            format!(
                "{} {:.0}% ({:.2} ms/frame)",
                st.stage,
                st.share * 100.0,
                st.ms_per_frame
            )
        })
        .collect();
    row(&mut o, "stage shares", shares.join(", "));
    let hist: Vec<String> = r
        .batch_sizes
        .histogram
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    row(
        &mut o,
        "batch sizes",
        format!(
            "mean {:.1} over {} forwards [{}]",
            r.batch_sizes.mean,
            r.batch_sizes.forwards,
            hist.join(", ")
        ),
    );
    row(
        &mut o,
        "peak RSS",
        r.memory
            .peak_rss_bytes
            .map_or("n/a".into(), |b| mb(b as f64)),
    );
    if let Some(g) = &r.memory.gpu {
        row(
            &mut o,
            "GPU allocated / reserved max",
            format!(
                "{} / {} (reserved after first batch {}..{})",
                mb(g.torch_allocated_max),
                mb(g.torch_reserved_max),
                mb(g.torch_reserved_range[0]),
                mb(g.torch_reserved_range[1])
            ),
        );
        row(
            &mut o,
            "GPU used (NVML) max",
            g.nvml_used_max.map_or("n/a".into(), mb),
        );
        row(
            &mut o,
            "cache releases / OOM / drift",
            format!("{} / {} / {}", g.cache_releases, g.oom, g.drift),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_histogram_reads_cumulative_buckets() {
        let page = "hmr2_batch_size_bucket{le=\"1\"} 2\nhmr2_batch_size_bucket{le=\"2\"} 2\n\
                    hmr2_batch_size_bucket{le=\"4\"} 3\nhmr2_batch_size_bucket{le=\"8\"} 3\n\
                    hmr2_batch_size_bucket{le=\"16\"} 10\nhmr2_batch_size_bucket{le=\"+Inf\"} 10\n\
                    hmr2_batch_size_sum 120\nhmr2_batch_size_count 10\n";
        let b = BatchSizes::from_scrape(&Scrape::parse(page));
        assert_eq!(b.forwards, 10);
        assert_eq!(b.mean, 12.0);
        assert_eq!(
            b.histogram,
            vec![("1".into(), 2), ("3-4".into(), 1), ("9-16".into(), 7)]
        );
    }

    #[test]
    fn stage_shares_add_up() {
        let page = "hmr2_stage_duration_seconds_sum{stage=\"decode\"} 3\n\
                    hmr2_stage_duration_seconds_sum{stage=\"inference\"} 1\n";
        let st = Stage::from_scrape(&Scrape::parse(page), 100, 2.0);
        assert_eq!(st[0].stage, "decode");
        assert_eq!(st[0].share, 0.75);
        assert_eq!(st[0].ms_per_frame, 30.0);
        assert_eq!(st[0].busy, 1.5);
        assert_eq!(st.iter().map(|s| s.share).sum::<f64>(), 1.0);
    }
}
