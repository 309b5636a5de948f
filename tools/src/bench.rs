//! `hmr2 bench`: the worker end to end through a real Redis, and beside it, in the same
//! process and on the same cores, the raw decode rate of the same frames and the model alone.
//!
//! ## Method
//! 1. `--frames` jobs are made of a few distinct synthetic frames ([`crate::demo::frames`],
//!    textured 1280×720 JPEGs at q90 with walking figures; encoded once, reused) and enqueued,
//!    pipelined, on a fresh key prefix **before the worker starts**: the run measures a worker
//!    draining a backlog, which is what a worker does whenever it is the bottleneck.
//! 2. The worker runs in this process (`hmr2_worker::run`) with the given configuration, on a
//!    throwaway `redis-server` unless `--redis-url`. The clock starts when `/readyz` first answers
//!    200 (model loaded and warmed up; the fetcher starts at that moment) and stops when the last
//!    result is read from the results stream (`XREAD BLOCK`).
//! 3. **Latency** is each result's `timings_ms.total`: from the worker's fetch (XREADGROUP) to
//!    the result ready to publish, i.e. the time the worker holds a job, including its bounded
//!    internal queues. The time a job waits in Redis (`queue_wait`) is left out: under a backlog
//!    it only measures the backlog.
//! 4. Stage shares, batch sizes and GPU peaks come from the worker's own `/metrics`, scraped over
//!    HTTP (GPU gauges every 250 ms during the run); peak RSS is `VmHWM` of this process.
//! 5. The raw decode rate of the same frames (`probe` + `decode` at the worker's DCT scale, on
//!    `decode_threads` threads) is measured once before the worker run and once after it, so a
//!    change in the machine's load shows; after the worker stops, also decode + crop, and the
//!    model alone at `max_batch` (and each `--sweep` size) on the worker's device.
//!
//! On the CPU the forward pass and the rest of the pipeline share the same cores, so the rate of
//! "everything but the forward pass" is derived from CPU time: the core-seconds per frame of the
//! run (worker and redis-server) minus those of the forward pass alone, spread over all cores.
//! That ignores cores left idle; running the bench with a model whose forward costs nothing
//! (`benches/baseline/null_model.py`) measures the same thing directly, idle time included.

pub mod measure;
pub mod queue;
pub mod report;
pub mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use hmr2_client::{Frame, Job, Status};
use hmr2_worker::config::Config;
use hmr2_worker::image::Limits;
use hmr2_worker::metrics as m;
use hmr2_worker::model;

use crate::demo::frames::{self, SyntheticFrame};
use measure::{Encoded, Percentiles, Rate, Scrape};
use report::{BatchSizes, Derived, EndToEnd, GpuPeaks, Machine, Memory, Report, Setup, Stage};
use session::Session;

/// Options of `hmr2 bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub frames: usize,
    pub size: (u32, u32),
    /// Walking figures per frame whose boxes go with the job (0: no boxes, whole frame).
    pub people: usize,
    /// Distinct frames rendered and cycled through.
    pub distinct: usize,
    pub raw: bool,
    /// A Redis to use instead of a throwaway `redis-server`.
    pub redis_url: Option<String>,
    pub json: PathBuf,
    /// Extra batch sizes for the model-only measurement.
    pub sweep: Vec<usize>,
    /// Writes the distinct frames and their boxes here (for the Python baseline).
    pub save_frames: Option<PathBuf>,
    /// Draw `people` figures but send no boxes: the worker's person detector finds them
    /// (`detector.path`, default the small `models/detector-tiny.pt`).
    pub detect: bool,
    /// Jobs become the frames of tracked videos of this many frames (DESIGN §13): each result
    /// also records its frame, and the tracker runs in the worker as videos complete.
    pub video_frames: Option<usize>,
}

/// Parses `1280x720`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| (16..=8192).contains(&n))
    };
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!("{s:?}: sides must be 16..8192 pixels")),
    }
}

/// The 1, 5 and 15 minute load averages (zeros where `/proc` has none).
pub(crate) fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [(); 3].map(|_| v.next().unwrap_or(0.0))
}

/// The CPU's model name, from `/proc/cpuinfo`.
pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Writes the distinct frames as `frame-NNN.jpg` and `frames.json` (file names, boxes).
fn save_frames(
    dir: &std::path::Path,
    frames: &[SyntheticFrame],
    people: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut index = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let name = format!("frame-{i:03}.jpg");
        std::fs::write(dir.join(&name), &f.jpeg)?;
        let boxes = if people > 0 {
            f.boxes.clone()
        } else {
            Vec::new()
        };
        index.push(serde_json::json!({ "file": name, "boxes": boxes }));
    }
    std::fs::write(
        dir.join("frames.json"),
        serde_json::to_vec_pretty(&serde_json::json!({ "frames": index }))?,
    )?;
    Ok(())
}

