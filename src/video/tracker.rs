//! The tracking stage: one reader per shard takes complete (or expired) videos from the
//! shard's tracking-job stream (blocking XREADGROUP: Redis wakes it when the last frame's step
//! queues the job, so `done` follows the last result by the tracking time), reclaims those of
//! trackers that died, and runs each on a blocking thread, `track.concurrency` at once, with
//! its lease renewed until the output is written. A video that cannot be tracked, or was
//! delivered more than `queue.max_deliveries` times, is dead-lettered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use hmr2_track::{FrameRecord, Settings};

use super::output::{self, Counts};
use super::smpl::{smpl_path, Params, SmplLayer};
use super::Spec;
use crate::config::Config;
use crate::error::QueueError;
use crate::metrics as m;
use crate::queue::{OutputWritten, Queue, TrackJob, VideoOutput};

/// Pause after a Redis error before a shard's reader tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Videos expired per shard per sweep.
const EXPIRE_BATCH: usize = 100;

struct Tracker {
    queue: Queue,
    config: Arc<Config>,
    worker: String,
    permits: Arc<Semaphore>,
    /// The SMPL layer, loaded the first time a video asks for vertices (`None` inside: it
    /// could not be loaded, and why was logged).
    smpl: Mutex<Option<Option<Arc<SmplLayer>>>>,
    tasks: TaskTracker,
}

/// Runs the tracking stage on every shard until `stop`; videos being tracked then get
/// `shutdown.grace_seconds` to finish (what is left stays pending for other trackers).
pub async fn run_tracker(
    queue: Queue,
    config: Arc<Config>,
    worker: String,
    stop: CancellationToken,
) {
    let t = Arc::new(Tracker {
        permits: Arc::new(Semaphore::new(config.track.concurrency)),
        queue,
        config,
        worker,
        smpl: Mutex::new(None),
        tasks: TaskTracker::new(),
    });
    for status in m::VIDEO_STATUSES {
        counter!(m::VIDEOS, "status" => status).increment(0);
    }
    tracing::info!(
        concurrency = t.config.track.concurrency,
        smoothing = ?t.config.track.smoothing,
        max_gap_s = t.config.track.max_gap_s,
        "tracker started"
    );
    let readers = TaskTracker::new();
    for k in 0..t.queue.shards() {
        readers.spawn(serve_shard(t.clone(), k, stop.clone()));
    }
    readers.close();
    readers.wait().await;
    t.tasks.close();
    let grace = Duration::from_secs(t.config.shutdown.grace_seconds);
    if tokio::time::timeout(grace, t.tasks.wait()).await.is_err() {
        tracing::warn!(
            "grace period over: videos still being tracked stay pending for other trackers"
        );
    }
}

/// Expires videos whose frames stopped coming and keeps the video gauges, every
/// `video.expire_interval_ms`, until `stop`.
pub async fn sweep_videos(queue: Queue, config: Arc<Config>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(config.video.expire_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (mut open, mut waiting, mut known) = (0, 0, true);
        for k in 0..queue.shards() {
            let shard = queue.shard(k);
            match shard.expire_videos(EXPIRE_BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    shard = k,
                    videos = n,
                    "videos expired: their frames stopped coming"
                ),
                Err(e) => tracing::warn!(shard = k, error = %e, "cannot look for expired videos"),
            }
            match shard.video_counts().await {
                Ok((o, w)) => {
                    open += o;
                    waiting += w;
                }
                Err(_) => known = false,
            }
        }
        if known {
            gauge!(m::VIDEOS_OPEN).set(open as f64);
            gauge!(m::VIDEOS_WAITING).set(waiting as f64);
        }
    }
}

