//! The producer API against a real `redis-server` (started here on a free port, killed on drop).
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmr2_client::producer::{self, Reply};
use hmr2_client::{Echo, ErrorCode, Frame, Job, JobResult, Keys, Limits, Status};
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

        let results = producer::results_for_video(&mut conn, &keys.results, "v")
            .await
            .unwrap();
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
                .is_empty()
        );

        // Paging by hand: each page starts after the last entry of the previous one.
        let first: Vec<Reply> = producer::read_results(&mut conn, &keys.results, "-", 2)
            .await
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].job_id, "w:0");
        assert_eq!(first[1].job_id, "v:2");
        assert_eq!(first[1].result.entry_id, ids[2]);
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

#[tokio::test]
async fn an_unreadable_result_is_an_error_naming_its_entry() {
    let server = Server::start();
    tokio::time::timeout(TIMEOUT, async {
        let mut conn = server.connect().await;
        let stream = "t:results";
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("job_id")
            .arg("x")
            .arg("result")
            .arg("{not json")
            .query_async(&mut conn)
            .await
            .unwrap();
        let e = producer::read_results(&mut conn, stream, "-", 10)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&id), "{e}");
        let e = producer::results_for_video(&mut conn, stream, "v")
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&id), "{e}");
        // A missing `result` field too.
        let _: String = redis::cmd("XADD")
            .arg("t:other")
            .arg("*")
            .arg("job_id")
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let e = producer::read_results(&mut conn, "t:other", "-", 10)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no `result` field"), "{e}");
        // A stream that does not exist is simply empty.
        assert!(producer::read_results(&mut conn, "t:none", "-", 10)
            .await
            .unwrap()
            .is_empty());
    })
    .await
    .expect("test timed out");
}
