//! What an upload pipeline needs from Redis: add jobs to `{prefix}:jobs`, read results back,
//! and add whole tracked videos and wait for their output (DESIGN §13: [`add_video`],
//! [`wait_video`], [`read_video`]). Generic over any async `redis` connection (multiplexed,
//! connection manager, pooled).
//!
//! ```no_run
//! # async fn run() -> redis::RedisResult<()> {
//! use hmr2_client::{producer, Frame, Job, Keys};
//!
//! let mut conn = redis::Client::open("redis://127.0.0.1:6379")?
//!     .get_multiplexed_async_connection()
//!     .await?;
//! let keys = Keys::new("hmr2");
//! let frame = Frame::new(Job::new("video-7:0").video("video-7", 0), std::fs::read("0.jpg").unwrap());
//! let entry_id = producer::add(&mut conn, &keys, &frame, true).await?;
//! let page = producer::read_results(&mut conn, &keys.results, "-", 100).await?;
//! for reply in &page {
//!     match &reply.result {
//!         Ok(result) => println!("{}: {:?}", reply.job_id, result.status),
//!         Err(unreadable) => eprintln!("skipped {unreadable}"),
//!     }
//! }
//! // The next page starts after the last entry, readable or not.
//! let after = page.last().map_or("-", |r| r.entry_id.as_str());
//! # let _ = (entry_id, after);
//! # Ok(())
//! # }
//! ```
//!
//! A tracked video: every frame in one call, then the tracked output once the video is done.
//!
//! ```no_run
//! # async fn run() -> redis::RedisResult<()> {
//! use std::time::Duration;
//! use hmr2_client::{producer, Layout};
//!
//! let mut conn = redis::Client::open("redis://127.0.0.1:6379")?
//!     .get_multiplexed_async_connection()
//!     .await?;
//! let layout = Layout::new("hmr2", 1, false);
//! let images = (0..120).map(|n| std::fs::read(format!("frames/{n:05}.jpg")).unwrap());
//! let options = producer::VideoOptions::default();
//! let added = producer::add_video(&mut conn, &layout, "clip-7", images, 29.97, &options).await?;
//! match producer::wait_video(&mut conn, &added.output, "clip-7", Duration::from_secs(600)).await? {
//!     Some(video) => println!("{:?}: {} frames, {} tracks", video.done.status,
//!                             video.frames.len(), video.done.tracks.len()),
//!     None => eprintln!("not done yet"),
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{ErrorKind, RedisError, RedisResult};
use thiserror::Error;

use crate::job::{Frame, Job, Video};
use crate::keys::{Keys, Layout, VideoShard};
use crate::model::ModelInfo;
use crate::result::JobResult;
use crate::video::{VideoDone, VideoFrame};
use crate::MAX_ID_BYTES;

/// Jobs per pipelined round trip in [`add_all`].
const CHUNK: usize = 64;
/// Entries per XRANGE page in [`results_for_video`], and per XREAD in [`wait_video`].
const PAGE: usize = 500;
/// The longest one XREAD of [`wait_video`] blocks: below the `redis` crate's default response
/// timeout (500 ms), so a connection with default settings does not give up on the reply.
const BLOCK_SLICE: Duration = Duration::from_millis(300);

/// One entry of a reply stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The result's own stream entry id (a cursor for [`read_results`]), readable or not.
    pub entry_id: String,
    /// The entry's `job_id` field; empty when the job was unreadable, or the field was.
    pub job_id: String,
    /// The entry's `result` field, or why it cannot be read.
    pub result: Result<JobResult, Unreadable>,
}

/// A reply-stream entry without a readable result: no `result` field, one that is not UTF-8,
/// or one that is not a v1 result (not JSON, a field of the wrong type, an unknown `status`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{stream} entry {entry_id}: {reason}")]
pub struct Unreadable {
    /// The reply stream.
    pub stream: String,
    /// The entry's id.
    pub entry_id: String,
    /// What is wrong with it.
    pub reason: String,
}

fn xadd(keys: &Keys, frame: &Frame, raw: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&keys.jobs).arg("*");
    for (k, v) in frame.fields(raw) {
        cmd.arg(k).arg(v.as_slice());
    }
    cmd
}

