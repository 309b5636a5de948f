//! The producer API against a real `redis-server` (started here on a free port, killed on drop).
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmr2_client::producer::{self, Reply};
use hmr2_client::{Echo, ErrorCode, Frame, Job, JobResult, Keys, Limits, Status, WarningCode};
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
