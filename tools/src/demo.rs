//! `hmr2 demo`: the whole system on one machine in one command. A throwaway
//! `redis-server` on a free port, the worker in this process (the tiny model on the best
//! device, unless told otherwise), a progress bar while results flow, a summary table and PNG
//! overlays, so a person can look at what came out.
//!
//! Without images the demo is a video ([`clip`]): a short synthetic clip (two figures crossing,
//! one hidden behind the other for a few frames, a third entering late) goes in as one tracked
//! video (DESIGN §13) without boxes; the demo waits for the video's tracked output, prints its
//! tracks, draws overlays coloured by track and plots one joint's raw and smoothed trajectory.
//! With images, each image is one frame on its own, as before.
//!
//! Nothing is left running: the redis-server is killed when the session ends, on an error, on
//! the first Ctrl-C (after the worker stops) and on a second Ctrl-C (at once).

pub mod clip;
pub mod frames;
pub mod overlay;
pub mod plot;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use hmr2_client::{Frame, Job, JobResult, Status, TrackInfo};
use hmr2_worker::config::Config;
use hmr2_worker::detector::{Detector as _, TorchDetector};

use crate::bench::measure::{self, Percentiles, Scrape};
use crate::bench::report::BatchSizes;
use crate::bench::session::{self, Producer, Session};
use crate::enqueue;

/// The small person detector trained on the demo's figures (used when none is configured).
pub const TINY_DETECTOR: &str = "models/detector-tiny.pt";

/// Options of `hmr2 demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Frames of the synthetic clip to run: the first N of its [`frames::CLIP_FRAMES`] (`None`:
    /// all of them). Ignored when images are given (each runs once).
    pub frames: Option<usize>,
    /// Size of the synthetic clip's frames, width and height.
    pub size: (u32, u32),
    /// Folder for the overlays (and the clip's trajectory plot).
    pub out: PathBuf,
    /// How many frames get an overlay (`None`: 6 spread over the clip, or the first 4 images).
    pub overlays: Option<usize>,
    /// Image files or folders; empty for the synthetic clip.
    pub images: Vec<PathBuf>,
    /// A Redis to use instead of a throwaway `redis-server`.
    pub redis_url: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            frames: None,
            size: (1280, 720),
            out: PathBuf::from("demo-out"),
            overlays: None,
            images: Vec::new(),
            redis_url: None,
        }
    }
}

/// What a demo run produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The text printed at the end: the summary (and, for the clip, the tracks).
    pub text: String,
    /// Frames whose job failed.
    pub failed: usize,
    /// The overlays written.
    pub overlays: Vec<PathBuf>,
    /// The trajectory plot (the clip only).
    pub trajectory: Option<PathBuf>,
    /// The tracks of the clip (empty for images).
    pub tracks: Vec<TrackInfo>,
}

/// One input frame.
struct Input {
    name: String,
    bytes: Arc<Vec<u8>>,
    boxes: Option<Vec<[f64; 4]>>,
}

