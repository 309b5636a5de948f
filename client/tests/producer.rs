//! The producer API against a real `redis-server` (started here on a free port, killed on drop).
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmr2_client::producer::{self, Reply, VideoItem, VideoOptions};
use hmr2_client::{
    shard_of, BoxSource, Echo, ErrorBody, ErrorCode, Frame, Job, JobResult, Keys, Layout, Limits,
    Status, TrackInfo, TrackedPerson, Video, VideoDone, VideoFrame, VideoShard, VideoStatus,
    VideoTimings, WarningCode,
};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A throwaway redis-server: no persistence, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let out = child.stdout.take().expect("piped stdout");
        let server = Server { child, port };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Ready when the server says so (its log goes to stdout); dropping `server` kills it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("Ready to accept connections") => return server,
                Ok(_) => {}
                Err(e) => panic!("redis-server did not become ready: {e}"),
            }
        }
    }

    async fn connect(&self) -> MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::new(
            Job::new("v:0")
                .video("v", 0)
                .boxes(vec![[1.0, 2.0, 30.5, 40.0]])
                .vertices(true),
            vec![0xff, 0xd8, 0xff, 0x00, 1, 2, 3],
        ),
        Frame::new(
            Job::new("v:1").video("v", 1),
            vec![0x89, b'P', b'N', b'G', 0, 0],
        ),
        Frame::new(
            Job::new("v:2").video("v", 2).reply_to("t:results:mine"),
            vec![9; 1000],
        ),
    ]
}

async fn entries(conn: &mut MultiplexedConnection, stream: &str) -> StreamRangeReply {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap()
}

fn field(e: &redis::streams::StreamId, name: &str) -> Option<Vec<u8>> {
    e.get::<Vec<u8>>(name)
}

