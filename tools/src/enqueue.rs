//! `hmr2 enqueue`: image files (or synthetic frames) in, job ids out, as the upload pipeline
//! does. The jobs are built and added through the wire contract crate (`hmr2-client`); this
//! module only finds the files, reads the boxes and drives the progress bar.

use std::path::PathBuf;

use anyhow::Context as _;
use hmr2_client::{producer, Frame, Job};
use hmr2_worker::config::{redact_url, Config};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `hmr2 enqueue`.
pub struct EnqueueOptions {
    pub paths: Vec<PathBuf>,
    /// Instead of files: this many synthetic frames (textured JPEGs with figures and their boxes).
    pub synthetic: Option<usize>,
    /// Size of synthetic frames.
    pub size: (u32, u32),
    pub video_id: Option<String>,
    /// With `video_id`: every frame is a frame of one tracked video at this rate, in name order.
    pub fps: Option<f64>,
    pub boxes: Option<PathBuf>,
    pub raw: bool,
    pub reply_to: Option<String>,
    pub vertices: bool,
}

/// Enqueues image files (or synthetic frames) with a progress bar and prints one job id per line.
pub async fn run(config: &Config, o: EnqueueOptions) -> anyhow::Result<()> {
    if let Some(fps) = o.fps {
        anyhow::ensure!(
            fps.is_finite() && fps > 0.0,
            "--fps must be a number above 0, got {fps}"
        );
    }
    let mut frames = match o.synthetic {
        Some(n) => synthetic(n, o.size, &o),
        None => frames_from_files(&o)?,
    };
    tracked(&mut frames, &o);
    check_reply_to(&config.layout(), &frames, o.reply_to.as_deref())?;
    send(config, frames, o.raw).await
}

/// With `--fps`: every frame becomes a frame of one tracked video of `frames.len()` frames.
fn tracked(frames: &mut [Frame], o: &EnqueueOptions) {
    let (Some(fps), Some(_)) = (o.fps, &o.video_id) else {
        return;
    };
    let n = frames.len() as u64;
    for f in frames {
        f.job = std::mem::replace(&mut f.job, Job::new("")).tracked(n, fps);
    }
}

/// A `--reply-to` must start with the results stream of each frame's shard (workers answer
/// any other stream with `invalid_job`).
fn check_reply_to(
    layout: &hmr2_client::Layout,
    frames: &[Frame],
    reply_to: Option<&str>,
) -> anyhow::Result<()> {
    let Some(r) = reply_to else { return Ok(()) };
    for f in frames {
        let keys = producer::shard_keys(layout, f);
        if !keys.accepts_reply_to(r) {
            anyhow::bail!(
                "--reply-to {r:?} must start with {:?}, the results stream of job {:?}'s shard: \
                 workers answer any other stream with invalid_job",
                keys.results,
                f.job.job_id
            );
        }
    }
    Ok(())
}

/// The job of frame `i`: its id, the video, boxes, reply stream and outputs asked for.
fn job(
    o: &EnqueueOptions,
    job_id: String,
    video: Option<(String, u64)>,
    boxes: Option<Vec<[f64; 4]>>,
) -> Job<'static> {
    let mut job = Job::new(job_id).vertices(o.vertices);
    if let Some((video_id, n)) = video {
        job = job.video(video_id, n);
    }
    if let Some(b) = boxes {
        job = job.boxes(b);
    }
    if let Some(r) = &o.reply_to {
        job = job.reply_to(r.clone());
    }
    job
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
            let job = job(
                o,
                format!("{video}:{i}"),
                Some((video.clone(), i as u64)),
                Some(f.boxes.clone()),
            );
            Frame::new(job, f.jpeg.clone())
        })
        .collect()
}

fn frames_from_files(o: &EnqueueOptions) -> anyhow::Result<Vec<Frame>> {
    let mut files = image_files(&o.paths)?;
    if o.fps.is_some() {
        // The frames of one video, in name order.
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    }
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
        let job_id = match &o.video_id {
            Some(v) => format!("{v}:{i}"),
            None => format!("{name}-{stamp}-{i}"),
        };
        let video = o.video_id.clone().map(|v| (v, i as u64));
        let image = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        frames.push(Frame::new(job(o, job_id, video, frame_boxes), image));
    }
    Ok(frames)
}