fn image_inputs(images: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let files = enqueue::image_files(images)?;
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

/// Runs the demo; prints the summary (and the clip's tracks) and where the overlays went. An
/// error when a frame failed.
pub async fn run(config: Config, o: DemoOptions) -> anyhow::Result<()> {
    let report = run_report(config, o).await?;
    print!("{}", report.text);
    anyhow::ensure!(report.failed == 0, "{} frame(s) failed", report.failed);
    Ok(())
}

/// Runs the demo and returns what it would print, without printing it.
pub async fn run_report(config: Config, o: DemoOptions) -> anyhow::Result<Report> {
    if o.images.is_empty() {
        clip::run(config, o).await
    } else {
        run_images(config, o).await
    }
}

/// The demo's frames come without boxes: the small detector trained on its figures finds them,
/// unless another detector (or none) was configured. Returns whether a detector runs. A job
/// that is interrupted has nowhere better to go: the worker stops quickly.
fn prepare(config: &mut Config) -> bool {
    let tiny_detector = Path::new(TINY_DETECTOR);
    if config.detector.path.as_os_str().is_empty() && tiny_detector.exists() {
        config.detector.path = tiny_detector.to_path_buf();
    }
    config.shutdown.grace_seconds = config.shutdown.grace_seconds.min(3);
    !config.detector.path.as_os_str().is_empty()
}

/// What to tell a user whose own images run through a detector that finds only the demo's
/// synthetic figures (its `meta()` says `synthetic_only`, as the tiny one's does): on a
/// photograph it finds nobody, or "people" in anything. None for any other detector, or none.
pub fn synthetic_detector_warning(config: &Config) -> Option<String> {
    let path = &config.detector.path;
    if path.as_os_str().is_empty() {
        return None;
    }
    let detector = TorchDetector::load(path, tch::Device::Cpu).ok()?;
    detector.meta().synthetic_only.then(|| {
        format!(
            "{} finds only the demo's synthetic figures, not people in photographs or video: \
             export a real detector (python -m models.export_detector --arch rtdetr, see \
             models/README.md) and run with HMR2_DETECTOR__PATH=FILE",
            path.display()
        )
    })
}

/// Opens the session (a throwaway redis-server unless `redis_url`), starts watching for
/// Ctrl-C and starts the worker; the spinner says which step it is at.
async fn start(
    config: Config,
    redis_url: Option<&str>,
    spinner: &ProgressBar,
) -> anyhow::Result<(Session, CancellationToken)> {
    spinner.set_message("starting redis-server");
    let mut session = Session::open(config, redis_url, "demo").await?;
    let stop = session::watch_signals(session.redis_handle());
    spinner.set_message(format!(
        "loading {} and warming up",
        session.config().model.path.display()
    ));
    session
        .start_worker_or_stop(&stop, || {
            spinner.set_message("interrupted: stopping the worker once it has loaded")
        })
        .await?;
    Ok((session, stop))
}

/// The per-frame results of a run.
struct Answered {
    /// The results kept, by frame number.
    kept: BTreeMap<usize, JobResult>,
    /// Enqueue-to-result and in-worker times of the frames answered `ok`, milliseconds.
    waits: Vec<f64>,
    totals: Vec<f64>,
    /// Failed frames by error.
    errors: BTreeMap<String, usize>,
    /// From the first job enqueued to the last result, seconds.
    wall: f64,
}

/// Feeds `inputs` (a tracked video of `video.0` frames at `video.1` fps when `video` is given)
/// and reads their results with a progress bar over frames answered, keeping those whose frame
/// number `keep` says. Stops the session and fails on Ctrl-C.
async fn collect(
    session: &mut Session,
    stop: &CancellationToken,
    inputs: Arc<Vec<Input>>,
    video: Option<(u64, f64)>,
    keep: impl Fn(usize) -> bool,
) -> anyhow::Result<Answered> {
    let n = inputs.len();
    let bar = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40.cyan/blue}] {pos}/{len} frames  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message("hmr2");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let t0 = Instant::now();
    let mut feed: JoinHandle<anyhow::Result<()>> =
        tokio::spawn(feed(session.producer(), inputs, video));
    let mut fed = false;
    let mut a = Answered {
        kept: BTreeMap::new(),
        waits: Vec::new(),
        totals: Vec::new(),
        errors: BTreeMap::new(),
        wall: 0.0,
    };
    let mut seen = 0;
    while seen < n {
        let batch = tokio::select! {
            r = session.read_results(500) => r,
            r = &mut feed, if !fed => {
                fed = true;
                match r.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(()) => continue,
                    Err(e) => Err(e.context("enqueueing the frames")),
                }
            }
            _ = stop.cancelled() => {
                feed.abort();
                bar.abandon_with_message("interrupted");
                session.stop().await?;
                anyhow::bail!("interrupted after {seen} of {n} frames");
            }
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                feed.abort();
                bar.abandon();
                let _ = session.stop().await;
                return Err(e);
            }
        };
        for out in batch {
            seen += 1;
            bar.inc(1);
            if out.status == Status::Ok {
                a.waits
                    .push(out.timings_ms.queue_wait + out.timings_ms.total);
                a.totals.push(out.timings_ms.total);
            } else {
                let e = out.error.clone();
                let code = e.map_or_else(
                    || "unknown".into(),
                    |e| format!("{}: {}", e.code, e.message),
                );
                *a.errors.entry(code).or_default() += 1;
            }
            if let Some(i) = out.frame_number.map(|f| f as usize) {
                if keep(i) {
                    a.kept.insert(i, out);
                }
            }
        }
    }
    a.wall = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(a)
}

/// What the worker said about itself, for the summary's title line.
fn device_label(scrape: &Scrape, fallback: String) -> String {
    scrape
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
        .unwrap_or(fallback)
}

