//! The long-running commands behind `src/main.rs`: the worker with signal handling, and
//! `enqueue`. Kept in the library so `main.rs` only parses flags.

use std::path::PathBuf;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::enqueue::{self, Frame};
use crate::queue::Keys;

/// Runs the worker; SIGTERM or SIGINT starts a graceful shutdown, a second one exits at once.
pub async fn run_worker(config: Config) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    tokio::spawn(crate::signal::stop_on_signal(token.clone(), || {}));
    crate::run(config, token).await?;
    Ok(())
}

/// Options of `hmr2-worker enqueue`.
pub struct EnqueueOptions {
    pub paths: Vec<PathBuf>,
    /// Instead of files: this many synthetic frames (textured JPEGs with figures and their boxes).
    pub synthetic: Option<usize>,
    /// Size of synthetic frames.
    pub size: (u32, u32),
    pub video_id: Option<String>,
    pub boxes: Option<PathBuf>,
    pub raw: bool,
    pub reply_to: Option<String>,
    pub vertices: bool,
}

/// Enqueues image files (or synthetic frames) with a progress bar and prints one job id per line.
pub async fn enqueue(config: &Config, o: EnqueueOptions) -> anyhow::Result<()> {
    let frames = match o.synthetic {
        Some(n) => synthetic(n, o.size, &o),
        None => frames_from_files(&o)?,
    };
    send(config, frames, o.raw).await
}

fn synthetic(n: usize, (w, h): (u32, u32), o: &EnqueueOptions) -> Vec<Frame> {
    let distinct = crate::demo::frames::synthetic_frames(w, h, 1, n.min(32));
    let video = o
        .video_id
        .clone()
        .unwrap_or_else(|| "synthetic".to_string());
    (0..n)
        .map(|i| {
            let f = &distinct[i % distinct.len()];
            Frame {
                job_id: format!("{video}:{i}"),
                video_id: Some(video.clone()),
                frame_number: Some(i as u64),
                image: f.jpeg.clone(),
                boxes: Some(f.boxes.clone()),
                reply_to: o.reply_to.clone(),
                include_vertices: o.vertices,
            }
        })
        .collect()
}

fn frames_from_files(o: &EnqueueOptions) -> anyhow::Result<Vec<Frame>> {
    let files = enqueue::image_files(&o.paths)?;
    anyhow::ensure!(!files.is_empty(), "no .jpg, .jpeg or .png files found");
    let boxes: Option<serde_json::Value> = match &o.boxes {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not JSON", p.display()))?,
        ),
        None => None,
    };
    let mut frames = Vec::with_capacity(files.len());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for (i, path) in files.iter().enumerate() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("frame")
            .to_string();
        let frame_boxes = match &boxes {
            None => None,
            Some(serde_json::Value::Array(_)) => boxes.clone(),
            Some(serde_json::Value::Object(map)) => map.get(&name).cloned(),
            Some(_) => {
                anyhow::bail!("--boxes must hold a list of boxes or an object keyed by file name")
            }
        };
        let frame_boxes: Option<Vec<[f64; 4]>> = frame_boxes
            .map(serde_json::from_value)
            .transpose()
            .context("boxes must be [[x1, y1, x2, y2], ...]")?;
        frames.push(Frame {
            job_id: match &o.video_id {
                Some(v) => format!("{v}:{i}"),
                None => format!("{name}-{stamp}-{i}"),
            },
            video_id: o.video_id.clone(),
            frame_number: o.video_id.as_ref().map(|_| i as u64),
            image: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            boxes: frame_boxes,
            reply_to: o.reply_to.clone(),
            include_vertices: o.vertices,
        });
    }
    Ok(frames)
}

async fn send(config: &Config, frames: Vec<Frame>, raw: bool) -> anyhow::Result<()> {
    crate::queue::install_tls_provider();
    let client = redis::Client::open(config.redis.url.as_str())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                crate::config::redact_url(&config.redis.url)
            )
        })?;
    let keys = Keys::new(&config.queue.prefix);
    let bar = ProgressBar::new(frames.len() as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("enqueue → {}", keys.jobs));
    enqueue::enqueue(&mut conn, &keys, &frames, raw, |n| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish();
    for f in &frames {
        println!("{}", f.job_id);
    }
    Ok(())
}
