//! The video side of the queue (DESIGN §13): the frame-recording arguments of the publish and
//! dead-letter steps, the tracking-job stream (`<tag>:videos`, group `<tag>-trackers`), expiry,
//! and the atomic write of a tracked video's output. Every command touches one shard's slot.

use redis::streams::{StreamPendingCountReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script, ScriptInvocation};

use super::{Conn, Keys, Shard};
use crate::error::QueueError;

/// Tracking-job entries written per pipelined round trip while an output is built.
const OUTPUT_CHUNK: usize = 256;

/// How long the temporary stream of an output being built may outlive a tracker that died
/// while building it, seconds.
const BUILDING_TTL_S: u64 = 3600;

/// The frame of a tracked video a publish or dead-letter step records (DESIGN §13).
#[derive(Debug, Clone)]
pub struct RecordFrame<'a> {
    pub video_id: &'a str,
    /// The video object as this worker writes it: the first one recorded fixes the video.
    pub spec: &'a str,
    pub frames: u64,
    pub frame_number: u64,
    /// The frame's compact record ([`hmr2_track::FrameRecord::encode`]).
    pub record: &'a [u8],
}

impl RecordFrame<'_> {
    /// Bytes the record adds to Redis (for the out-of-memory decision of the step).
    pub(crate) fn adds(&self) -> u64 {
        (self.record.len() + self.spec.len() + 64) as u64
    }
}

/// Appends the ten arguments of `video.lua`'s block to a publish or dead-letter step.
pub(super) fn video_block(
    inv: &mut ScriptInvocation,
    keys: &Keys,
    v: Option<&RecordFrame>,
    ttl_s: u64,
) {
    match v {
        Some(v) => {
            inv.arg(keys.video_state(v.video_id))
                .arg(keys.video_frames(v.video_id))
                .arg(&keys.videos_open)
                .arg(&keys.videos)
                .arg(v.video_id)
                .arg(v.spec)
                .arg(v.frames)
                .arg(v.frame_number)
                .arg(v.record)
                .arg(ttl_s);
        }
        None => {
            for _ in 0..10 {
                inv.arg("");
            }
        }
    }
}

/// The scripts of the video side.
#[derive(Clone)]
pub(super) struct VideoScripts {
    expire: Script,
    output: Script,
    dead: Script,
}

impl VideoScripts {
    pub(super) fn new() -> Self {
        VideoScripts {
            expire: Script::new(include_str!("video_expire.lua")),
            output: Script::new(&format!(
                "#!lua flags=allow-oom\n{}",
                include_str!("video_output.lua")
            )),
            dead: Script::new(include_str!("video_dead.lua")),
        }
    }
}

impl super::Queue {
    /// How long a written (or dead-lettered) video's `done` marker stays, seconds: as long as
    /// its output, and at least as long as its recorded state could have, so a late duplicate
    /// of one of its frames is not taken for the first frame of a new video.
    fn done_marker_ttl_s(&self) -> u64 {
        self.reply_ttl_s.max(2 * self.video_ttl_s + 3600)
    }
}

/// One tracking job: a complete (or expired) video to track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackJob {
    /// Its entry id in the shard's tracking-job stream.
    pub id: String,
    pub shard: usize,
    pub video_id: String,
    /// Queued by expiry, not by its last frame.
    pub expired: bool,
    /// Times delivered, this one included.
    pub deliveries: u64,
}

/// What Redis holds of a video being tracked.
#[derive(Debug, Clone, Default)]
pub struct VideoState {
    /// The video object the first recorded frame carried.
    pub spec: String,
    /// When its first frame was recorded, Redis time, milliseconds since the epoch.
    pub first_ms: u64,
    /// The frames recorded: frame number and compact record.
    pub frames: Vec<(u64, Vec<u8>)>,
    /// The video was tracked and written already (only its marker is left).
    pub done: bool,
}