#[tokio::test]
async fn jobs_go_in_and_results_come_back_in_frame_order() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("t");
        let frames = frames();

        // Two raw frames in one pipelined call, one base64 frame on its own.
        let mut progress = Vec::new();
        let mut ids = producer::add_all(&mut conn, &keys, &frames[..2], true, |n| progress.push(n))
            .await
            .unwrap();
        assert_eq!(progress, vec![2]);
        ids.push(
            producer::add(&mut conn, &keys, &frames[2], false)
                .await
                .unwrap(),
        );

        // What is stored parses back to the same jobs, with the same image bytes.
        let stored = entries(&mut conn, &keys.jobs).await;
        assert_eq!(
            stored.ids.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            ids
        );
        for (i, (e, f)) in stored.ids.iter().zip(&frames).enumerate() {
            let job = field(e, "job").expect("a job field");
            let image = field(e, "image");
            let parsed = Job::parse(&job, image.is_some(), &Limits::default()).unwrap();
            if i < 2 {
                assert_eq!(parsed, f.job);
                assert_eq!(image.as_deref(), Some(&f.image[..]));
            } else {
                assert_eq!(image, None);
                let b64 = parsed.image_base64.clone().expect("base64 in the JSON");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&*b64)
                    .unwrap();
                assert_eq!(bytes, f.image);
                assert_eq!(parsed, f.job.clone().image_base64(b64.into_owned()));
            }
        }

        // Results of video "v" arrive out of order, among many of another video (several
        // pages), plus one of a job that had no frame number.
        let echo = |f: &Frame| f.job.echo();
        let mut expected = Vec::new();
        let mut pipe = redis::pipe();
        for n in 0..1200u64 {
            let other = Echo {
                job_id: Some(format!("w:{n}")),
                video_id: Some("w".into()),
                frame_number: Some(n),
                reply_to: None,
                video: None,
            };
            let r = JobResult::new(&format!("{n}-0"), &other);
            pipe.cmd("XADD")
                .arg(&keys.results)
                .arg("*")
                .arg("job_id")
                .arg(other.job_id.as_deref())
                .arg("result")
                .arg(r.to_json());
            if n % 400 == 0 {
                let i = [2, 0, 1][(n / 400) as usize];
                let mut r = JobResult::new(&ids[i], &echo(&frames[i]));
                r.image_size = Some([64, 48]);
                r.worker = "test/1".into();
                pipe.cmd("XADD")
                    .arg(&keys.results)
                    .arg("*")
                    .arg("job_id")
                    .arg(&*frames[i].job.job_id)
                    .arg("result")
                    .arg(r.to_json());
                expected.push((i, r));
            }
        }
        let unnumbered = JobResult::error(
            "9-9",
            &Echo {
                video_id: Some("v".into()),
                ..Default::default()
            },
            ErrorCode::InvalidJob,
            "invalid job: `job_id` is required".into(),
        );
        pipe.cmd("XADD")
            .arg(&keys.results)
            .arg("*")
            .arg("job_id")
            .arg("")
            .arg("result")
            .arg(unnumbered.to_json());
        let _: Vec<String> = pipe.query_async(&mut conn).await.unwrap();

        let video = producer::results_for_video(&mut conn, &keys.results, "v")
            .await
            .unwrap();
        assert!(video.unreadable.is_empty());
        let results = video.results;
        assert_eq!(results.len(), 4);
        for (n, r) in results.iter().take(3).enumerate() {
            assert_eq!(r.frame_number, Some(n as u64));
            let (_, sent) = expected.iter().find(|(i, _)| *i == n).unwrap();
            assert_eq!(r, sent);
            assert_eq!(r.entry_id, ids[n]);
        }
        assert_eq!(results[3], unnumbered);
        assert_eq!(results[3].status, Status::Error);
        assert!(
            producer::results_for_video(&mut conn, &keys.results, "none")
                .await
                .unwrap()
                .results
                .is_empty()
        );

        // Paging by hand: each page starts after the last entry of the previous one.
        let first: Vec<Reply> = producer::read_results(&mut conn, &keys.results, "-", 2)
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].job_id, "w:0");
        assert_eq!(first[1].job_id, "v:2");
        assert_eq!(first[1].result.as_ref().unwrap().entry_id, ids[2]);
        let next = producer::read_results(&mut conn, &keys.results, &first[1].entry_id, 1)
            .await
            .unwrap();
        assert_eq!(next[0].job_id, "w:1");
        let total = entries(&mut conn, &keys.results).await.ids.len();
        assert_eq!(total, 1200 + 3 + 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn many_frames_go_in_chunks_with_progress() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("{big}");
        let frames: Vec<Frame> = (0..130u64)
            .map(|n| Frame::new(Job::new(format!("b:{n}")).video("b", n), vec![n as u8; 10]))
            .collect();
        let mut progress = Vec::new();
        let ids = producer::add_all(&mut conn, &keys, &frames, false, |n| progress.push(n))
            .await
            .unwrap();
        assert_eq!(progress, vec![64, 128, 130]);
        assert_eq!(ids.len(), 130);
        let stored = entries(&mut conn, "{big}:jobs").await;
        assert_eq!(stored.ids.len(), 130);
        let raw = field(&stored.ids[129], "job").unwrap();
        let last = Job::parse(&raw, false, &Limits::default()).unwrap();
        assert_eq!(last.job_id, "b:129");
        assert_eq!(last.frame_number, Some(129));
    })
    .await
    .expect("test timed out");
}

