//! What an upload pipeline needs from Redis: add jobs to `{prefix}:jobs`, read results back.
//! Generic over any async `redis` connection (multiplexed, connection manager, pooled).
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

use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply};
use redis::RedisResult;
use thiserror::Error;

use crate::job::Frame;
use crate::keys::{Keys, Layout};
use crate::result::JobResult;

/// Jobs per pipelined round trip in [`add_all`].
const CHUNK: usize = 64;
/// Entries per XRANGE page in [`results_for_video`].
const PAGE: usize = 500;

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
    let start = if after.is_empty() || after == "-" {
        "-".to_string()
    } else {
        format!("({after}")
    };
    let page: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(page.ids.into_iter().map(|e| reply(stream, e)).collect())
}

fn reply(stream: &str, e: StreamId) -> Reply {
    let unreadable = |reason: String| Unreadable {
        stream: stream.to_string(),
        entry_id: e.id.clone(),
        reason,
    };
    let text = |field: &str| -> Result<Option<String>, Unreadable> {
        e.map
            .get(field)
            .map(|v| {
                redis::from_redis_value_ref::<String>(v)
                    .map_err(|err| unreadable(format!("`{field}`: {err}")))
            })
            .transpose()
    };
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