/// Adds one frame to `{prefix}:jobs` (`XADD ... *`): an `image` field with the raw bytes when
/// `raw`, base64 inside the JSON otherwise. Returns the job's stream entry id.
pub async fn add<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    frame: &Frame,
    raw: bool,
) -> RedisResult<String> {
    xadd(keys, frame, raw).query_async(conn).await
}

/// Adds `frames` to `{prefix}:jobs` in pipelined chunks of 64; returns their entry ids, in
/// order. `progress` is called after every chunk with the number of frames added so far.
pub async fn add_all<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    frames: &[Frame],
    raw: bool,
    mut progress: impl FnMut(usize),
) -> RedisResult<Vec<String>> {
    let mut ids = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for f in chunk {
            pipe.add_command(xadd(keys, f, raw));
        }
        let chunk_ids: Vec<String> = pipe.query_async(conn).await?;
        ids.extend(chunk_ids);
        progress(ids.len());
    }
    Ok(ids)
}

/// The keys of the shard `frame` goes to (by its `video_id`, else its `job_id`).
pub fn shard_keys<'a>(layout: &'a Layout, frame: &Frame) -> &'a Keys {
    layout.keys_for(frame.job.video_id.as_deref(), &frame.job.job_id)
}

/// Adds `frames` to their shards' job streams ([`shard_keys`]); returns their entry ids, in
/// the order of `frames`. Each pipelined chunk of 64 goes to one shard, so on Redis Cluster a
/// chunk is one round trip to one master. `progress` is called after every chunk with the
/// number of frames added so far.
pub async fn add_all_sharded<C: ConnectionLike>(
    conn: &mut C,
    layout: &Layout,
    frames: &[Frame],
    raw: bool,
    mut progress: impl FnMut(usize),
) -> RedisResult<Vec<String>> {
    let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); layout.len()];
    for (i, f) in frames.iter().enumerate() {
        by_shard[shard_keys(layout, f).shard].push(i);
    }
    let mut ids = vec![String::new(); frames.len()];
    let mut done = 0;
    for (shard, members) in by_shard.iter().enumerate() {
        let keys = layout.shard(shard);
        for chunk in members.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.add_command(xadd(keys, &frames[i], raw));
            }
            let chunk_ids: Vec<String> = pipe.query_async(conn).await?;
            for (&i, id) in chunk.iter().zip(chunk_ids) {
                ids[i] = id;
            }
            done += chunk.len();
            progress(done);
        }
    }
    Ok(ids)
}

/// Up to `count` entries of the reply stream `stream` that come after the entry id `after`
/// (`XRANGE stream (after + COUNT count`); `after` = `"-"` (or `""`) starts at the beginning.
/// Pass the last [`Reply::entry_id`] to read the next page. Each entry comes back on its own:
/// one without a readable `result` field is a [`Reply`] whose `result` is an [`Unreadable`]
/// naming the stream and the entry, so one bad entry neither fails the page nor stops a reader
/// whose cursor would otherwise never pass it. An error code or warning code this version does
/// not know reads as `Other` (see [`crate::ErrorCode`]). An `Err` is Redis' own (connection,
/// `WRONGTYPE`, ...).
pub async fn read_results<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    after: &str,
    count: usize,
) -> RedisResult<Vec<Reply>> {
    let page = xrange(conn, stream, after, count).await?;
    Ok(page.ids.into_iter().map(|e| reply(stream, e)).collect())
}