async fn send(config: &Config, frames: Vec<Frame>, raw: bool) -> anyhow::Result<()> {
    let mut conn = hmr2_worker::connect(config)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&config.redis.url)))?;
    let layout = config.layout();
    let bar = ProgressBar::new(frames.len() as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let target = if layout.len() == 1 {
        layout.shard(0).jobs.clone()
    } else {
        format!("{} shards", layout.len())
    };
    bar.set_message(format!("enqueue → {target}"));
    producer::add_all_sharded(&mut conn, &layout, &frames, raw, |n| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish();
    for f in &frames {
        println!("{}", f.job.job_id);
    }
    Ok(())
}

pub use hmr2_client::image_files;

#[cfg(test)]
mod tests {
    use super::*;

    fn options(boxes: Option<PathBuf>, video_id: Option<&str>) -> EnqueueOptions {
        EnqueueOptions {
            paths: Vec::new(),
            synthetic: None,
            size: (320, 240),
            video_id: video_id.map(str::to_string),
            fps: None,
            boxes,
            raw: true,
            reply_to: Some("out".into()),
            vertices: true,
        }
    }

    #[test]
    fn folders_give_their_images_sorted_and_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.JPG", "a.png", "c.txt", "d.jpeg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let files = image_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.png", "b.JPG", "d.jpeg"]);
        let txt = dir.path().join("c.txt");
        assert_eq!(image_files(std::slice::from_ref(&txt)).unwrap(), [txt]);
        assert!(image_files(&[dir.path().join("missing.jpg")]).is_err());
    }

    #[test]
    fn fps_makes_the_files_one_tracked_video_in_name_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("f-2.jpg"), b"two").unwrap();
        std::fs::write(b.path().join("f-1.jpg"), b"one").unwrap();
        std::fs::write(a.path().join("f-3.jpg"), b"three").unwrap();
        let mut o = options(None, Some("clip"));
        o.paths = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        o.fps = Some(25.0);
        let mut frames = frames_from_files(&o).unwrap();
        tracked(&mut frames, &o);
        let images: Vec<&[u8]> = frames.iter().map(|f| f.image.as_slice()).collect();
        assert_eq!(images, [b"one".as_slice(), b"two", b"three"]);
        for (i, f) in frames.iter().enumerate() {
            let v = f.job.video.as_ref().expect("a tracked frame");
            assert_eq!((v.frames, v.fps), (3, 25.0));
            assert_eq!(f.job.frame_number, Some(i as u64));
            assert_eq!(f.job.video_id.as_deref(), Some("clip"));
        }
        // Without --fps the frames are not tracked.
        o.fps = None;
        let mut plain = frames_from_files(&o).unwrap();
        tracked(&mut plain, &o);
        assert!(plain.iter().all(|f| f.job.video.is_none()));
    }

    #[test]
    fn boxes_go_to_every_frame_or_by_file_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0.jpg", "1.jpg"] {
            std::fs::write(dir.path().join(name), b"img").unwrap();
        }
        let by_name = dir.path().join("boxes.json");
        std::fs::write(&by_name, br#"{"1.jpg": [[1, 2, 3, 4]]}"#).unwrap();
        let mut o = options(Some(by_name), Some("v"));
        o.paths = vec![dir.path().to_path_buf()];
        let frames = frames_from_files(&o).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].job.job_id, "v:0");
        assert!(frames[0].job.boxes.is_empty());
        assert_eq!(frames[1].job.boxes, vec![[1.0, 2.0, 3.0, 4.0]]);
        assert_eq!(frames[1].job.frame_number, Some(1));
        assert_eq!(frames[1].job.reply_to.as_deref(), Some("out"));
        assert!(frames[1].job.include.vertices);
        assert_eq!(frames[1].image, b"img");

        let all = dir.path().join("all.json");
        std::fs::write(&all, b"[[0, 0, 5, 5]]").unwrap();
        o.boxes = Some(all);
        let frames = frames_from_files(&o).unwrap();
        assert!(frames
            .iter()
            .all(|f| f.job.boxes == vec![[0.0, 0.0, 5.0, 5.0]]));
    }

    #[test]
    fn a_reply_to_must_name_the_results_stream_of_each_frame_shard() {
        let frame = |video: &str| {
            Frame::new(
                Job::new(format!("{video}:0")).video(video.to_string(), 0),
                vec![],
            )
        };
        let layout = hmr2_client::Layout::new("p", 4, true);
        let frames = [frame("video-a"), frame("video-a")];
        let shard = producer::shard_keys(&layout, &frames[0]).results.clone();
        assert!(check_reply_to(&layout, &frames, Some(&format!("{shard}:mine"))).is_ok());
        let err = check_reply_to(&layout, &frames, Some("p:results:mine")).unwrap_err();
        assert!(err.to_string().contains(&shard), "{err}");
        // Frames of two videos on two shards cannot share one reply stream.
        let other = (0..100)
            .map(|i| frame(&format!("video-{i}")))
            .find(|f| producer::shard_keys(&layout, f).results != shard)
            .unwrap();
        let mixed = [frames[0].clone(), other];
        assert!(check_reply_to(&layout, &mixed, Some(&format!("{shard}:mine"))).is_err());
        let single = hmr2_client::Layout::new("p", 1, false);
        assert!(check_reply_to(&single, &mixed, Some("p:results:x")).is_ok());
        assert!(check_reply_to(&single, &mixed, Some("q:results")).is_err());
    }
}
