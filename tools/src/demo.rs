//! `hmr2 demo`: the whole system on one machine in one command. A throwaway
//! `redis-server` on a free port, the worker in this process (the tiny model on the best
//! device, unless told otherwise), synthetic 1280×720 frames with a walking figure (or the
//! user's images), a progress bar while results flow, a summary table, and PNG overlays of the
//! 2D keypoints and skeleton of the first frames, so a person can look at what came out.
//!
//! Nothing is left running: the redis-server is killed when the session ends, on an error, on
//! the first Ctrl-C (after the worker stops) and on a second Ctrl-C (at once).

pub mod frames;
pub mod overlay;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use hmr2_client::{Frame, Job, JobResult, Status};
use hmr2_worker::config::Config;

use crate::bench::measure::{self, Percentiles, Scrape};
use crate::bench::report::BatchSizes;
use crate::bench::session::{self, Producer, Session};
use crate::enqueue;

/// Synthetic frames are drawn once per this many and then reused.
const DISTINCT_FRAMES: usize = 16;
/// The small person detector trained on the demo's figures (used when none is configured).
pub const TINY_DETECTOR: &str = "models/detector-tiny.pt";

/// Options of `hmr2 demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Synthetic frames to run (ignored when images are given: each runs once).
    pub frames: usize,
    /// Folder for the overlays.
    pub out: PathBuf,
    /// How many frames get an overlay.
    pub overlays: usize,
    /// Image files or folders; empty for synthetic frames.
    pub images: Vec<PathBuf>,
    /// A Redis to use instead of a throwaway `redis-server`.
    pub redis_url: Option<String>,
}

/// One input frame.
struct Input {
    name: String,
    bytes: Arc<Vec<u8>>,
    boxes: Option<Vec<[f64; 4]>>,
}

fn inputs(o: &DemoOptions) -> anyhow::Result<Vec<Input>> {
    if o.images.is_empty() {
        anyhow::ensure!(o.frames > 0, "--frames must be at least 1");
        let synth = frames::synthetic_frames(1280, 720, 1, o.frames.min(DISTINCT_FRAMES));
        let synth: Vec<_> = synth
            .into_iter()
            .map(|f| (Arc::new(f.jpeg), f.boxes))
            .collect();
        return Ok((0..o.frames)
            .map(|i| {
                let (bytes, boxes) = &synth[i % synth.len()];
                Input {
                    name: format!("frame-{i:03}"),
                    bytes: bytes.clone(),
                    boxes: Some(boxes.clone()),
                }
            })
            .collect());
    }
    let files = enqueue::image_files(&o.images)?;
    anyhow::ensure!(!files.is_empty(), "no .jpg, .jpeg or .png files found");
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
            Ok(Input {
                name: stem.to_string(),
                bytes: Arc::new(bytes),
                boxes: None,
            })
        })
        .collect()
}

