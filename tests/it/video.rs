//! Tracked videos (DESIGN §13) through real workers and a real redis-server: completion
//! (`done` once, frames in order), error, duplicated and missing frames, the tracker killed
//! while tracking, and identities kept through a crossing on the demo's clip.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use hmr2_client::{Frame, Job, Keys};
use hmr2_tools::demo::frames::{encode_jpeg, render_clip, ClipPerson, CLIP_FPS, CLIP_FRAMES};
use redis::AsyncCommands;
use serde_json::Value;

use crate::support::*;

/// A video's output stream: its `frame` entries and its `done` entries, in stream order.
#[derive(Debug, Default)]
struct Output {
    frames: Vec<Value>,
    done: Vec<Value>,
}

async fn output(url: &str, stream: &str) -> Output {
    let mut c = connect(url).await;
    let reply: redis::streams::StreamRangeReply = c.xrange_all(stream).await.expect("xrange");
    let mut out = Output::default();
    for e in reply.ids {
        for (field, list) in [("frame", &mut out.frames), ("done", &mut out.done)] {
            if let Some(redis::Value::BulkString(b)) = e.map.get(field) {
                list.push(serde_json::from_slice(b).expect("a JSON entry"));
            }
        }
    }
    out
}

/// Waits for the video's `done` entry; returns the whole output.
async fn wait_done(url: &str, stream: &str, within: Duration) -> Output {
    wait_for(&format!("the done entry of {stream}"), within, || async {
        let o = output(url, stream).await;
        if o.done.is_empty() {
            Err(format!("{} frame entries", o.frames.len()))
        } else {
            Ok(o)
        }
    })
    .await
}

/// Frame `n` of tracked video `video` (of `frames` frames at 10 fps), one person box.
fn tracked_frame(video: &str, n: u64, frames: u64, image: Vec<u8>) -> Frame {
    let job = Job::new(format!("{video}:{n}"))
        .video(video.to_string(), n)
        .tracked(frames, 10.0)
        .boxes(vec![[4.0, 4.0, 60.0, 44.0]]);
    Frame::new(job, image)
}

fn frame_numbers(o: &Output) -> Vec<u64> {
    o.frames
        .iter()
        .map(|f| f["frame_number"].as_u64().unwrap())
        .collect()
}

