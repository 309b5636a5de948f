//! Videos (DESIGN §13): which frame of which tracked video a job is ([`VideoTag`]), its compact
//! record for the tracker, and the tracking stage itself (`tracker`): it takes complete (or
//! expired) videos from the shards' tracking-job streams, tracks and smooths them with
//! [`hmr2_track`], and writes each video's output as one atomic whole. It needs no GPU: it runs
//! inside every worker process (`track.in_worker`) and alone as `hmr2-worker track`.

mod output;
mod smpl;
mod tracker;

use hmr2_client::{BoxSource, Echo, Job, Keys, Person, Video};
use hmr2_track::{record, FrameRecord, FrameStatus, Observation};

pub use smpl::SmplLayer;
pub use tracker::{run_tracker, sweep_videos};

/// The frame of a tracked video a job is.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTag {
    pub video_id: String,
    pub frame_number: u64,
    /// The video's frame count.
    pub frames: u64,
    /// The video object as recorded (canonical JSON): every frame of a video must agree.
    pub spec: String,
    /// The job asked for vertices.
    pub vertices: bool,
}

/// The video object as the worker records it: `{"fps":F,"frames":N,"reply_to":R}` (keys
/// sorted, `reply_to` null when absent), the same text for the same object however a producer
/// wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Spec {
    pub fps: f64,
    pub frames: u64,
    pub reply_to: Option<String>,
}

impl VideoTag {
    /// The video frame `job` is, if it carries a `video` object; an error (the job is
    /// `invalid_job`) when the video's `reply_to` is outside the shard's results streams.
    /// A video of more than `max_frames` frames is `invalid_job` too.
    pub fn of(job: &Job<'_>, keys: &Keys, max_frames: u64) -> Result<Option<VideoTag>, String> {
        let Some(v) = &job.video else {
            return Ok(None);
        };
        // The parser requires both with a `video` object.
        let (Some(video_id), Some(frame_number)) = (job.video_id.as_deref(), job.frame_number)
        else {
            return Err("a frame of a tracked video needs video_id and frame_number".into());
        };
        Self::from_parts(
            video_id,
            frame_number,
            v,
            job.include.vertices,
            keys,
            max_frames,
        )
    }

    /// The video frame a rejected job is, when what could be read of it says so (its `video`
    /// object, `video_id` and `frame_number` well-formed): it is then an error frame of its
    /// video, so the video completes rather than expiring.
    pub fn of_echo(echo: &Echo, keys: &Keys, max_frames: u64) -> Option<VideoTag> {
        let (Some(v), Some(video_id), Some(n)) = (&echo.video, &echo.video_id, echo.frame_number)
        else {
            return None;
        };
        if n >= v.frames {
            return None;
        }
        Self::from_parts(video_id, n, v, false, keys, max_frames)
            .ok()
            .flatten()
    }

    fn from_parts(
        video_id: &str,
        frame_number: u64,
        v: &Video<'_>,
        vertices: bool,
        keys: &Keys,
        max_frames: u64,
    ) -> Result<Option<VideoTag>, String> {
        if v.frames > max_frames {
            return Err(format!(
                "video.frames is {}, above limits.max_video_frames ({max_frames})",
                v.frames
            ));
        }
        let reply_to = v.reply_to.as_deref();
        if keys.video_output(video_id, reply_to).is_none() {
            return Err(format!(
                "video.reply_to must start with \"{}:\"; got {:?}",
                keys.results,
                reply_to.unwrap_or_default()
            ));
        }
        let spec = Spec {
            fps: v.fps,
            frames: v.frames,
            reply_to: reply_to.map(str::to_string),
        };
        Ok(Some(VideoTag {
            video_id: video_id.to_string(),
            frame_number,
            frames: v.frames,
            spec: serde_json::to_string(&spec).expect("a spec serialises"),
            vertices,
        }))
    }

    /// What the publish or dead-letter step records of this frame, with its `record`.
    pub(crate) fn record_frame<'a>(&'a self, record: &'a [u8]) -> crate::queue::RecordFrame<'a> {
        crate::queue::RecordFrame {
            video_id: &self.video_id,
            spec: &self.spec,
            frames: self.frames,
            frame_number: self.frame_number,
            record,
        }
    }
}