/// `XRANGE stream (after + COUNT count`; `after` = `"-"` (or `""`) starts at the beginning.
async fn xrange<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    after: &str,
    count: usize,
) -> RedisResult<StreamRangeReply> {
    let start = if after.is_empty() || after == "-" {
        "-".to_string()
    } else {
        format!("({after}")
    };
    redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

/// The UTF-8 text of the field `field` of the entry `e` of `stream`, if it has one.
fn text_field(stream: &str, e: &StreamId, field: &str) -> Result<Option<String>, Unreadable> {
    e.map
        .get(field)
        .map(|v| {
            redis::from_redis_value_ref::<String>(v).map_err(|err| Unreadable {
                stream: stream.to_string(),
                entry_id: e.id.clone(),
                reason: format!("`{field}`: {err}"),
            })
        })
        .transpose()
}

fn reply(stream: &str, e: StreamId) -> Reply {
    let unreadable = |reason: String| Unreadable {
        stream: stream.to_string(),
        entry_id: e.id.clone(),
        reason,
    };
    let text = |field: &str| text_field(stream, &e, field);
    let (job_id, result) = match text("job_id") {
        Ok(job_id) => {
            let result = text("result").and_then(|json| {
                let json = json.ok_or_else(|| unreadable("no `result` field".into()))?;
                JobResult::from_json(&json)
                    .map_err(|err| unreadable(format!("`result` is not a result: {err}")))
            });
            (job_id.unwrap_or_default(), result)
        }
        Err(e) => (String::new(), Err(e)),
    };
    Reply {
        entry_id: e.id.clone(),
        job_id,
        result,
    }
}

/// The results of one video ([`results_for_video`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoResults {
    /// The video's results, ordered by `frame_number` (results without one last; equal frame
    /// numbers in stream order).
    pub results: Vec<JobResult>,
    /// Every entry of the stream that could not be read, in stream order. Which video such an
    /// entry was for cannot be told, so these are the whole stream's.
    pub unreadable: Vec<Unreadable>,
}

/// Every result on `stream` for the video `video_id`, and every entry of `stream` that could
/// not be read. Reads the whole stream, page by page. Delivery is at-least-once, so a frame can
/// have more than one result (same `job_id`, same people).
pub async fn results_for_video<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    video_id: &str,
) -> RedisResult<VideoResults> {
    let mut out = VideoResults {
        results: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut after = "-".to_string();
    loop {
        let page = read_results(conn, stream, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.entry_id.clone();
        let full = page.len() == PAGE;
        for r in page {
            match r.result {
                Ok(r) if r.video_id.as_deref() == Some(video_id) => out.results.push(r),
                Ok(_) => {}
                Err(e) => out.unreadable.push(e),
            }
        }
        if !full {
            break;
        }
    }
    out.results
        .sort_by_key(|r| (r.frame_number.is_none(), r.frame_number));
    Ok(out)
}

/// How [`add_video`] sends a video's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoOptions {
    /// Ask for the mesh vertices of each person (in each frame's result and in the tracked
    /// output).
    pub vertices: bool,
    /// The stream for the video's tracked output (the `video` object's `reply_to`); `None` for
    /// the default, `<results>:video:<video_id>`. It must be the video's shard's results
    /// stream or a stream under it ([`Keys::accepts_reply_to`]).
    pub reply_to: Option<String>,
    /// Where each frame's own result goes (the job's `reply_to`); `None` for the shard's
    /// results stream. Same rule.
    pub frame_reply_to: Option<String>,
    /// Send each image as a raw `image` field (a third smaller, no base64 work) rather than
    /// as base64 inside the JSON.
    pub raw: bool,
}

impl Default for VideoOptions {
    /// No vertices, default streams, raw images.
    fn default() -> Self {
        VideoOptions {
            vertices: false,
            reply_to: None,
            frame_reply_to: None,
            raw: true,
        }
    }
}

/// What [`add_video`] added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedVideo {
    /// The frames' job entry ids, in frame order.
    pub entry_ids: Vec<String>,
    /// The shard the video went to.
    pub shard: usize,
    /// The stream its tracked output will be written to (for [`wait_video`]).
    pub output: String,
}

fn invalid_video(detail: String) -> RedisError {
    RedisError::from((ErrorKind::Client, "invalid video", detail))
}