/// Runs the benchmark, prints the table, writes the JSON report and returns it.
pub async fn run(mut config: Config, o: BenchOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(o.frames > 0, "--frames must be at least 1");
    let load_before = loadavg();
    let (w, h) = o.size;
    let (people, distinct) = (o.people.min(frames::MAX_PEOPLE), o.distinct.max(1));
    eprintln!("bench: rendering {distinct} distinct {w}x{h} frames");
    let synth =
        tokio::task::spawn_blocking(move || frames::synthetic_frames(w, h, people, distinct))
            .await?;
    if let Some(dir) = &o.save_frames {
        save_frames(dir, &synth, people)
            .with_context(|| format!("writing frames to {}", dir.display()))?;
    }
    let jpeg_bytes_mean = synth.iter().map(|f| f.jpeg.len()).sum::<usize>() / synth.len();
    let limits = Limits {
        max_image_bytes: config.limits.max_image_bytes,
        max_pixels: config.limits.max_pixels,
    };
    if o.detect {
        if config.detector.path.as_os_str().is_empty() {
            config.detector.path = PathBuf::from(crate::demo::TINY_DETECTOR);
        }
        anyhow::ensure!(
            config.detector.path.exists(),
            "--detect needs a detector: {} is missing",
            config.detector.path.display()
        );
    } else {
        config.detector.path = PathBuf::new();
    }
    let detect = o.detect;
    let boxes_of = |f: &SyntheticFrame| {
        if people > 0 && !detect {
            f.boxes.clone()
        } else {
            Vec::new()
        }
    };
    let encoded_boxes: Vec<Vec<[f64; 4]>> = synth.iter().map(boxes_of).collect();
    let encoded: Vec<Encoded> = synth
        .iter()
        .zip(&encoded_boxes)
        .map(|(f, b)| Encoded {
            bytes: &f.jpeg,
            boxes: b,
        })
        .collect();
    let jpeg_scale = measure::worker_scale(&encoded[0], &limits);
    let threads = config.decode_threads();
    let count = o.frames.clamp(100, 2000) / 2;
    eprintln!("bench: raw decode rate ({count} frames on {threads} threads)");
    let decode_before = tokio::task::block_in_place(|| {
        measure::decode_rate(&encoded, threads, count, false, &limits)
    })?;

    config.queue.results_maxlen = config.queue.results_maxlen.max(2 * o.frames as u64);
    let device = model::resolve_device(config.device())?;
    let mut session = Session::open(config, o.redis_url.as_deref(), "bench").await?;
    let stop = session::watch_signals(session.redis_handle());
    let cfg = session.config().clone();

    eprintln!(
        "bench: enqueueing {} jobs on {} ({})",
        o.frames,
        session.redis_label(),
        if o.raw { "raw image field" } else { "base64" }
    );
    let t = Instant::now();
    let mut producer = session.producer();
    for chunk in (0..o.frames).collect::<Vec<_>>().chunks(64) {
        if stop.is_cancelled() {
            session.stop().await?;
            anyhow::bail!("interrupted while enqueueing");
        }
        let jobs: Vec<Frame> = chunk
            .iter()
            .map(|&i| {
                let f = &synth[i % synth.len()];
                let job = match o.video_frames.filter(|&n| n > 0) {
                    Some(n) => {
                        let v = i / n;
                        let len = n.min(o.frames - v * n);
                        Job::new(format!("bench-{v}:{}", i % n))
                            .video(format!("bench-{v}"), (i % n) as u64)
                            .tracked(len as u64, 30.0)
                    }
                    None => Job::new(format!("bench:{i}")).video("bench", i as u64),
                }
                .boxes(boxes_of(f));
                Frame::new(job, f.jpeg.clone())
            })
            .collect();
        producer.enqueue(&jobs, o.raw).await?;
    }
    let enqueue_seconds = t.elapsed().as_secs_f64();
    let peak_rss_reset = measure::reset_peak_rss();

    eprintln!("bench: starting the worker (model load and warm-up)");
    session.start_worker_or_stop(&stop, || {}).await?;
    let (t0, cpu0, redis0) = (
        Instant::now(),
        measure::cpu_seconds(),
        measure::children_cpu_seconds(),
    );
    let sampler_stop = CancellationToken::new();
    let sampler = matches!(device, tch::Device::Cuda(_))
        .then(|| tokio::spawn(sample_gpu(session.metrics_addr(), sampler_stop.clone())));
    let mut latencies = Vec::with_capacity(o.frames);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = 0;
    let mut last_progress = Instant::now();
    while seen < o.frames {
        let batch = tokio::select! {
            r = session.read_results(1000) => r?,
            _ = stop.cancelled() => {
                session.stop().await?;
                anyhow::bail!("interrupted after {seen} of {} results", o.frames);
            }
        };
        if batch.is_empty() {
            anyhow::ensure!(
                last_progress.elapsed() < Duration::from_secs(120),
                "no result for 2 minutes ({seen} of {} arrived); is the worker stuck?",
                o.frames
            );
            continue;
        }
        last_progress = Instant::now();
        for out in batch {
            seen += 1;
            if out.status == Status::Ok {
                latencies.push(out.timings_ms.total);
            } else {
                let code = out
                    .error
                    .map_or_else(|| "unknown".into(), |e| e.code.to_string());
                *errors.entry(code).or_default() += 1;
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu_cores = (measure::cpu_seconds() - cpu0) / wall;
    let redis_cpu_cores = (measure::children_cpu_seconds() - redis0) / wall;
    let scrape = Scrape::parse(&session.scrape().await?);
    sampler_stop.cancel();
    let gpu = match sampler {
        Some(s) => Some(s.await?),
        None => None,
    };
    let peak_rss_bytes = measure::peak_rss_bytes();
    let videos = match o.video_frames.filter(|&n| n > 0) {
        Some(n) => {
            let names: Vec<String> = (0..o.frames.div_ceil(n))
                .map(|v| format!("bench-{v}"))
                .collect();
            let seen = session
                .video_latencies(&names, Duration::from_secs(120))
                .await?;
            let (after, tracking): (Vec<f64>, Vec<f64>) = seen.into_iter().unzip();
            let v = report::Videos {
                count: names.len(),
                frames_each: n,
                done_after_last_result_ms: Percentiles::of(after),
                tracking_ms: Percentiles::of(tracking),
            };
            eprintln!(
                "bench: {} videos of {n} frames: done p50 {:.0} ms / p95 {:.0} ms after the last frame's result (tracking p50 {:.1} ms)",
                v.count, v.done_after_last_result_ms.p50, v.done_after_last_result_ms.p95, v.tracking_ms.p50
            );
            Some(v)
        }
        None => None,
    };
    session.stop().await?;
    drop(session);

    eprintln!("bench: raw decode and model-only measurements");
    // Blocking on purpose: nothing else runs now, and the threads must have the cores.
    let (decode_after, decode_and_crop, crops) = tokio::task::block_in_place(|| {
        anyhow::Ok((
            measure::decode_rate(&encoded, threads, count, false, &limits)?,
            measure::decode_rate(&encoded, threads, count, true, &limits)?,
            measure::crops_of(&encoded, &limits)?,
        ))
    })?;
    let mut sizes = vec![cfg.queue.max_batch];
    sizes.extend(
        o.sweep
            .iter()
            .copied()
            .filter(|&b| b != cfg.queue.max_batch),
    );
    let path = cfg.model.path.clone();
    let model_only = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut model = measure::load_model(&path, device)?;
        sizes
            .iter()
            .map(|&b| {
                let cuda = matches!(device, tch::Device::Cuda(_));
                let (batches, seconds) = if cuda { (20, 2.0) } else { (5, 2.0) };
                measure::forward_rate(&mut model, &crops, b, batches, seconds)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;

    let raw_decode = Rate::new(
        decode_before.frames + decode_after.frames,
        decode_before.seconds + decode_after.seconds,
    );
    let ok = latencies.len();
    let e2e = Rate::new(ok, wall);
    let fwd = model_only[0].frames_per_s;
    // Core-seconds per frame of the whole run (worker + redis-server) minus those of the
    // forward pass alone at the same batch size: what everything else costs, on all cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let rest = (cpu_cores + redis_cpu_cores) / e2e.frames_per_s.max(1e-9)
        - model_only[0].cpu_cores / fwd.max(1e-9);
    let except_forward = (matches!(device, tch::Device::Cpu) && rest > 0.0).then(|| cores / rest);
    let model_label = scrape
        .0
        .iter()
        .find(|s| s.name == m::BUILD_INFO)
        .and_then(|s| s.labels.iter().find(|(k, _)| k == "model"))
        .map_or_else(String::new, |(_, v)| v.clone());
    let report = Report {
        machine: Machine {
            cpu: cpu_name(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_before,
            load_after: loadavg(),
            libtorch: model::torch_version(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        setup: Setup {
            frames: o.frames,
            size: [w, h],
            distinct_frames: distinct,
            jpeg_bytes_mean,
            people_per_frame: people,
            detector: o.detect.then(|| cfg.detector.path.display().to_string()),
            raw: o.raw,
            model: cfg.model.path.display().to_string(),
            model_label,
            device: model::device_label(device),
            max_batch: cfg.queue.max_batch,
            decode_threads: threads,
            queue_depth: cfg.pipeline.queue_depth,
            gpu_release: format!("{:?}", cfg.gpu.release).to_lowercase(),
            jpeg_scale,
            redis: session_label(&o),
            method: "backlog of --frames jobs enqueued before the worker starts; clock from \
                     /readyz 200 to the last result read"
                .into(),
        },
        end_to_end: EndToEnd {
            seconds: wall,
            frames_per_s: e2e.frames_per_s,
            ok,
            errors,
            latency_ms: Percentiles::of(latencies),
            enqueue_seconds,
            cpu_cores,
            redis_cpu_cores,
        },
        stages: Stage::from_scrape(&scrape, o.frames, wall),
        batch_sizes: BatchSizes::from_scrape(&scrape),
        memory: Memory {
            peak_rss_bytes,
            peak_rss_reset,
            gpu: gpu.map(|mut g| {
                let s = &scrape;
                let mut below = 0.0;
                for (le, cum) in s.buckets(m::JOB_PEAK_ALLOCATED) {
                    if cum > below {
                        g.job_peak_allocated_bucket = Some(le);
                    }
                    below = cum;
                }
                let total = |name: &str| s.by_label(name, "gpu").values().sum::<f64>();
                g.cache_releases = total(m::CACHE_RELEASES);
                g.oom = total(m::OOM);
                g.drift = total(m::DRIFT);
                g
            }),
        },
        videos,
        derived: Derived {
            pipeline_except_forward_fps: except_forward,
            pipeline_vs_raw_decode: except_forward.map(|p| p / raw_decode.frames_per_s),
            e2e_vs_raw_decode: e2e.frames_per_s / raw_decode.frames_per_s,
            e2e_vs_model_only: e2e.frames_per_s / fwd,
        },
        raw_decode,
        raw_decode_runs: [decode_before, decode_after],
        decode_and_crop,
        model_only,
    };
    print!("{}", report::table(&report));
    if let Some(dir) = o.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", o.json.display()))?;
    println!("report written to {}", o.json.display());
    Ok(report)
}

fn session_label(o: &BenchOptions) -> String {
    match &o.redis_url {
        Some(u) => hmr2_worker::config::redact_url(u),
        None => "throwaway local redis-server".into(),
    }
}

/// Samples the GPU gauges from `/metrics` every 250 ms until `stop`.
async fn sample_gpu(addr: std::net::SocketAddr, stop: CancellationToken) -> GpuPeaks {
    let mut g = GpuPeaks {
        torch_reserved_range: [f64::INFINITY, 0.0],
        ..Default::default()
    };
    loop {
        if let Ok((200, body)) = session::http_get(addr, "/metrics").await {
            let s = Scrape::parse(&body);
            let max = |name: &str| s.by_label(name, "gpu").values().copied().reduce(f64::max);
            if let Some(v) = max(m::TORCH_ALLOCATED) {
                g.torch_allocated_max = g.torch_allocated_max.max(v);
            }
            if let Some(v) = max(m::TORCH_RESERVED) {
                g.torch_reserved_max = g.torch_reserved_max.max(v);
                let batches = s.get(&format!("{}_count", m::BATCH_SIZE), &[]);
                if batches.unwrap_or(0.0) > 0.0 {
                    g.torch_reserved_range[0] = g.torch_reserved_range[0].min(v);
                    g.torch_reserved_range[1] = g.torch_reserved_range[1].max(v);
                }
            }
            if let Some(v) = max(m::GPU_MEMORY_USED) {
                g.nvml_used_max = Some(g.nvml_used_max.unwrap_or(0.0).max(v));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => break,
        }
    }
    if g.torch_reserved_range[0].is_infinite() {
        g.torch_reserved_range = [0.0, 0.0];
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert_eq!(parse_size("640X360"), Ok((640, 360)));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("0x720").is_err());
        assert!(parse_size("axb").is_err());
    }
}