/// The compact record of an answered frame: what tracking and smoothing need of each person.
pub(crate) fn ok_record(people: &[Person], image_size: [u32; 2], vertices: bool) -> FrameRecord {
    FrameRecord {
        status: FrameStatus::Ok,
        image_size,
        vertices,
        people: people.iter().filter_map(observation).collect(),
    }
}

/// The record of a frame answered with an error.
pub(crate) fn error_record(code: &str, message: &str, image_size: Option<[u32; 2]>) -> FrameRecord {
    FrameRecord {
        status: FrameStatus::Error {
            code: code.to_string(),
            message: message.to_string(),
        },
        image_size: image_size.unwrap_or([0, 0]),
        vertices: false,
        people: Vec::new(),
    }
}

fn observation(p: &Person) -> Option<Observation> {
    let mut body_pose = [[0.0f32; 4]; record::BODY_JOINTS];
    if p.body_pose.len() != record::BODY_JOINTS
        || p.betas.len() != record::BETAS
        || p.keypoints_3d.len() != record::KEYPOINTS
    {
        return None;
    }
    for (q, m) in body_pose.iter_mut().zip(&p.body_pose) {
        *q = record::quat_from_matrix(*m);
    }
    let mut keypoints_3d = [[0.0f32; 3]; record::KEYPOINTS];
    keypoints_3d.copy_from_slice(&p.keypoints_3d);
    let mut betas = [0.0f32; record::BETAS];
    betas.copy_from_slice(&p.betas);
    Some(Observation {
        bbox: p.bbox,
        score: p.score,
        box_source: match p.box_source {
            BoxSource::Job => record::BoxSource::Job,
            BoxSource::Detector => record::BoxSource::Detector,
            BoxSource::Frame => record::BoxSource::Frame,
        },
        global_orient: record::quat_from_matrix(p.global_orient),
        body_pose,
        betas,
        cam_t: p.pred_cam_t_full,
        focal_length: p.focal_length,
        keypoints_3d,
    })
}

/// `hmr2-worker track`: the tracking stage alone, for CPU-only pods (no model, no GPU): tracks
/// videos and expires stale ones on every shard, serves `/metrics`, `/healthz` and `/readyz`,
/// until `shutdown`; then gives the videos being tracked `shutdown.grace_seconds`.
pub async fn run_standalone(
    config: crate::config::Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::worker::RunError> {
    use std::sync::Arc;

    use crate::health::{Health, Input};
    use crate::worker::RunError;

    config.validate()?;
    let handle = crate::metrics::install();
    let health = Arc::new(Health::new(std::time::Duration::from_secs(
        config.gpu.stall_timeout_s,
    )));
    let all = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .map_err(|e| RunError::Listen(config.http.listen.clone(), e))?;
    let http = tokio::spawn(crate::http::serve(
        listener,
        handle,
        health.clone(),
        all.clone(),
    ));
    let queue = crate::queue::Queue::new(&config)?;
    if let Err(e) = crate::worker::check_redis(&config).await {
        all.cancel();
        return Err(e);
    }
    for k in 0..queue.shards() {
        if let Err(e) = queue.shard(k).ensure_tracker_group().await {
            all.cancel();
            return Err(e.into());
        }
    }
    // No model here: the inputs a GPU worker has are up by construction.
    health.set(Input::Warm, Ok(()));
    health.set(Input::Batches, Ok(()));
    health.set(Input::RedisRead, Ok(()));
    health.set(Input::RedisPublish, Ok(()));
    let config = Arc::new(config);
    let worker = config.consumer_name();
    tracing::info!(
        redis = %crate::config::redact_url(&config.redis.url),
        shards = queue.shards(),
        listen = %config.http.listen,
        "tracker-only process started"
    );
    let sweeper = tokio::spawn(sweep_videos(queue.clone(), config.clone(), all.clone()));
    run_tracker(queue, config, worker, shutdown).await;
    all.cancel();
    let _ = sweeper.await;
    let _ = http.await;
    tracing::info!("tracker stopped");
    Ok(())
}