/// Adds a whole tracked video (DESIGN §13) to its shard's job stream: image n (from 0) becomes
/// the job `<video_id>:<n>` of frame n, every frame carrying the same `video` object (the
/// number of images, `fps`, `options.reply_to`). `queue` is one shard's [`Keys`] (taken as
/// they are) or a whole [`Layout`] (the video's shard, by [`crate::shard_of`] its id, where its
/// output is written too). The frames go in pipelined chunks of 64, so the images are read
/// from `images` a chunk at a time. Returns the entry ids, the shard and the output stream.
///
/// Refused before anything is added (an `Err` of kind [`ErrorKind::Client`], "invalid video:
/// ..."): no images, an `fps` that is not a finite number above 0, a `video_id` that is empty
/// or makes a job id longer than [`MAX_ID_BYTES`], a `reply_to` or `frame_reply_to` outside the
/// shard's results stream. Should `images` yield fewer images than its length said, the
/// frames sent are left queued and the call ends with such an error (the video then expires
/// unfinished); images past its length are not read.
pub async fn add_video<C, I>(
    conn: &mut C,
    queue: &impl VideoShard,
    video_id: &str,
    images: I,
    fps: f64,
    options: &VideoOptions,
) -> RedisResult<AddedVideo>
where
    C: ConnectionLike,
    I: IntoIterator<Item = Vec<u8>>,
    I::IntoIter: ExactSizeIterator,
{
    let keys = queue.video_keys(video_id);
    let mut images = images.into_iter();
    let frames = images.len() as u64;
    if frames == 0 {
        return Err(invalid_video(format!("video {video_id:?} has no frames")));
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(invalid_video(format!(
            "fps must be a finite number above 0, got {fps}"
        )));
    }
    let longest = video_id.len() + 1 + (frames - 1).to_string().len();
    if video_id.is_empty() || longest > MAX_ID_BYTES {
        return Err(invalid_video(format!(
            "the video id must be 1 byte or more, and leave room for `:<frame>` in a job id of \
             at most {MAX_ID_BYTES} bytes (video {video_id:?}: {longest})"
        )));
    }
    let Some(output) = keys.video_output(video_id, options.reply_to.as_deref()) else {
        return Err(invalid_video(format!(
            "reply_to {:?} is not under {}",
            options.reply_to.as_deref().unwrap_or_default(),
            keys.results
        )));
    };
    if let Some(r) = options.frame_reply_to.as_deref() {
        if !keys.accepts_reply_to(r) {
            return Err(invalid_video(format!(
                "frame_reply_to {r:?} is not under {}",
                keys.results
            )));
        }
    }
    let video = Video {
        frames,
        fps,
        reply_to: options.reply_to.clone().map(Into::into),
    };
    let mut entry_ids = Vec::with_capacity(frames as usize);
    let mut n = 0u64;
    while n < frames {
        let mut pipe = redis::pipe();
        let start = n;
        let chunk = CHUNK.min((frames - n) as usize);
        for image in images.by_ref().take(chunk) {
            let mut job = Job::new(format!("{video_id}:{n}"))
                .video(video_id.to_string(), n)
                .tracked_with(video.clone())
                .vertices(options.vertices);
            if let Some(r) = &options.frame_reply_to {
                job = job.reply_to(r.clone());
            }
            pipe.add_command(xadd(keys, &Frame::new(job, image), options.raw));
            n += 1;
        }
        if n == start {
            return Err(invalid_video(format!(
                "{frames} images were announced, {n} came (frames 0 to {} are queued)",
                n.saturating_sub(1)
            )));
        }
        let chunk_ids: Vec<String> = pipe.query_async(conn).await?;
        entry_ids.extend(chunk_ids);
    }
    Ok(AddedVideo {
        entry_ids,
        shard: keys.shard,
        output,
    })
}

/// What one entry of a video's output stream holds.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoItem {
    /// A `frame` field: one tracked frame.
    Frame(VideoFrame),
    /// A `done` field: the end of the video.
    Done(VideoDone),
}

/// One entry of a video's output stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoEntry {
    /// The entry's id (a cursor for [`read_video`]), readable or not.
    pub entry_id: String,
    /// What it holds, or why it cannot be read (no `frame` or `done` field, one that is not
    /// UTF-8, or not a v1 frame or end: not JSON, a field of the wrong type, an unknown status).
    pub item: Result<VideoItem, Unreadable>,
}

/// Up to `count` entries of the video output stream `stream` that come after the entry id
/// `after` (`"-"` or `""`: from the beginning), each on its own as [`read_results`] reads
/// results: an entry that cannot be read is an [`Unreadable`] in its place, not an error. An
/// `Err` is Redis' own.
pub async fn read_video<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    after: &str,
    count: usize,
) -> RedisResult<Vec<VideoEntry>> {
    let page = xrange(conn, stream, after, count).await?;
    Ok(page
        .ids
        .into_iter()
        .map(|e| video_entry(stream, e))
        .collect())
}

