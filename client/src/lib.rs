//! The hmr2-worker wire contract v1 (DESIGN §3), typed once for the worker, the tools and
//! external producers: jobs ([`Job`], [`Frame`]), results ([`JobResult`], [`Person`]), the
//! closed set of error codes ([`ErrorCode`]), the Redis key names ([`Keys`]) and tracked videos
//! (DESIGN §13: [`Video`], [`VideoFrame`], [`VideoDone`]). With the `redis` feature,
//! [`producer`] adds jobs and whole videos to the queue and reads results back.
//!
//! A producer builds one [`Frame`] per video frame and adds its fields to `{prefix}:jobs`; the
//! worker publishes one [`JobResult`] per job on the reply stream:
//!
//! ```
//! use hmr2_client::{ErrorCode, Frame, Job, JobResult, Keys, Limits, Status};
//!
//! let keys = Keys::new("hmr2");
//! let jpeg: Vec<u8> = std::fs::read("frame-0016.jpg").unwrap_or_default();
//! let job = Job::new("video-7:16").video("video-7", 16).vertices(true);
//! let frame = Frame::new(job, jpeg);
//! // XADD hmr2:jobs * job <json> image <bytes>
//! let fields = frame.fields(true);
//! assert_eq!(fields[0].0, "job");
//! assert_eq!(keys.jobs, "hmr2:jobs");
//! // The worker reads the same job back.
//! let parsed = Job::parse(&fields[0].1, true, &Limits::default()).unwrap();
//! assert_eq!(parsed, frame.job);
//!
//! // A result, as read from the `result` field of an entry in hmr2:results.
//! let result = JobResult::from_json(
//!     r#"{"v":1,"job_id":"video-7:16","entry_id":"1700000000000-0","video_id":"video-7",
//!         "frame_number":16,"status":"error",
//!         "error":{"code":"invalid_image","message":"image cannot be decoded: empty"},
//!         "people":[],"timings_ms":{"queue_wait":1.0,"decode":0.2,"inference":0.0,"total":1.3},
//!         "worker":"gpu-0/17","device":"cuda:0","model":"hmr2 tiny"}"#,
//! )?;
//! assert_eq!(result.status, Status::Error);
//! assert_eq!(result.error.unwrap().code, ErrorCode::InvalidImage);
//! # Ok::<(), serde_json::Error>(())
//! ```
//!
//! With the `redis` feature, the same through Redis:
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() -> redis::RedisResult<()> {
//! use hmr2_client::{producer, Frame, Job, Keys};
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let keys = Keys::new("hmr2");
//! let frames: Vec<Frame> = (0..100u64)
//!     .map(|n| {
//!         let jpeg = std::fs::read(format!("frames/{n:05}.jpg")).unwrap();
//!         Frame::new(Job::new(format!("video-7:{n}")).video("video-7", n), jpeg)
//!     })
//!     .collect();
//! let ids = producer::add_all(&mut conn, &keys, &frames, true, |done| println!("{done} sent")).await?;
//! // ... later, once the workers are done:
//! let video = producer::results_for_video(&mut conn, &keys.results, "video-7").await?;
//! for r in &video.results {
//!     println!("frame {:?}: {} people", r.frame_number, r.people.len());
//! }
//! for bad in &video.unreadable {
//!     eprintln!("unreadable: {bad}");
//! }
//! # let _ = ids;
//! # Ok(())
//! # }
//! ```
//!
//! A tracked video (DESIGN §13): every frame carries the same `video` object (the number of
//! frames and the frame rate); once all are answered, the video's people are tracked and
//! smoothed, and the output stream gets one `frame` entry per frame, then a `done` entry:
//!
//! ```
//! use hmr2_client::{Job, Keys, Limits, Video, VideoDone, VideoStatus};
//!
//! let keys = Keys::new("hmr2");
//! let job = Job::new("clip-7:16").video("clip-7", 16).tracked(120, 29.97);
//! let json = job.to_json();
//! assert!(json.ends_with(r#""video":{"frames":120,"fps":29.97}}"#));
//! assert_eq!(Job::parse(json.as_bytes(), true, &Limits::default())?.video, Some(Video::new(120, 29.97)));
//! // Frame 120 of a video of 120 frames is refused (`invalid_job`).
//! let past = Job::new("clip-7:120").video("clip-7", 120).tracked(120, 29.97);
//! assert!(Job::parse(past.to_json().as_bytes(), true, &Limits::default()).is_err());
//! // The output goes to the video's `reply_to`, by default:
//! let output = keys.video_output("clip-7", None).unwrap();
//! assert_eq!(output, "hmr2:results:video:clip-7");
//! // Its last entry, as read from the `done` field:
//! let done = VideoDone::from_json(
//!     r#"{"v":1,"video_id":"clip-7","status":"ok","frames":120,"ok_frames":120,
//!         "error_frames":0,"missing_frames":0,"fps":29.97,
//!         "tracks":[{"track_id":1,"first_frame":0,"last_frame":119,"frames":120,
//!                    "interpolated_frames":3}],
//!         "timings_ms":{"tracking":85.5,"total":40210.0}}"#,
//! ).unwrap();
//! assert_eq!(done.status, VideoStatus::Ok);
//! # Ok::<(), hmr2_client::ParseError>(())
//! ```
//!
//! With the `redis` feature, `producer::add_video` adds a whole video to its shard and
//! `producer::wait_video` waits for its output:
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() -> redis::RedisResult<()> {
//! use std::time::Duration;
//! use hmr2_client::{producer, Layout};
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let layout = Layout::new("hmr2", 1, false);
//! let images = (0..120).map(|n| std::fs::read(format!("frames/{n:05}.jpg")).unwrap());
//! let options = producer::VideoOptions { vertices: true, ..Default::default() };
//! let added = producer::add_video(&mut conn, &layout, "clip-7", images, 29.97, &options).await?;
//! if let Some(video) =
//!     producer::wait_video(&mut conn, &added.output, "clip-7", Duration::from_secs(900)).await?
//! {
//!     for frame in &video.frames {
//!         let ids: Vec<u32> = frame.people.iter().map(|p| p.track_id).collect();
//!         println!("frame {}: tracks {ids:?}", frame.frame_number);
//!     }
//!     println!("{:?}, {} tracks", video.done.status, video.done.tracks.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! On a sharded queue (`queue.shards`, Redis Cluster; DESIGN §11) every frame of a video goes to
//! the video's shard, where its results (and any `reply_to`) are too; with the `redis` feature,
//! `producer::add_all_sharded` enqueues a whole list that way:
//!
//! ```
//! use hmr2_client::{shard_of, Layout};
//!
//! let layout = Layout::new("hmr2", 4, true);
//! let keys = layout.keys_for(Some("video-7"), "video-7:16");
//! assert_eq!(keys.jobs, format!("{{hmr2:{}}}:jobs", shard_of("video-7", 4)));
//! assert!(keys.accepts_reply_to(&format!("{}:video-7", keys.results)));
//! // Another shard's results stream is refused (`invalid_job`).
//! let other = layout.shard(keys.shard + 1);
//! assert!(!keys.accepts_reply_to(&other.results));
//! ```

#![warn(missing_docs)]

/// The contract version this crate speaks (the `v` of jobs and results).
pub const VERSION: i64 = 1;
/// Longest accepted `job_id`, `video_id` and `reply_to`, bytes.
pub const MAX_ID_BYTES: usize = 256;

pub mod error;
pub mod files;
pub mod job;
pub mod keys;
pub mod model;
#[cfg(feature = "redis")]
pub mod producer;
pub mod result;
#[cfg(feature = "schema")]
pub mod schema;
pub mod video;

pub use error::{ErrorCode, InputError};
pub use files::{image_files, images_in};
pub use job::{Echo, Frame, Include, Job, JobLayout, Limits, Member, ParseError, Video};
pub use keys::{routing_key, shard_of, Keys, Layout, VideoShard};
pub use model::{DetectorMeta, Dim, ModelInfo, ModelInfoError, ModelMeta};
pub use result::{BoxSource, ErrorBody, JobResult, Person, Status, Timings, Warning, WarningCode};
pub use video::{TrackInfo, TrackedPerson, VideoDone, VideoFrame, VideoStatus, VideoTimings};