/// One row of the summary: the key in a column of 30, then the value.
fn row(t: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = writeln!(t, "{k:<30} {v}");
}

/// The summary's title, frames, latencies, batch sizes, peak RSS and errors.
fn summary(title: &str, n: usize, a: &Answered, scrape: &Scrape) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n{title}");
    let _ = writeln!(t, "{}", "-".repeat(72));
    let ok = a.totals.len();
    row(
        &mut t,
        "frames",
        format!(
            "{ok} ok, {} failed, in {:.2} s = {:.1} frames/s",
            n - ok,
            a.wall,
            ok as f64 / a.wall.max(1e-9)
        ),
    );
    let (e2e, held) = (
        Percentiles::of(a.waits.clone()),
        Percentiles::of(a.totals.clone()),
    );
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
    let b = BatchSizes::from_scrape(scrape);
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
        measure::peak_rss_bytes().map_or("n/a".into(), |r| format!("{} MiB", r >> 20)),
    );
    for (code, count) in &a.errors {
        row(&mut t, "error", format!("{count} x {code}"));
    }
    t
}

/// `hmr2 demo IMAGES...`: each image one frame of its own, overlays of the first few.
async fn run_images(mut config: Config, o: DemoOptions) -> anyhow::Result<Report> {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner.set_message("reading images");
    let images = o.images.clone();
    let inputs = tokio::task::spawn_blocking(move || image_inputs(&images)).await??;
    let n = inputs.len();
    let overlays = o.overlays.unwrap_or(4);
    prepare(&mut config);
    let warning = synthetic_detector_warning(&config);
    if let Some(w) = &warning {
        spinner.suspend(|| eprintln!("warning: {w}"));
    }
    let (mut session, stop) = start(config, o.redis_url.as_deref(), &spinner).await?;
    spinner.finish_and_clear();

    let inputs = Arc::new(inputs);
    let a = collect(&mut session, &stop, inputs.clone(), None, |i| i < overlays).await?;
    let scrape = Scrape::parse(&session.scrape().await.unwrap_or_default());
    let label = session.config().model.path.display().to_string();
    let redis = session.redis_label().to_string();
    session.stop().await?;

    let written = write_overlays(&o.out, &inputs, &a.kept)?;
    let device = device_label(&scrape, label);
    let mut t = summary(&format!("hmr2 demo: {device}, {redis}"), n, &a, &scrape);
    if let Some(w) = warning {
        row(&mut t, "warning", w);
    }
    if !written.is_empty() {
        row(
            &mut t,
            "overlays",
            format!("{} PNG in {}/", written.len(), o.out.display()),
        );
        for p in &written {
            row(&mut t, "", p.display());
        }
    }
    Ok(Report {
        text: t,
        failed: a.errors.values().sum(),
        overlays: written,
        trajectory: None,
        tracks: Vec::new(),
    })
}

/// Enqueues the inputs in small pipelined chunks, so results flow while frames still go in and
/// only one chunk of jobs is held in memory at a time.
/// With `video` (frames, fps) every job is a frame of the tracked video `demo`.
async fn feed(
    mut producer: Producer,
    inputs: Arc<Vec<Input>>,
    video: Option<(u64, f64)>,
) -> anyhow::Result<()> {
    for (c, chunk) in inputs.chunks(32).enumerate() {
        let jobs: Vec<Frame> = chunk
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let i = c * 32 + k;
                let mut job = Job::new(format!("demo:{i}"))
                    .video(clip::VIDEO_ID, i as u64)
                    .boxes(f.boxes.clone().unwrap_or_default());
                if let Some((frames, fps)) = video {
                    job = job.tracked(frames, fps);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_detector(file: &str) -> Config {
        let mut config = Config::defaults();
        config.detector.path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        config
    }

    #[test]
    fn own_images_through_the_tiny_detector_come_with_a_warning() {
        let w = synthetic_detector_warning(&with_detector(TINY_DETECTOR))
            .expect("the tiny detector is marked synthetic_only");
        assert!(w.contains("synthetic figures"), "{w}");
        assert!(w.contains("models.export_detector"), "{w}");
        // A detector that does not say so (this one meets the contract's meta()), or none:
        // no warning.
        let other = with_detector("models/artifacts/detector-half_scores.pt");
        assert!(other.detector.path.exists(), "scripts/setup makes it");
        assert_eq!(synthetic_detector_warning(&other), None);
        assert_eq!(synthetic_detector_warning(&Config::defaults()), None);
    }
}