/// A tracked video's output, ready to write.
pub struct VideoOutput<'a> {
    pub video_id: &'a str,
    pub stream: &'a str,
    /// The `frame` JSON of each output frame, in frame order.
    pub frames: &'a [String],
    pub done: &'a str,
}

/// What writing a video's output did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputWritten {
    Done,
    /// The tracking job was no longer this worker's, or the video was written already.
    NotPending,
    /// The output stream cannot take it (ACL, a key of another type): nothing written.
    Unusable(String),
}

impl redis::FromRedisValue for OutputWritten {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        match super::Written::from_redis_value(v)? {
            super::Written::Done => Ok(OutputWritten::Done),
            super::Written::NotPending => Ok(OutputWritten::NotPending),
            super::Written::ReplyUnusable(why) => Ok(OutputWritten::Unusable(why)),
            super::Written::VideoDisagrees(_) => Err("the output step answered -2".into()),
        }
    }
}

impl<'q> Shard<'q> {
    /// Creates the shard's tracking-job group (and stream) when missing.
    pub async fn ensure_tracker_group(self) -> Result<(), QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let r: Result<String, _> = c
            .xgroup_create_mkstream(&keys.videos, &keys.trackers, "0")
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `block_ms` for a new tracking job of the shard, on a dedicated connection
    /// (Redis wakes the reader when the last frame's step queues one: no polling).
    pub async fn read_track_job(
        self,
        conn: &mut Conn,
        block_ms: u64,
    ) -> Result<Option<TrackJob>, QueueError> {
        let keys = self.keys();
        let opts = StreamReadOptions::default()
            .group(&keys.trackers, &self.queue.consumer)
            .count(1)
            .block(block_ms as usize);
        let r: Result<Option<StreamReadReply>, _> =
            conn.xread_options(&[&keys.videos], &[">"], &opts).await;
        let reply = match r {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_tracker_group().await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .next()
            .map(|e| self.track_job(e, 1)))
    }

    fn track_job(self, e: redis::streams::StreamId, deliveries: u64) -> TrackJob {
        TrackJob {
            shard: self.k,
            video_id: e.get::<String>("video_id").unwrap_or_default(),
            expired: e.get::<String>("expired").is_some_and(|v| v == "1"),
            id: e.id,
            deliveries,
        }
    }