/// XADDs `fields` to `stream`; returns the entry id.
async fn xadd(conn: &mut MultiplexedConnection, stream: &str, fields: &[(&str, &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(conn).await.unwrap()
}

#[tokio::test]
async fn an_unreadable_entry_is_returned_on_its_own_and_the_cursor_moves_past_it() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let stream = "t:results";
        let ok = |n: u64| {
            let echo = Echo {
                job_id: Some(format!("v:{n}")),
                video_id: Some("v".into()),
                frame_number: Some(n),
                reply_to: None,
                video: None,
            };
            JobResult::new(&format!("{n}-0"), &echo)
        };
        // A good result, an unreadable entry, an error code this version does not know, and
        // another good result.
        let first = ok(0);
        let a = xadd(
            &mut conn,
            stream,
            &[("job_id", b"v:0"), ("result", first.to_json().as_bytes())],
        )
        .await;
        let b = xadd(
            &mut conn,
            stream,
            &[("job_id", b"v:1"), ("result", b"{not json")],
        )
        .await;
        let newer = r#"{"v":1,"job_id":"v:2","entry_id":"2-0","video_id":"v","frame_number":2,
            "status":"error","error":{"code":"gpu_on_fire","message":"later"},
            "warnings":[{"code":"also_new","message":"m"}]}"#;
        let c = xadd(
            &mut conn,
            stream,
            &[("job_id", b"v:2"), ("result", newer.as_bytes())],
        )
        .await;
        let last = ok(3);
        let d = xadd(
            &mut conn,
            stream,
            &[("job_id", b"v:3"), ("result", last.to_json().as_bytes())],
        )
        .await;

        let page = producer::read_results(&mut conn, stream, "-", 10)
            .await
            .expect("one unreadable entry does not fail the page");
        let ids: Vec<&str> = page.iter().map(|r| r.entry_id.as_str()).collect();
        assert_eq!(ids, [&a, &b, &c, &d]);
        assert_eq!(page[0].result.as_ref().unwrap(), &first);
        let bad = page[1].result.as_ref().unwrap_err();
        assert_eq!(bad.entry_id, b);
        assert_eq!(bad.stream, stream);
        assert!(bad.to_string().contains(&b), "{bad}");
        assert!(bad.reason.contains("not a result"), "{bad}");
        assert_eq!(page[1].job_id, "v:1");
        let unknown = page[2]
            .result
            .as_ref()
            .expect("an unknown code is readable");
        assert_eq!(
            unknown.error.as_ref().unwrap().code,
            ErrorCode::Other("gpu_on_fire".into())
        );
        assert_eq!(
            unknown.warnings[0].code,
            WarningCode::Other("also_new".into())
        );
        let again: serde_json::Value = serde_json::from_str(&unknown.to_json()).unwrap();
        assert_eq!(again["error"]["code"], "gpu_on_fire");
        assert_eq!(again["warnings"][0]["code"], "also_new");
        assert_eq!(page[3].result.as_ref().unwrap(), &last);

        // Paging one entry at a time: the cursor moves past the unreadable entry.
        let mut after = "-".to_string();
        let mut seen = Vec::new();
        loop {
            let page = producer::read_results(&mut conn, stream, &after, 1)
                .await
                .unwrap();
            let Some(r) = page.into_iter().next() else {
                break;
            };
            after = r.entry_id.clone();
            seen.push((r.entry_id, r.result.is_ok()));
        }
        assert_eq!(seen, [(a, true), (b.clone(), false), (c, true), (d, true)]);

        // A whole video: the readable results, and the unreadable entry beside them.
        let video = producer::results_for_video(&mut conn, stream, "v")
            .await
            .unwrap();
        let frames: Vec<_> = video.results.iter().map(|r| r.frame_number).collect();
        assert_eq!(frames, [Some(0), Some(2), Some(3)]);
        assert_eq!(video.unreadable.len(), 1);
        assert_eq!(video.unreadable[0].entry_id, b);

        // A missing `result` field, and a `job_id` that is not UTF-8.
        let e = xadd(&mut conn, "t:other", &[("job_id", b"x")]).await;
        let f = xadd(
            &mut conn,
            "t:other",
            &[
                ("job_id", b"\xff\xfe"),
                ("result", first.to_json().as_bytes()),
            ],
        )
        .await;
        let page = producer::read_results(&mut conn, "t:other", "-", 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 2);
        let missing = page[0].result.as_ref().unwrap_err();
        assert_eq!(
            (missing.entry_id.as_str(), page[0].job_id.as_str()),
            (e.as_str(), "x")
        );
        assert!(missing.reason.contains("no `result` field"), "{missing}");
        let binary = page[1].result.as_ref().unwrap_err();
        assert_eq!(binary.entry_id, f);
        assert!(binary.reason.contains("`job_id`"), "{binary}");
        // A stream that does not exist is simply empty.
        assert!(producer::read_results(&mut conn, "t:none", "-", 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await
    .expect("test timed out");
}

// Tracked videos (DESIGN §13). No worker runs in these tests: where a video's output is
// needed, the test writes the `frame` and `done` entries itself, as the worker would.

/// The image of frame `n`: distinct bytes per frame.
fn image(n: u64) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8];
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes
}