async fn serve_shard(t: Arc<Tracker>, k: usize, stop: CancellationToken) {
    let shard = t.queue.shard(k);
    let claim_every = Duration::from_millis(t.config.queue.claim_interval_ms);
    let block_ms = t
        .config
        .queue
        .block_ms
        .min(t.config.queue.claim_interval_ms)
        .max(1);
    let mut conn = None;
    let mut last_claim: Option<Instant> = None;
    while !stop.is_cancelled() {
        let job = if last_claim.is_none_or(|c| c.elapsed() >= claim_every) {
            last_claim = Some(Instant::now());
            shard.claim_track_orphan().await
        } else {
            Ok(None)
        };
        let job = match job {
            Ok(Some(job)) => Ok(Some(job)),
            Ok(None) => {
                if conn.is_none() {
                    match t.queue.blocking_connection().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::warn!(shard = k, error = %e, "tracker cannot connect to redis");
                            pause(&stop).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = shard.read_track_job(c, block_ms) => r,
                }
            }
            Err(e) => Err(e),
        };
        match job {
            Ok(Some(job)) => {
                // One job held waiting for a permit per shard at most: read the next only once
                // this one runs.
                let (started_tx, started) = oneshot::channel();
                let span = tracing::info_span!("video", video_id = %job.video_id, shard = k, entry = %job.id);
                t.tasks
                    .spawn(handle(t.clone(), job, started_tx).instrument(span));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = started => {}
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(shard = k, error = %e, "tracker cannot read the tracking jobs");
                conn = None;
                pause(&stop).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(ERROR_PAUSE) => {}
    }
}

/// Runs one tracking job with its lease renewed until it ends.
async fn handle(t: Arc<Tracker>, job: TrackJob, started: oneshot::Sender<()>) {
    let renew_every = Duration::from_millis((t.config.queue.claim_idle_ms / 3).max(1));
    let shard = t.queue.shard(job.shard);
    let work = async {
        let permit = t
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let _ = started.send(());
        let r = track_one(&t, &job).await;
        drop(permit);
        r
    };
    tokio::pin!(work);
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = renew.tick() => match shard.renew_track_job(&job.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(video_id = %job.video_id, "another tracker took this video over; leaving it");
                    return;
                }
                Err(e) => tracing::warn!(video_id = %job.video_id, error = %e, "cannot renew the lease of a video being tracked"),
            },
        }
    };
    if let Err(e) = result {
        tracing::warn!(video_id = %job.video_id, error = %e, "video not written; it stays pending and will be tracked again");
    }
}

async fn track_one(t: &Arc<Tracker>, job: &TrackJob) -> Result<(), QueueError> {
    let shard = t.queue.shard(job.shard);
    let keys = shard.keys();
    if job.deliveries > t.config.queue.max_deliveries {
        let why = format!(
            "tracking job delivered {} times (max_deliveries = {}); giving up",
            job.deliveries, t.config.queue.max_deliveries
        );
        return dead_letter(t, job, "too_many_deliveries", &why).await;
    }
    let state = shard.video_state(&job.video_id).await?;
    if state.done {
        // Written already (a job queued twice, by a race of expiry and the last frame): the
        // output step acknowledges it and writes nothing.
        let out = keys.video_output(&job.video_id, None).unwrap_or_default();
        let empty = VideoOutput {
            video_id: &job.video_id,
            stream: &out,
            frames: &[],
            done: "",
        };
        shard.write_video_output(job, &empty).await?;
        return Ok(());
    }
    let spec: Spec = match serde_json::from_str(&state.spec) {
        Ok(s) => s,
        Err(_) => {
            let why = "the video's recorded state is gone (Redis lost it, or it expired)";
            return dead_letter(t, job, "video_state_lost", why).await;
        }
    };
    if spec.frames > t.config.limits.max_video_frames {
        let why = format!(
            "video.frames is {}, above limits.max_video_frames ({})",
            spec.frames, t.config.limits.max_video_frames
        );
        return dead_letter(t, job, "invalid_job", &why).await;
    }
    let Some(stream) = keys.video_output(&job.video_id, spec.reply_to.as_deref()) else {
        return dead_letter(
            t,
            job,
            "invalid_job",
            "video.reply_to is outside the results streams",
        )
        .await;
    };
    let mut records: Vec<Option<FrameRecord>> = vec![None; spec.frames as usize];
    for (n, bytes) in &state.frames {
        match (records.get_mut(*n as usize), FrameRecord::decode(bytes)) {
            (Some(slot), Ok(r)) => *slot = Some(r),
            (_, Err(e)) => {
                tracing::warn!(frame = n, error = %e, "unreadable frame record; the frame counts as missing")
            }
            (None, _) => {}
        }
    }
    let settings = Settings {
        fps: spec.fps,
        max_gap_s: t.config.track.max_gap_s,
        smoothing: t.config.track.smoothing.into(),
    };
    let smpl = if records.iter().flatten().any(|r| r.vertices) {
        t.smpl_layer()
    } else {
        None
    };
    let video_id = job.video_id.clone();
    let expired = job.expired;
    let first_ms = state.first_ms;
    let fps = spec.fps;
    let frames_n = spec.frames;
    let built = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let tracked = hmr2_track::track(&records, &settings);
        let vertices = smpl.as_deref().map(|l| vertices_of(l, &records, &tracked));
        let frames = output::frames(&video_id, &records, &tracked, |n, i| {
            vertices.as_ref().and_then(|v| v.get(&(n, i)).cloned())
        });
        let frames: Vec<String> = frames.iter().map(|f| f.to_json()).collect();
        let tracking_ms = started.elapsed().as_secs_f64() * 1e3;
        let total_ms = now_ms().saturating_sub(first_ms) as f64;
        let done = output::done(
            &video_id,
            expired,
            frames_n,
            Counts::of(&records),
            fps,
            &tracked,
            tracking_ms,
            total_ms,
        );
        (
            frames,
            done.to_json(),
            tracked.tracks.len(),
            started.elapsed(),
        )
    })
    .await;
    let (frames, done, tracks, took) = match built {
        Ok(b) => b,
        Err(e) => {
            let why = format!("the tracker failed on this video: {e}");
            return dead_letter(t, job, "tracking_failed", &why).await;
        }
    };
    histogram!(m::STAGE_DURATION, "stage" => m::stage::TRACK).record(took.as_secs_f64());
    let out = VideoOutput {
        video_id: &job.video_id,
        stream: &stream,
        frames: &frames,
        done: &done,
    };
    match shard.write_video_output(job, &out).await? {
        OutputWritten::Done => {
            let status = if expired { "expired" } else { "ok" };
            counter!(m::VIDEOS, "status" => status).increment(1);
            histogram!(m::TRACKS_PER_VIDEO).record(tracks as f64);
            histogram!(m::VIDEO_DURATION).record(now_ms().saturating_sub(first_ms) as f64 / 1e3);
            tracing::info!(video_id = %job.video_id, %status, tracks, frames = frames.len(), tracking_ms = took.as_secs_f64() * 1e3, output = %stream, "video written");
        }
        OutputWritten::NotPending => {}
        OutputWritten::Unusable(why) => {
            let why = format!("the output stream {stream} cannot take the video: {why}");
            dead_letter(t, job, "invalid_job", &why).await?;
        }
    }
    Ok(())
}