/// Every frame answered (one of them with an error), one frame sent twice, and one frame never
/// sent: each video is written once, in frame order, with the right counts, and its recorded
/// state is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_complete_once_with_error_duplicate_and_missing_frames() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("videos");
    let mut cfg = config(&url, &p);
    cfg.video.ttl_s = 4;
    cfg.video.expire_interval_ms = 200;
    let keys = Keys::new(&p);
    let worker = Worker::start(cfg);

    let mut frames = Vec::new();
    // "err": 4 frames, frame 2 is not an image.
    for n in 0..4 {
        let img = if n == 2 {
            b"not an image".to_vec()
        } else {
            image(64, 48, n as u32, true)
        };
        frames.push(tracked_frame("err", n, 4, img));
    }
    // "dup": 3 frames, frame 1 enqueued twice.
    for n in [0, 1, 1, 2] {
        frames.push(tracked_frame("dup", n, 3, image(64, 48, n as u32, true)));
    }
    // "miss": 3 frames, frame 2 never comes.
    for n in [1, 0] {
        frames.push(tracked_frame("miss", n, 3, image(64, 48, n as u32, true)));
    }
    // A frame of "miss" whose video object disagrees: answered invalid_job, not recorded.
    let odd = Frame::new(
        Job::new("miss:odd")
            .video("miss".to_string(), 2)
            .tracked(3, 25.0)
            .boxes(vec![[4.0, 4.0, 60.0, 44.0]]),
        image(64, 48, 9, true),
    );
    enqueue_frames(&url, &p, &frames, true).await;
    // "bad": 2 frames, frame 1 a job the parser refuses (boxes of the wrong type) that still
    // says which frame of which video it is.
    enqueue_frames(
        &url,
        &p,
        &[tracked_frame("bad", 0, 2, image(64, 48, 3, true))],
        true,
    )
    .await;
    let bad_job = r#"{"job_id":"bad:1","video_id":"bad","frame_number":1,"video":{"frames":2,"fps":10},"boxes":"nope"}"#;
    xadd_raw(
        &url,
        &p,
        &[
            ("job", bad_job.as_bytes()),
            ("image", &image(64, 48, 4, true)),
        ],
    )
    .await;

    let err = wait_done(
        &url,
        &keys.video_output("err", None).unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(frame_numbers(&err), [0, 1, 2, 3]);
    let done = &err.done[0];
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(
        (done["frames"].as_u64(), done["ok_frames"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(
        (
            done["error_frames"].as_u64(),
            done["missing_frames"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(err.frames[2]["status"], "error");
    assert_eq!(err.frames[2]["error"]["code"], "invalid_image");
    assert_eq!(err.frames[2]["people"].as_array().map(Vec::len), Some(0));
    for f in [&err.frames[0], &err.frames[1], &err.frames[3]] {
        assert_eq!(f["status"], "ok");
        let people = f["people"].as_array().unwrap();
        assert_eq!(people.len(), 1, "{f}");
        assert_eq!(people[0]["track_id"], 1);
        assert_eq!(people[0]["keypoints_2d"].as_array().map(Vec::len), Some(44));
        assert_eq!(people[0]["body_pose"].as_array().map(Vec::len), Some(23));
    }
    assert_eq!(done["tracks"][0]["track_id"], 1);

    let bad = wait_done(
        &url,
        &keys.video_output("bad", None).unwrap(),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(frame_numbers(&bad), [0, 1]);
    assert_eq!(bad.done[0]["error_frames"], 1, "{}", bad.done[0]);
    assert_eq!(bad.frames[1]["error"]["code"], "invalid_box");

    // The duplicate: once the queue is empty, still one done and three frames.
    let dup_stream = keys.video_output("dup", None).unwrap();
    let dup = wait_done(&url, &dup_stream, Duration::from_secs(120)).await;
    // Eleven distinct jobs (one enqueued twice); then the odd frame of the open video "miss".
    wait_results(&url, &keys.results, 11, Duration::from_secs(60)).await;
    enqueue_frames(&url, &p, &[odd], true).await;
    let results = wait_results(&url, &keys.results, 12, Duration::from_secs(60)).await;
    let odd = &results["miss:odd"];
    assert_eq!(odd["error"]["code"], "invalid_job", "{odd}");
    let why = odd["error"]["message"].as_str().unwrap();
    assert!(why.contains("video object disagrees"), "{why}");
    wait_for("an empty job stream", Duration::from_secs(60), || async {
        xlen(&url, &keys.jobs).await == 0 && pending(&url, &p).await == 0
    })
    .await;
    let again = output(&url, &dup_stream).await;
    assert_eq!((again.done.len(), again.frames.len()), (1, 3), "{again:?}");
    assert_eq!(frame_numbers(&dup), [0, 1, 2]);
    assert_eq!(dup.done[0]["error_frames"], 0);

    // The missing frame: the video expires after video.ttl_s with what it got.
    let miss = wait_done(
        &url,
        &keys.video_output("miss", None).unwrap(),
        Duration::from_secs(120),
    )
    .await;
    let done = &miss.done[0];
    assert_eq!(done["status"], "expired", "{done}");
    assert_eq!(done["missing_frames"], 1);
    assert_eq!(done["ok_frames"], 2);
    assert_eq!(frame_numbers(&miss), [0, 1]);

    // Nothing of the videos is left but their done markers.
    let mut c = connect(&url).await;
    for v in ["err", "dup", "miss", "bad"] {
        let frames_left: bool = c.exists(keys.video_frames(v)).await.unwrap();
        assert!(!frames_left, "{v}: recorded frames deleted");
        let state: HashMap<String, String> = c.hgetall(keys.video_state(v)).await.unwrap();
        assert_eq!(state.keys().collect::<Vec<_>>(), ["done"], "{v}");
    }
    let open: usize = c.zcard(&keys.videos_open).await.unwrap();
    assert_eq!(open, 0);
    let waiting: usize = c.xlen(&keys.videos).await.unwrap();
    assert_eq!(waiting, 0);
    // A late duplicate of a written video is answered but starts nothing.
    enqueue_frames(
        &url,
        &p,
        &[tracked_frame("err", 0, 4, image(64, 48, 0, true))],
        true,
    )
    .await;
    wait_for(
        "the late frame answered",
        Duration::from_secs(60),
        || async { xlen(&url, &keys.jobs).await == 0 && pending(&url, &p).await == 0 },
    )
    .await;
    let frames_left: bool = c.exists(keys.video_frames("err")).await.unwrap();
    assert!(
        !frames_left,
        "a late frame of a written video is not recorded again"
    );
    assert_eq!(
        output(&url, &keys.video_output("err", None).unwrap())
            .await
            .done
            .len(),
        1
    );
    worker.stop().await;
}

/// IoU of two boxes.
fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    iw * ih / (area(a) + area(b) - iw * ih)
}

fn box_of(v: &Value) -> [f64; 4] {
    let b: Vec<f64> = serde_json::from_value(v["box"].clone()).unwrap();
    [b[0], b[1], b[2], b[3]]
}

/// The demo's clip, submitted as one tracked video without boxes to the worker binary with the
/// small detector: `done` arrives once, the frames come in order, each figure keeps one
/// `track_id` through the crossing (the hidden one bridged), and the late figure gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_keep_their_track_through_a_crossing_and_a_late_figure_gets_a_new_one() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("clip");
    let mut cfg = config(&url, &p);
    cfg.detector.path = repo().join("models/detector-tiny.pt");
    let keys = Keys::new(&p);
    let (w, h) = (640, 360);
    let clip: Vec<(Vec<u8>, Vec<ClipPerson>)> = (0..CLIP_FRAMES)
        .map(|i| {
            let (img, people) = render_clip(w, h, i);
            (encode_jpeg(&img, 90), people)
        })
        .collect();
    // Out of order, as a fleet of producers would send them.
    let mut order: Vec<usize> = (0..CLIP_FRAMES).collect();
    order.sort_by_key(|&i| (i * 7) % CLIP_FRAMES);
    let frames: Vec<Frame> = order
        .iter()
        .map(|&i| {
            let job = Job::new(format!("clip:{i}"))
                .video("clip".to_string(), i as u64)
                .tracked(CLIP_FRAMES as u64, CLIP_FPS);
            Frame::new(job, clip[i].0.clone())
        })
        .collect();
    let mut worker = spawn_worker_process_with(
        &cfg,
        &[("HMR2_DETECTOR__PATH", cfg.detector.path.to_str().unwrap())],
    );
    enqueue_frames(&url, &p, &frames, true).await;
    let stream = keys.video_output("clip", None).unwrap();
    let out = wait_done(&url, &stream, Duration::from_secs(300)).await;
    assert_eq!(out.done.len(), 1);
    assert_eq!(
        frame_numbers(&out),
        (0..CLIP_FRAMES as u64).collect::<Vec<_>>()
    );
    let done = &out.done[0];
    assert_eq!(done["status"], "ok");
    assert_eq!(done["ok_frames"].as_u64(), Some(CLIP_FRAMES as u64));

    // Which track each visible figure got, frame by frame.
    let mut tracks_of: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    let mut unmatched = Vec::new();
    for (n, f) in out.frames.iter().enumerate() {
        let people = f["people"].as_array().unwrap();
        for gt in clip[n].1.iter().filter(|c| c.visible) {
            let best = people
                .iter()
                .map(|p| (iou(box_of(p), gt.bbox), p["track_id"].as_u64().unwrap()))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((o, id)) if o >= 0.5 => {
                    tracks_of.entry(gt.person).or_default().insert(id);
                }
                _ => unmatched.push((n, gt.person)),
            }
        }
    }
    if unmatched.len() > 3 {
        let raw = results(&url, &keys.results).await;
        for &(n, person) in &unmatched {
            let detected: Vec<String> = raw
                .iter()
                .filter(|(id, _)| id == &format!("clip:{n}"))
                .flat_map(|(_, r)| r["people"].as_array().cloned().unwrap_or_default())
                .map(|p| format!("{:?} {}", box_of(&p), p["score"]))
                .collect();
            let tracked: Vec<String> = out.frames[n]["people"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("#{} {:?} {}", p["track_id"], box_of(p), p["interpolated"]))
                .collect();
            let gt = clip[n].1.iter().find(|c| c.person == person).unwrap().bbox;
            eprintln!(
                "frame {n} figure {person} at {gt:?}: detected {detected:?}, tracked {tracked:?}"
            );
        }
        panic!("figures without a track: {unmatched:?}");
    }
    let story = || {
        let mut s = String::new();
        for (n, f) in out.frames.iter().enumerate() {
            let gt: Vec<String> = clip[n]
                .1
                .iter()
                .map(|c| {
                    format!(
                        "{}{}@{:.0}",
                        c.person,
                        if c.visible { "" } else { "(hidden)" },
                        c.bbox[0]
                    )
                })
                .collect();
            let tracked: Vec<String> = f["people"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    format!(
                        "#{}@{:.0}{}",
                        p["track_id"],
                        box_of(p)[0],
                        if p["interpolated"] == true { "i" } else { "" }
                    )
                })
                .collect();
            s += &format!("\n{n}: {gt:?} -> {tracked:?}");
        }
        s
    };
    let ids: Vec<u64> = (0..3)
        .map(|p| {
            let t = tracks_of.get(&p).cloned().unwrap_or_default();
            if t.len() != 1 {
                eprintln!("{}", story());
            }
            assert_eq!(
                t.len(),
                1,
                "figure {p} had tracks {t:?}; all: {tracks_of:?}"
            );
            *t.first().unwrap()
        })
        .collect();
    assert!(
        ids[0] != ids[1] && ids[2] != ids[0] && ids[2] != ids[1],
        "{ids:?}"
    );
    // Numbered by first appearance: the late figure's id is above the other two.
    assert!(ids[2] > ids[0] && ids[2] > ids[1], "{ids:?}");
    // The hidden figure's track runs through the frames it was hidden in.
    let hidden: Vec<usize> = (0..CLIP_FRAMES)
        .filter(|&i| clip[i].1.iter().any(|c| c.person == 1 && !c.visible))
        .collect();
    assert!(!hidden.is_empty());
    for &n in &hidden {
        let people = out.frames[n]["people"].as_array().unwrap();
        assert!(
            people
                .iter()
                .any(|p| p["track_id"].as_u64() == Some(ids[1])),
            "frame {n}: the hidden figure's track is bridged"
        );
    }
    let info = done["tracks"].as_array().unwrap();
    let late = info
        .iter()
        .find(|t| t["track_id"].as_u64() == Some(ids[2]))
        .unwrap();
    let first_seen = (0..CLIP_FRAMES)
        .find(|&i| clip[i].1.iter().any(|c| c.person == 2))
        .unwrap();
    assert!(
        late["first_frame"].as_u64().unwrap() >= first_seen as u64 - 1,
        "{late}"
    );
    signal_term(&worker);
    let status = tokio::task::block_in_place(|| worker.wait()).unwrap();
    assert!(status.success(), "{status}");
}

/// A tracker SIGKILLed while it holds a video: another one takes it over once its lease lapses,
/// and the output is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_killed_while_tracking_leaves_the_video_to_another_written_once() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("trkill");
    let mut cfg = config(&url, &p);
    cfg.queue.claim_idle_ms = 1500;
    let keys = Keys::new(&p);
    // The GPU worker records frames but does not track.
    let gpu = spawn_worker_process_with(&cfg, &[("HMR2_TRACK__IN_WORKER", "false")]);
    let tracker_env = |name: &'static str| {
        vec![
            ("HMR2_QUEUE__CONSUMER", name),
            ("HMR2_QUEUE__CLAIM_INTERVAL_MS", "200"),
        ]
    };
    let mut c = connect(&url).await;
    let mut killed_while_holding = false;
    for attempt in 0..3 {
        let video = format!("long-{attempt}");
        // Enough frames, with vertices, that tracking takes a while.
        const N: u64 = 120;
        let frames: Vec<Frame> = (0..N)
            .map(|n| {
                let job = Job::new(format!("{video}:{n}"))
                    .video(video.clone(), n)
                    .tracked(N, 30.0)
                    .vertices(true)
                    .boxes(vec![[4.0, 4.0, 60.0, 44.0], [10.0, 2.0, 50.0, 46.0]]);
                Frame::new(job, image(64, 48, n as u32, true))
            })
            .collect();
        enqueue_frames(&url, &p, &frames, true).await;
        wait_for(
            "the video queued for tracking",
            Duration::from_secs(180),
            || async {
                let mut c = connect(&url).await;
                let n: usize = c.xlen(&keys.videos).await.unwrap_or(0);
                n == 1
            },
        )
        .await;
        let mut a_cfg = cfg.clone();
        a_cfg.http.listen = format!("127.0.0.1:{}", free_port().unwrap());
        let mut a = spawn_tracker_process(&a_cfg, &tracker_env("tracker-a"));
        // Kill it as soon as it holds the job.
        wait_for(
            "tracker-a holding the video",
            Duration::from_secs(60),
            || async {
                let mut c = connect(&url).await;
                let held: redis::streams::StreamPendingCountReply = c
                    .xpending_count(&keys.videos, &keys.trackers, "-", "+", 10)
                    .await
                    .unwrap_or_default();
                held.ids.iter().any(|p| p.consumer == "tracker-a")
            },
        )
        .await;
        a.kill().unwrap();
        a.wait().unwrap();
        let stream = keys.video_output(&video, None).unwrap();
        if output(&url, &stream).await.done.is_empty() {
            killed_while_holding = true;
        }
        let mut b_cfg = cfg.clone();
        b_cfg.http.listen = format!("127.0.0.1:{}", free_port().unwrap());
        let b = spawn_tracker_process(&b_cfg, &tracker_env("tracker-b"));
        let out = wait_done(&url, &stream, Duration::from_secs(180)).await;
        // Written once: one done, one entry per frame.
        let again = output(&url, &stream).await;
        assert_eq!((again.done.len(), again.frames.len()), (1, N as usize));
        assert_eq!(frame_numbers(&out), (0..N).collect::<Vec<_>>());
        let with_vertices = out.frames[0]["people"][0]["vertices"]
            .as_array()
            .map(Vec::len);
        assert_eq!(with_vertices, Some(6890), "vertices from the SMPL layer");
        drop(b);
        let left: usize = c.xlen(&keys.videos).await.unwrap();
        assert_eq!(left, 0);
        if killed_while_holding {
            break;
        }
    }
    assert!(
        killed_while_holding,
        "tracker-a was never killed before it wrote the video"
    );
    drop(gpu);
}

/// A video longer than `limits.max_video_frames` is refused frame by frame, and nothing of it is
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_over_the_frame_limit_is_refused_and_not_recorded() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("vlimit");
    let mut cfg = config(&url, &p);
    cfg.limits.max_video_frames = 10;
    let keys = Keys::new(&p);
    let worker = Worker::start(cfg);
    enqueue_frames(
        &url,
        &p,
        &[tracked_frame("long", 0, 11, image(64, 48, 1, true))],
        true,
    )
    .await;
    let results = wait_results(&url, &keys.results, 1, Duration::from_secs(60)).await;
    let r = &results["long:0"];
    assert_eq!(r["error"]["code"], "invalid_job", "{r}");
    let why = r["error"]["message"].as_str().unwrap();
    assert!(why.contains("limits.max_video_frames (10)"), "{why}");
    let mut c = connect(&url).await;
    let recorded: bool = c.exists(keys.video_frames("long")).await.unwrap();
    let open: usize = c.zcard(&keys.videos_open).await.unwrap();
    assert!(
        !recorded && open == 0,
        "nothing of the refused video is recorded"
    );
    worker.stop().await;
}