    /// Claims the oldest tracking job idle longer than `claim_idle_ms` (its tracker presumably
    /// died), if any.
    pub async fn claim_track_orphan(self) -> Result<Option<TrackJob>, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&keys.videos)
            .arg(&keys.trackers)
            .arg("IDLE")
            .arg(self.queue.claim_idle_ms)
            .arg("-")
            .arg("+")
            .arg(1);
        let pending: StreamPendingCountReply = match cmd.query_async(&mut c).await {
            Ok(p) => p,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_tracker_group().await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let Some(p) = pending.ids.into_iter().next() else {
            return Ok(None);
        };
        let claimed: redis::streams::StreamClaimReply = c
            .xclaim(
                &keys.videos,
                &keys.trackers,
                &self.queue.consumer,
                self.queue.claim_idle_ms,
                &[&p.id],
            )
            .await?;
        match claimed.ids.into_iter().next() {
            Some(e) => Ok(Some(self.track_job(e, p.times_delivered as u64 + 1))),
            None => {
                // Gone from the stream (deleted by hand): nothing to track.
                let _: u64 = c.xack(&keys.videos, &keys.trackers, &[&p.id]).await?;
                Ok(None)
            }
        }
    }

    /// Renews this worker's lease on a tracking job; false when it is no longer this worker's.
    pub async fn renew_track_job(self, id: &str) -> Result<bool, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let lost: Vec<String> = self
            .queue
            .renew
            .key(&keys.videos)
            .arg(&keys.trackers)
            .arg(&self.queue.consumer)
            .arg(id)
            .invoke_async(&mut c)
            .await?;
        Ok(lost.is_empty())
    }

    /// What Redis holds of a video.
    pub async fn video_state(self, video_id: &str) -> Result<VideoState, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let state: std::collections::HashMap<String, Vec<u8>> =
            c.hgetall(keys.video_state(video_id)).await?;
        let frames: Vec<(u64, Vec<u8>)> = if state.contains_key("spec") {
            let raw: Vec<(String, Vec<u8>)> = c.hgetall(keys.video_frames(video_id)).await?;
            raw.into_iter()
                .filter_map(|(k, v)| k.parse().ok().map(|n| (n, v)))
                .collect()
        } else {
            Vec::new()
        };
        let text = |k: &str| {
            state
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Ok(VideoState {
            spec: text("spec").unwrap_or_default(),
            first_ms: text("first_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            frames,
            done: state.contains_key("done"),
        })
    }

    /// Writes a tracked video's output as one whole and forgets the video (`video_output.lua`):
    /// the frame entries are built under a temporary stream of this consumer, then the step
    /// appends `done`, moves it to the output stream, deletes the recorded state and
    /// acknowledges the tracking job.
    pub async fn write_video_output(
        self,
        job: &TrackJob,
        out: &VideoOutput<'_>,
    ) -> Result<OutputWritten, QueueError> {
        let keys = self.keys();
        let tmp = format!("{}:building:{}", out.stream, self.queue.consumer);
        let mut c = self.queue.conn().await?;
        let _: () = c.del(&tmp).await?;
        for chunk in out.frames.chunks(OUTPUT_CHUNK) {
            let mut p = redis::pipe();
            for f in chunk {
                p.cmd("XADD")
                    .arg(&tmp)
                    .arg("*")
                    .arg("frame")
                    .arg(f.as_str())
                    .ignore();
            }
            p.cmd("EXPIRE").arg(&tmp).arg(BUILDING_TTL_S).ignore();
            let () = p.query_async(&mut c).await?;
        }
        let q = self.queue;
        Ok(q.videos
            .output
            .key(&keys.videos)
            .arg(&keys.trackers)
            .arg(&job.id)
            .arg(&tmp)
            .arg(out.stream)
            .arg(keys.video_state(out.video_id))
            .arg(keys.video_frames(out.video_id))
            .arg(&keys.videos_open)
            .arg(out.video_id)
            .arg(out.done)
            .arg(q.reply_ttl_s)
            .arg(q.done_marker_ttl_s())
            .invoke_async(&mut c)
            .await?)
    }

    /// Dead-letters a video that cannot be tracked; false when the job was no longer pending.
    pub async fn dead_letter_video(
        self,
        job: &TrackJob,
        code: &str,
        message: &str,
        worker: &str,
    ) -> Result<bool, QueueError> {
        let keys = self.keys();
        let q = self.queue;
        let mut c = q.conn().await?;
        let n: i64 = q
            .videos
            .dead
            .key(&keys.videos)
            .key(&keys.dead)
            .arg(&keys.trackers)
            .arg(&job.id)
            .arg(q.dead_maxlen)
            .arg(&job.video_id)
            .arg(code)
            .arg(message)
            .arg(job.deliveries)
            .arg(worker)
            .arg(keys.video_state(&job.video_id))
            .arg(keys.video_frames(&job.video_id))
            .arg(&keys.videos_open)
            .arg(q.done_marker_ttl_s())
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Queues a tracking job for each of the shard's videos past their expiry; how many.
    pub async fn expire_videos(self, limit: usize) -> Result<u64, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        Ok(self
            .queue
            .videos
            .expire
            .key(&keys.videos_open)
            .key(&keys.videos)
            .arg(keys.video_state(""))
            .arg(limit)
            .invoke_async(&mut c)
            .await?)
    }

    /// Videos of the shard still collecting frames, and complete ones waiting to be tracked.
    pub async fn video_counts(self) -> Result<(u64, u64), QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let open: u64 = c.zcard(&keys.videos_open).await?;
        let waiting: u64 = c.xlen(&keys.videos).await?;
        Ok((open, waiting))
    }
}