async fn dead_letter(t: &Tracker, job: &TrackJob, code: &str, why: &str) -> Result<(), QueueError> {
    tracing::warn!(video_id = %job.video_id, code, why, "dead-lettering a video");
    if t.queue
        .shard(job.shard)
        .dead_letter_video(job, code, why, &t.worker)
        .await?
    {
        counter!(m::VIDEOS, "status" => "dead_lettered").increment(1);
    }
    Ok(())
}

impl Tracker {
    fn smpl_layer(&self) -> Option<Arc<SmplLayer>> {
        let mut slot = self.smpl.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| {
            let path = smpl_path(&self.config.model.path);
            match SmplLayer::load(&path) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "no SMPL layer: tracked videos come without vertices (the exporter writes it beside the model)");
                    None
                }
            }
        })
        .clone()
    }
}

/// Vertices of every person of the frames that asked for them, from the smoothed parameters.
fn vertices_of(
    layer: &SmplLayer,
    records: &[Option<FrameRecord>],
    tracked: &hmr2_track::Tracked,
) -> std::collections::HashMap<(usize, usize), Vec<[f32; 3]>> {
    use hmr2_track::record::matrix_from_quat;
    let mut at = Vec::new();
    let mut rots = Vec::new();
    for (n, r) in records.iter().enumerate() {
        if !r.as_ref().is_some_and(|r| r.vertices) {
            continue;
        }
        for (i, p) in tracked.frames.get(n).into_iter().flatten().enumerate() {
            at.push((n, i));
            let body: Vec<[[f32; 3]; 3]> = p
                .obs
                .body_pose
                .iter()
                .map(|q| matrix_from_quat(*q))
                .collect();
            rots.push((matrix_from_quat(p.obs.global_orient), body, p.obs.betas));
        }
    }
    let params: Vec<Params<'_>> = rots
        .iter()
        .map(|(go, body, betas)| Params {
            global_orient: *go,
            body_pose: body,
            betas,
        })
        .collect();
    match layer.vertices(&params) {
        Ok(v) => at.into_iter().zip(v).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "SMPL layer failed: this video comes without vertices");
            Default::default()
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