/// Runs the demo; prints the summary and where the overlays went.
pub async fn run(mut config: Config, o: DemoOptions) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner.set_message(if o.images.is_empty() {
        format!("drawing {} synthetic 1280x720 frames", o.frames)
    } else {
        "reading images".to_string()
    });
    let opts = o.clone();
    let inputs = tokio::task::spawn_blocking(move || inputs(&opts)).await??;
    let n = inputs.len();

    // The demo's frames come without boxes: the small detector trained on its figures finds
    // them, unless another detector (or none) was configured.
    let tiny_detector = Path::new(TINY_DETECTOR);
    if config.detector.path.as_os_str().is_empty() && tiny_detector.exists() {
        config.detector.path = tiny_detector.to_path_buf();
    }
    let detecting = !config.detector.path.as_os_str().is_empty();
    let mut inputs = inputs;
    if detecting {
        for i in inputs.iter_mut() {
            i.boxes = None;
        }
    }
    // A job that is interrupted has nowhere better to go: stop quickly.
    config.shutdown.grace_seconds = config.shutdown.grace_seconds.min(3);
    spinner.set_message("starting redis-server");
    let mut session = Session::open(config, o.redis_url.as_deref(), "demo").await?;
    let stop = session::watch_signals(session.redis_handle());
    spinner.set_message(format!(
        "loading {} and warming up",
        session.config().model.path.display()
    ));
    tokio::select! {
        r = session.start_worker() => r?,
        _ = stop.cancelled() => {
            session.stop().await?;
            anyhow::bail!("interrupted");
        }
    }
    spinner.finish_and_clear();

    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40.cyan/blue}] {pos}/{len} frames  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message("hmr2");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let inputs = Arc::new(inputs);
    let t0 = Instant::now();
    let mut feed = tokio::spawn(feed(session.producer(), inputs.clone()));
    let mut fed = false;

    let mut kept: BTreeMap<usize, JobResult> = BTreeMap::new();
    let (mut waits, mut totals) = (Vec::new(), Vec::new());
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = 0;
    while seen < n {
        let batch = tokio::select! {
            r = session.read_results(500) => r?,
            r = &mut feed, if !fed => {
                r??;
                fed = true;
                continue;
            }
            _ = stop.cancelled() => {
                feed.abort();
                bar.abandon_with_message("interrupted");
                session.stop().await?;
                anyhow::bail!("interrupted after {seen} of {n} frames");
            }
        };
        for out in batch {
            seen += 1;
            bar.inc(1);
            if out.status == Status::Ok {
                waits.push(out.timings_ms.queue_wait + out.timings_ms.total);
                totals.push(out.timings_ms.total);
            } else {
                let e = out.error.clone();
                let code = e.map_or_else(
                    || "unknown".into(),
                    |e| format!("{}: {}", e.code, e.message),
                );
                *errors.entry(code).or_default() += 1;
            }
            if let Some(i) = out.frame_number.map(|f| f as usize) {
                if i < o.overlays {
                    kept.insert(i, out);
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let scrape = Scrape::parse(&session.scrape().await.unwrap_or_default());
    let peak_rss = measure::peak_rss_bytes();
    let label = session.config().model.path.display().to_string();
    let redis = session.redis_label().to_string();
    session.stop().await?;

    let written = write_overlays(&o.out, &inputs, &kept)?;
    let device = scrape
        .0
        .iter()
        .find(|s| s.name == hmr2_worker::metrics::BUILD_INFO)
        .map(|s| {
            let get = |k: &str| {
                s.labels
                    .iter()
                    .find(|(a, _)| a == k)
                    .map_or("", |(_, v)| v.as_str())
                    .to_string()
            };
            format!("{} on {}", get("model"), get("device"))
        })
        .unwrap_or(label);
    let mut t = String::new();
    let _ = writeln!(t, "\nhmr2 demo: {device}, {redis}");
    let _ = writeln!(t, "{}", "-".repeat(72));
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "{k:<30} {v}");
    };
    row(
        &mut t,
        "frames",
        format!(
            "{} ok, {} failed, in {wall:.2} s = {:.1} frames/s",
            totals.len(),
            n - totals.len(),
            totals.len() as f64 / wall.max(1e-9)
        ),
    );
    let (e2e, held) = (Percentiles::of(waits), Percentiles::of(totals));
    row(
        &mut t,
        "latency enqueue -> result",
        format!("p50 {:.0} ms, p95 {:.0} ms", e2e.p50, e2e.p95),
    );
    row(
        &mut t,
        "  of which in the worker",
        format!("p50 {:.0} ms, p95 {:.0} ms", held.p50, held.p95),
    );
    let b = BatchSizes::from_scrape(&scrape);
    let hist: Vec<String> = b
        .histogram
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    row(
        &mut t,
        "batch sizes",
        format!(
            "mean {:.1} over {} forwards [{}]",
            b.mean,
            b.forwards,
            hist.join(", ")
        ),
    );
    row(
        &mut t,
        "peak RSS",
        peak_rss.map_or("n/a".into(), |r| format!("{} MiB", r >> 20)),
    );
    for (code, count) in &errors {
        row(&mut t, "error", format!("{count} x {code}"));
    }
    if !written.is_empty() {
        row(
            &mut t,
            "overlays",
            format!("{} PNG in {}/", written.len(), o.out.display()),
        );
        for p in &written {
            let _ = writeln!(t, "{:<30} {}", "", p.display());
        }
    }
    print!("{t}");
    let failed: usize = errors.values().sum();
    anyhow::ensure!(failed == 0, "{failed} frame(s) failed");
    Ok(())
}

/// Enqueues the inputs in small pipelined chunks, so results flow while frames still go in and
/// only one chunk of jobs is held in memory at a time.
async fn feed(mut producer: Producer, inputs: Arc<Vec<Input>>) -> anyhow::Result<()> {
    for (c, chunk) in inputs.chunks(32).enumerate() {
        let jobs: Vec<Frame> = chunk
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let i = c * 32 + k;
                let job = Job::new(format!("demo:{i}"))
                    .video("demo", i as u64)
                    .boxes(f.boxes.clone().unwrap_or_default());
                Frame::new(job, f.bytes.to_vec())
            })
            .collect();
        producer.enqueue(&jobs, false).await?;
    }
    Ok(())
}

/// Draws the kept results on their frames and writes `<name>.png` into `out`.
fn write_overlays(
    out: &Path,
    inputs: &[Input],
    kept: &BTreeMap<usize, JobResult>,
) -> anyhow::Result<Vec<PathBuf>> {
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (&i, outcome) in kept {
        let Some(input) = inputs.get(i) else { continue };
        if outcome.people.is_empty() {
            continue;
        }
        let Ok(img) = ::image::load_from_memory(&input.bytes) else {
            continue;
        };
        let mut img = img.into_rgb8();
        overlay::draw(&mut img, &outcome.people);
        let path = out.join(format!("{}.png", input.name));
        img.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