async fn xlen(conn: &mut MultiplexedConnection, stream: &str) -> usize {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_video_goes_to_its_shard_with_its_video_object_on_every_frame() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let layout = Layout::new("t", 4, true);
        let keys = layout.video_keys("clip-7");
        assert_eq!(keys.shard, shard_of("clip-7", 4));
        // 130 frames: three pipelined chunks.
        let options = VideoOptions {
            vertices: true,
            ..VideoOptions::default()
        };
        let added = producer::add_video(
            &mut conn,
            &layout,
            "clip-7",
            (0..130usize).map(|n| image(n as u64)),
            29.97,
            &options,
        )
        .await
        .unwrap();
        assert_eq!(added.shard, keys.shard);
        assert_eq!(
            added.output,
            format!("{{t:{}}}:results:video:clip-7", keys.shard)
        );
        assert_eq!(added.entry_ids.len(), 130);

        // Every frame is on the video's shard, none on another.
        for other in layout.shards().iter().filter(|k| k.shard != keys.shard) {
            assert_eq!(xlen(&mut conn, &other.jobs).await, 0, "{}", other.jobs);
        }
        let stored = entries(&mut conn, &keys.jobs).await;
        let ids: Vec<String> = stored.ids.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, added.entry_ids);
        for (n, e) in stored.ids.iter().enumerate() {
            let n = n as u64;
            let job = field(e, "job").unwrap();
            let raw_image = field(e, "image");
            assert_eq!(raw_image.as_deref(), Some(&image(n)[..]), "frame {n}");
            let parsed = Job::parse(&job, true, &Limits::default()).unwrap();
            assert_eq!(
                parsed,
                Job::new(format!("clip-7:{n}"))
                    .video("clip-7", n)
                    .tracked(130, 29.97)
                    .vertices(true)
            );
            // The worker answers each frame in the shard's results stream.
            assert_eq!(keys.reply_stream(parsed.reply_to.as_deref()), keys.results);
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_video_with_its_own_streams_and_base64_images_on_one_shard() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("t");
        let options = VideoOptions {
            reply_to: Some("t:results:videos".into()),
            frame_reply_to: Some("t:results:frames".into()),
            raw: false,
            ..VideoOptions::default()
        };
        let images = vec![image(0), image(1), image(2)];
        let added = producer::add_video(&mut conn, &keys, "v", images, 25.0, &options)
            .await
            .unwrap();
        assert_eq!(added.output, "t:results:videos");
        assert_eq!(added.shard, 0);
        let stored = entries(&mut conn, &keys.jobs).await;
        assert_eq!(stored.ids.len(), 3);
        for (n, e) in stored.ids.iter().enumerate() {
            assert_eq!(field(e, "image"), None);
            let job = field(e, "job").unwrap();
            let parsed = Job::parse(&job, false, &Limits::default()).unwrap();
            let b64 = parsed.image_base64.clone().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&*b64)
                .unwrap();
            assert_eq!(bytes, image(n as u64));
            assert_eq!(parsed.reply_to.as_deref(), Some("t:results:frames"));
            assert_eq!(
                parsed.video,
                Some(Video::new(3, 25.0).reply_to("t:results:videos"))
            );
            assert_eq!(parsed.frame_number, Some(n as u64));
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_video_that_cannot_be_answered_is_refused_before_any_frame_is_added() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let layout = Layout::new("t", 4, true);
        let keys = layout.video_keys("clip-7").clone();
        let other = layout.shard(keys.shard + 1).results.clone();
        let with = |reply_to: Option<String>, frame_reply_to: Option<String>| VideoOptions {
            reply_to,
            frame_reply_to,
            ..VideoOptions::default()
        };
        /// A video id, its images, its fps, the options, and what the refusal names.
        type Case = (&'static str, Vec<Vec<u8>>, f64, VideoOptions, &'static str);
        let cases: Vec<Case> = vec![
            ("clip-7", vec![], 30.0, VideoOptions::default(), "no frames"),
            (
                "clip-7",
                vec![image(0)],
                0.0,
                VideoOptions::default(),
                "fps",
            ),
            (
                "clip-7",
                vec![image(0)],
                f64::NAN,
                VideoOptions::default(),
                "fps",
            ),
            (
                "clip-7",
                vec![image(0)],
                f64::INFINITY,
                VideoOptions::default(),
                "fps",
            ),
            (
                "",
                vec![image(0)],
                30.0,
                VideoOptions::default(),
                "video id",
            ),
            (
                "clip-7",
                vec![image(0)],
                30.0,
                with(Some(format!("{other}:v")), None),
                "reply_to",
            ),
            (
                "clip-7",
                vec![image(0)],
                30.0,
                with(Some("t:jobs".into()), None),
                "reply_to",
            ),
            (
                "clip-7",
                vec![image(0)],
                30.0,
                with(None, Some(other.clone())),
                "frame_reply_to",
            ),
        ];
        for (video_id, images, fps, options, says) in cases {
            let e = producer::add_video(&mut conn, &layout, video_id, images, fps, &options)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), redis::ErrorKind::Client, "{e}");
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
        // A video id that leaves no room for the frame number in a job id.
        // 251 bytes, ":" and up to 5 digits: 257 bytes for the last frame's job id.
        let long = "x".repeat(251);
        let e = producer::add_video(
            &mut conn,
            &layout,
            &long,
            (0..100_000).map(|_| Vec::new()),
            30.0,
            &VideoOptions::default(),
        )
        .await
        .map(|added| added.entry_ids.len());
        let e = e.expect_err("refused");
        assert!(e.to_string().contains("job id"), "{e}");
        for k in layout.shards() {
            assert_eq!(xlen(&mut conn, &k.jobs).await, 0, "{}", k.jobs);
        }
    })
    .await
    .expect("test timed out");
}