fn video_entry(stream: &str, e: StreamId) -> VideoEntry {
    let unreadable = |reason: String| Unreadable {
        stream: stream.to_string(),
        entry_id: e.id.clone(),
        reason,
    };
    let item = (|| {
        if let Some(json) = text_field(stream, &e, "frame")? {
            return VideoFrame::from_json(&json)
                .map(VideoItem::Frame)
                .map_err(|err| unreadable(format!("`frame` is not a video frame: {err}")));
        }
        if let Some(json) = text_field(stream, &e, "done")? {
            return VideoDone::from_json(&json)
                .map(VideoItem::Done)
                .map_err(|err| unreadable(format!("`done` is not a video's end: {err}")));
        }
        Err(unreadable("neither a `frame` nor a `done` field".into()))
    })();
    VideoEntry {
        entry_id: e.id.clone(),
        item,
    }
}

/// A tracked video's whole output ([`wait_video`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOutput {
    /// The video's tracked frames, in stream order (which is frame order).
    pub frames: Vec<VideoFrame>,
    /// How the video ended: `ok`, or `expired` with the frames it got.
    pub done: VideoDone,
    /// The entries of the stream before the end that could not be read, in stream order
    /// (which video they were for cannot be told).
    pub unreadable: Vec<Unreadable>,
}

/// Waits for the video `video_id`'s tracked output on `stream` (its output stream:
/// [`AddedVideo::output`], or [`Keys::video_output`]) and returns it whole once its `done`
/// entry is there, or `None` when none came within `timeout` (`Duration::MAX`: no limit). Reads the stream from its
/// beginning (so a video already done returns at once) with `XREAD BLOCK`, a slice of at most
/// 300 ms at a time (under the `redis` crate's default response timeout); entries of other
/// videos (a shared `reply_to`) are skipped. The connection is blocked while it waits: give
/// it its own. An `Err` is Redis' own.
pub async fn wait_video<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    video_id: &str,
    timeout: Duration,
) -> RedisResult<Option<VideoOutput>> {
    // A timeout too long to add to the clock is no timeout.
    let deadline = Instant::now().checked_add(timeout);
    let mut after = "0-0".to_string();
    let mut frames = Vec::new();
    let mut unreadable = Vec::new();
    loop {
        let left = deadline.map_or(BLOCK_SLICE, |d| d.saturating_duration_since(Instant::now()));
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(PAGE);
        if !left.is_zero() {
            let block = left.min(BLOCK_SLICE).as_millis().max(1);
            cmd.arg("BLOCK").arg(block as u64);
        }
        cmd.arg("STREAMS").arg(stream).arg(&after);
        let read: Option<StreamReadReply> = cmd.query_async(conn).await?;
        let entries: Vec<StreamId> = read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if entries.is_empty() {
            if left.is_zero() {
                return Ok(None);
            }
            continue;
        }
        for e in entries {
            after = e.id.clone();
            match video_entry(stream, e).item {
                Ok(VideoItem::Frame(f)) if f.video_id == video_id => frames.push(f),
                Ok(VideoItem::Done(done)) if done.video_id == video_id => {
                    return Ok(Some(VideoOutput {
                        frames,
                        done,
                        unreadable,
                    }))
                }
                Ok(_) => {}
                Err(e) => unreadable.push(e),
            }
        }
    }
}

/// What the workers of the queue published about their model in `keys.model`
/// (`{prefix}:model`: the model's `meta()`, the detector's, the mesh faces, keypoint names, ...),
/// or `None` while no worker has started on it. A hash that is there but unreadable (a field
/// that is not its JSON, no `meta`) is an `Err` of kind [`ErrorKind::Parse`] naming the field.
pub async fn model_info<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<Option<ModelInfo>> {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&keys.model)
        .query_async(conn)
        .await?;
    if fields.is_empty() {
        return Ok(None);
    }
    ModelInfo::from_hash(fields).map(Some).map_err(|e| {
        RedisError::from((
            ErrorKind::Parse,
            "unreadable model hash",
            format!("{}: {e}", keys.model),
        ))
    })
}