/// An image iterator that says it holds more images than it yields.
struct Short {
    said: usize,
    left: Vec<Vec<u8>>,
}

impl Iterator for Short {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.left.pop()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.said, Some(self.said))
    }
}

impl ExactSizeIterator for Short {}

#[tokio::test]
async fn images_that_run_out_early_end_in_an_error_and_more_are_not_read() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("t");
        let short = Short {
            said: 5,
            left: vec![image(1), image(0)],
        };
        let e = producer::add_video(&mut conn, &keys, "v", short, 30.0, &VideoOptions::default())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("5 images were announced, 2 came"),
            "{e}"
        );
        assert_eq!(xlen(&mut conn, &keys.jobs).await, 2);
        // Told 2 by an iterator that holds 3: the video has 2 frames, frame 2 is never sent.
        let long = Short {
            said: 2,
            left: vec![image(2), image(1), image(0)],
        };
        let added =
            producer::add_video(&mut conn, &keys, "w", long, 30.0, &VideoOptions::default())
                .await
                .unwrap();
        assert_eq!(added.entry_ids.len(), 2);
        assert_eq!(xlen(&mut conn, &keys.jobs).await, 4);
    })
    .await
    .expect("test timed out");
}

fn tracked_person(track_id: u32, x: f32) -> TrackedPerson {
    let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    TrackedPerson {
        track_id,
        bbox: [x, 10.0, x + 50.0, 200.0],
        score: Some(0.9),
        box_source: BoxSource::Detector,
        global_orient: eye,
        body_pose: vec![eye; 23],
        betas: vec![0.25; 10],
        pred_cam_t_full: [0.0, 0.1, 20.0],
        focal_length: 5000.0,
        keypoints_2d: vec![[x, 20.0]; 44],
        keypoints_3d: vec![[0.1, 0.2, 0.3]; 44],
        interpolated: false,
        vertices: None,
    }
}

fn video_frame(video_id: &str, n: u64) -> VideoFrame {
    VideoFrame {
        v: 1,
        video_id: video_id.into(),
        frame_number: n,
        status: Status::Ok,
        error: None,
        people: vec![tracked_person(1, n as f32)],
    }
}

fn video_done(video_id: &str, frames: u64) -> VideoDone {
    VideoDone {
        v: 1,
        video_id: video_id.into(),
        status: VideoStatus::Ok,
        frames,
        ok_frames: frames - 1,
        error_frames: 1,
        missing_frames: 0,
        fps: 30.0,
        tracks: vec![TrackInfo {
            track_id: 1,
            first_frame: 0,
            last_frame: frames - 1,
            frames: frames - 1,
            interpolated_frames: 0,
        }],
        timings_ms: VideoTimings {
            tracking: 3.5,
            total: 900.0,
        },
    }
}

#[tokio::test]
async fn wait_video_returns_the_whole_output_once_the_video_is_done() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("t");
        let output = keys.video_output("clip-7", None).unwrap();

        // The frames come first, among an entry of another video (a shared stream) and one
        // that cannot be read; the `done` entry comes later, from another connection, while
        // wait_video waits.
        let mut expected = Vec::new();
        for n in 0..4 {
            let mut f = video_frame("clip-7", n);
            if n == 2 {
                f.status = Status::Error;
                f.error = Some(ErrorBody {
                    code: ErrorCode::InvalidImage,
                    message: "image cannot be decoded: empty".into(),
                });
                f.people.clear();
            }
            xadd(&mut conn, &output, &[("frame", f.to_json().as_bytes())]).await;
            expected.push(f);
            if n == 1 {
                let other = video_frame("clip-8", 0);
                xadd(&mut conn, &output, &[("frame", other.to_json().as_bytes())]).await;
                let bad = xadd(&mut conn, &output, &[("frame", b"{\"v\":1")]).await;
                let _ = bad;
            }
        }
        let mut writer = server.connect().await;
        let done = video_done("clip-7", 4);
        let last = done.clone();
        let stream = output.clone();
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let other = video_done("clip-8", 1);
            xadd(
                &mut writer,
                &stream,
                &[("done", other.to_json().as_bytes())],
            )
            .await;
            xadd(&mut writer, &stream, &[("done", last.to_json().as_bytes())]).await
        });

        // No deadline of its own: the test's timeout bounds it.
        let video = producer::wait_video(&mut conn, &output, "clip-7", Duration::MAX)
            .await
            .unwrap()
            .expect("the video is done");
        let done_id = write.await.unwrap();
        assert_eq!(video.done, done);
        assert_eq!(video.frames, expected);
        assert_eq!(video.unreadable.len(), 1);
        assert!(
            video.unreadable[0].reason.contains("`frame`"),
            "{}",
            video.unreadable[0]
        );

        // Once done, it comes back at once, however short the wait.
        let again = producer::wait_video(&mut conn, &output, "clip-7", Duration::ZERO)
            .await
            .unwrap()
            .expect("already done");
        assert_eq!(again, video);

        // The same entries read page by page, in stream order, the unreadable one in place.
        let mut after = "-".to_string();
        let mut seen = Vec::new();
        loop {
            let page = producer::read_video(&mut conn, &output, &after, 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.entry_id.clone();
            seen.extend(page);
        }
        assert_eq!(seen.len(), 8);
        let kinds: Vec<&str> = seen
            .iter()
            .map(|e| match &e.item {
                Ok(VideoItem::Frame(_)) => "frame",
                Ok(VideoItem::Done(_)) => "done",
                Err(_) => "unreadable",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "frame",
                "frame",
                "frame",
                "unreadable",
                "frame",
                "frame",
                "done",
                "done"
            ]
        );
        assert_eq!(seen[7].entry_id, done_id);
        assert_eq!(seen[7].item, Ok(VideoItem::Done(done)));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn wait_video_gives_up_cleanly_when_the_video_is_not_done() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let keys = Keys::new("t");
        let output = keys.video_output("clip-7", None).unwrap();
        // No output at all yet: nothing, after the wait (longer than one XREAD slice).
        let none = producer::wait_video(&mut conn, &output, "clip-7", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(none, None);
        // Frames, and the end of another video, but not this one's end.
        for n in 0..3 {
            let f = video_frame("clip-7", n);
            xadd(&mut conn, &output, &[("frame", f.to_json().as_bytes())]).await;
        }
        let other = video_done("clip-8", 2);
        xadd(&mut conn, &output, &[("done", other.to_json().as_bytes())]).await;
        let none = producer::wait_video(&mut conn, &output, "clip-7", Duration::from_millis(400))
            .await
            .unwrap();
        assert_eq!(none, None);
        // The connection is still good for other commands afterwards.
        assert_eq!(xlen(&mut conn, &output).await, 4);
        // An entry with neither field, and one whose `done` is not a video's end.
        xadd(&mut conn, &output, &[("x", b"1")]).await;
        xadd(
            &mut conn,
            &output,
            &[("done", b"{\"v\":1,\"status\":\"ok\"}")],
        )
        .await;
        let page = producer::read_video(&mut conn, &output, "-", 10)
            .await
            .unwrap();
        let reasons: Vec<String> = page[4..]
            .iter()
            .map(|e| e.item.clone().unwrap_err().reason)
            .collect();
        assert!(
            reasons[0].contains("neither a `frame` nor a `done` field"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("`done` is not a video's end"),
            "{reasons:?}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_model_hash_reads_as_the_workers_wrote_it_and_is_none_before_any_worker() {
    let server = Server::start();
    let mut conn = server.connect().await;
    let keys = Keys::new("hmr2");
    assert_eq!(producer::model_info(&mut conn, &keys).await.unwrap(), None);
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/wire_vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for v in vectors["model"].as_array().unwrap() {
        let fields: Vec<(String, String)> = v["hash"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, text)| (k.clone(), text.as_str().unwrap().to_string()))
            .collect();
        let _: () = redis::cmd("DEL")
            .arg(&keys.model)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(&keys.model)
            .arg(&fields)
            .query_async(&mut conn)
            .await
            .unwrap();
        let info = producer::model_info(&mut conn, &keys)
            .await
            .unwrap()
            .expect("a model hash");
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            v["model"],
            "{}",
            v["name"]
        );
    }
    let _: () = redis::cmd("HSET")
        .arg(&keys.model)
        .arg("faces")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = producer::model_info(&mut conn, &keys).await.unwrap_err();
    assert!(e.to_string().contains("faces"), "{e}");
}
