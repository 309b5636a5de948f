//! The person detector in the worker (DESIGN §12): start-up checks of the detector file, and
//! frames without boxes answered with the people the small detector finds.

use std::path::PathBuf;
use std::time::Duration;

use hmr2_client::{producer, Frame, Job, Keys};
use hmr2_tools::demo::frames::{encode_jpeg, render_random};
use hmr2_worker::config::OnEmpty;
use serde_json::Value;

use crate::support::*;

fn artifact(name: &str) -> PathBuf {
    let p = repo().join("models/artifacts").join(name);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// The small detector trained on the demo's figures (committed beside the models).
fn tiny_detector() -> PathBuf {
    let p = repo().join("models/detector-tiny.pt");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_that_breaks_the_contract_stops_start_up_saying_why() {
    let redis = shared_redis();
    for (file, says) in [
        ("detector-wrong_contract.pt", "person-detector/0"),
        ("detector-half_scores.pt", "Half"),
        ("detector-no_scores.pt", "`boxes` and `scores`"),
        ("detector-no_meta.pt", "no meta()"),
    ] {
        let p = prefix("baddet");
        let mut c = config(&redis.url(), &p);
        c.detector.path = artifact(file);
        let e = tokio::time::timeout(
            Duration::from_secs(120),
            hmr2_worker::run(c, Default::default()),
        )
        .await
        .expect("start-up ends")
        .expect_err("refused");
        let e = e.to_string();
        assert!(e.contains(says), "{file}: {e}");
        assert!(e.contains("detector"), "{file}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_refuses_a_broken_detector_file() {
    let redis = shared_redis();
    let p = prefix("baddet-bin");
    let c = config(&redis.url(), &p);
    let file = artifact("detector-wrong_contract.pt");
    let mut child =
        spawn_worker_process_with(&c, &[("HMR2_DETECTOR__PATH", file.to_str().unwrap())]);
    let status = wait_exit(&mut child, Duration::from_secs(120)).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(std::env::temp_dir().join(format!("{p}.log"))).unwrap();
    assert!(log.contains("person-detector/0"), "{log}");
}

/// `hmr2-worker check` with these variables: its exit status and what it printed.
fn check(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hmr2-worker"))
        .arg("check")
        .env("HMR2_MODEL__DEVICE", "cpu")
        .envs(env.iter().copied())
        .output()
        .expect("hmr2-worker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// `hmr2-worker check` fails (non-zero) on a missing model or a missing configured detector,
/// naming the file and the setting; with both present it passes.
#[test]
fn check_fails_on_a_missing_model_or_detector_and_names_the_setting() {
    let model = artifact("hmr2-tiny.pt");
    let model = model.to_str().unwrap();
    let (status, text) = check(&[("HMR2_MODEL__PATH", "/nonexistent/hmr2.pt")]);
    assert!(!status.success(), "a missing model fails check: {text}");
    assert!(
        text.contains("/nonexistent/hmr2.pt") && text.contains("HMR2_MODEL__PATH"),
        "{text}"
    );
    let (status, text) = check(&[
        ("HMR2_MODEL__PATH", model),
        ("HMR2_DETECTOR__PATH", "/nonexistent/detector.pt"),
    ]);
    assert!(!status.success(), "a missing detector fails check: {text}");
    assert!(
        text.contains("/nonexistent/detector.pt") && text.contains("HMR2_DETECTOR__PATH"),
        "{text}"
    );
    let (status, text) = check(&[("HMR2_MODEL__PATH", model)]);
    assert!(status.success(), "the tiny model passes check: {text}");
    assert!(text.contains("forward       ok"), "{text}");
}

/// `check` says which score threshold the worker keeps boxes at and where it comes from (the
/// file's recommendation unless the configuration sets one), and warns about a detector that
/// finds only the demo's figures, or about having none.
#[test]
fn check_prints_the_threshold_in_use_and_warns_about_toy_or_missing_detectors() {
    let model = artifact("hmr2-tiny.pt");
    let model = model.to_str().unwrap();
    let tiny = tiny_detector();
    let tiny = tiny.to_str().unwrap();
    let (status, text) = check(&[("HMR2_MODEL__PATH", model), ("HMR2_DETECTOR__PATH", tiny)]);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("score >= 0.5 (the file's recommendation)"),
        "{text}"
    );
    assert!(text.contains("NMS IoU 0.45"), "{text}");
    assert!(text.contains("only the demo's synthetic figures"), "{text}");
    let (status, text) = check(&[
        ("HMR2_MODEL__PATH", model),
        ("HMR2_DETECTOR__PATH", tiny),
        ("HMR2_DETECTOR__SCORE_THRESHOLD", "0.3"),
    ]);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("score >= 0.3 (detector.score_threshold)"),
        "{text}"
    );
    let (status, text) = check(&[("HMR2_MODEL__PATH", model)]);
    assert!(status.success(), "{text}");
    assert!(text.contains("without a detector"), "{text}");
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The worker's start-up log: a warning without a detector (every job without boxes becomes a
/// whole-frame crop), and one for the tiny detector, beside the threshold it keeps boxes at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_warns_at_start_up_without_a_real_detector() {
    let redis = shared_redis();
    let tiny = tiny_detector();
    for (detector, says) in [
        ("", "no person detector"),
        (
            tiny.to_str().unwrap(),
            "finds only the demo's synthetic figures",
        ),
    ] {
        let p = prefix("detwarn");
        let c = config(&redis.url(), &p);
        let mut child = spawn_worker_process_with(&c, &[("HMR2_DETECTOR__PATH", detector)]);
        let path = std::env::temp_dir().join(format!("{p}.log"));
        let mut log = String::new();
        for _ in 0..1200 {
            log = plain(&std::fs::read_to_string(&path).unwrap_or_default());
            if log.contains("worker started") || child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(log.contains("worker started"), "{log}");
        assert!(
            log.contains("WARN") && log.contains(says),
            "{detector:?}: {log}"
        );
        if !detector.is_empty() {
            assert!(log.contains("score_threshold=0.5"), "{log}");
        }
        let _ = child.kill();
    }
}

/// A model or detector file libtorch cannot read stops `run` with an error naming the file, its
/// role and its setting (the worker does not guess which of the two it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_model_or_detector_file_stops_start_up_naming_its_setting() {
    let redis = shared_redis();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.pt");
    std::fs::write(&corrupt, b"PK\x03\x04 not a TorchScript archive").unwrap();
    for (model, detector, says) in [
        (
            corrupt.clone(),
            PathBuf::new(),
            "the model file: setting model.path, env HMR2_MODEL__PATH",
        ),
        (
            tiny_model(),
            corrupt.clone(),
            "the detector file: setting detector.path, env HMR2_DETECTOR__PATH",
        ),
    ] {
        let p = prefix("corrupt");
        let mut c = config(&redis.url(), &p);
        c.model.path = model;
        c.detector.path = detector;
        let e = tokio::time::timeout(
            Duration::from_secs(120),
            hmr2_worker::run(c, Default::default()),
        )
        .await
        .expect("start-up ends")
        .expect_err("refused")
        .to_string();
        assert!(e.contains("corrupt.pt") && e.contains(says), "{e}");
    }
}

/// Intersection over union of two boxes.
fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

fn boxes_of(result: &Value) -> Vec<([f64; 4], String, Option<f64>)> {
    result["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let b: Vec<f64> = p["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (
                [b[0], b[1], b[2], b[3]],
                p["box_source"].as_str().unwrap().to_string(),
                p["score"].as_f64(),
            )
        })
        .collect()
}

/// Frames without boxes of several shapes, through the worker with the small detector: the
/// people come back with the drawn figures' boxes, mapped back from the letterbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_people_match_the_drawn_figures_on_any_frame_shape() {
    let redis = shared_redis();
    let p = prefix("detect");
    let keys = Keys::new(&p);
    let mut c = config(&redis.url(), &p);
    c.detector.path = tiny_detector();
    let sizes = [
        (1280, 720),
        (720, 1280),
        (640, 480),
        (1001, 333),
        (333, 1001),
    ];
    let n = 200;
    let mut truth = Vec::new();
    let mut frames = Vec::new();
    for i in 0..n {
        let (w, h) = sizes[i % sizes.len()];
        let (img, drawn) = render_random(w, h, 9_000_000 + i as u64);
        truth.push(drawn);
        let job = Job::new(format!("d{i}")).video("detect", i as u64);
        frames.push(Frame::new(job, encode_jpeg(&img, 90)));
    }
    let mut conn = connect(&redis.url()).await;
    producer::add_all(&mut conn, &keys, &frames, true, |_| {})
        .await
        .unwrap();
    let worker = Worker::start(c);
    let got = wait_results(&redis.url(), &keys.results, n, Duration::from_secs(600)).await;
    worker.stop().await;

    let (mut drawn_total, mut found, mut extra) = (0, 0, 0);
    for (i, drawn) in truth.iter().enumerate() {
        let r = &got[&format!("d{i}")];
        assert_eq!(r["status"], "ok", "{r}");
        let people = boxes_of(r);
        let [w, h] = [
            r["image_size"][0].as_f64().unwrap(),
            r["image_size"][1].as_f64().unwrap(),
        ];
        for (b, source, score) in &people {
            assert_eq!(source, "detector");
            let s = score.expect("detected people carry a score");
            assert!(s >= 0.5, "{s}");
            assert!(
                b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h,
                "{b:?} in {w}x{h}"
            );
        }
        let scores: Vec<f64> = people.iter().map(|p| p.2.unwrap()).collect();
        assert!(scores.windows(2).all(|s| s[0] >= s[1]), "score order");
        drawn_total += drawn.len();
        for d in drawn {
            if people.iter().any(|(b, _, _)| iou(*b, *d) >= 0.5) {
                found += 1;
            }
        }
        extra += people
            .iter()
            .filter(|(b, _, _)| !drawn.iter().any(|d| iou(*b, *d) >= 0.5))
            .count();
    }
    let rate = found as f64 / drawn_total as f64;
    assert!(
        rate >= 0.9,
        "found {found} of {drawn_total} drawn figures ({rate:.3}); {extra} extra boxes"
    );
    assert!(
        extra * 10 <= drawn_total,
        "{extra} boxes match no figure (of {drawn_total})"
    );
}

/// Job boxes win over the detector; an empty frame is answered per `on_empty`; more people than
/// `limits.max_boxes` are cut to the best ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_boxes_win_empty_frames_follow_on_empty_and_max_boxes_caps_people() {
    let redis = shared_redis();
    // A frame with three figures, and an empty one (seeds chosen by rendering).
    let crowded = (0..1000u64)
        .map(|s| (s, render_random(960, 540, s)))
        .find(|(_, (_, b))| b.len() == 3)
        .expect("some seed draws three figures");
    let empty = (0..1000u64)
        .map(|s| (s, render_random(960, 540, s)))
        .find(|(_, (_, b))| b.is_empty())
        .expect("some seed draws nobody");
    for on_empty in [OnEmpty::None, OnEmpty::WholeFrame] {
        let p = prefix("detect-rules");
        let keys = Keys::new(&p);
        let mut c = config(&redis.url(), &p);
        c.detector.path = tiny_detector();
        c.detector.on_empty = on_empty;
        c.limits.max_boxes = 2;
        let given = [10.0, 20.0, 200.0, 500.0];
        let frames = vec![
            Frame::new(
                Job::new("given").boxes(vec![given]),
                encode_jpeg(&crowded.1 .0, 90),
            ),
            Frame::new(Job::new("crowded"), encode_jpeg(&crowded.1 .0, 90)),
            Frame::new(Job::new("empty"), encode_jpeg(&empty.1 .0, 90)),
        ];
        let mut conn = connect(&redis.url()).await;
        producer::add_all(&mut conn, &keys, &frames, true, |_| {})
            .await
            .unwrap();
        let worker = Worker::start(c);
        let got = wait_results(&redis.url(), &keys.results, 3, Duration::from_secs(300)).await;
        worker.stop().await;

        let given_people = boxes_of(&got["given"]);
        assert_eq!(
            given_people.len(),
            1,
            "the job's box, not the detector's three"
        );
        assert_eq!(given_people[0].1, "job");
        assert_eq!(given_people[0].0, given);
        assert!(given_people[0].2.is_none(), "job boxes carry no score");

        let crowded_people = boxes_of(&got["crowded"]);
        assert_eq!(crowded_people.len(), 2, "max_boxes = 2 of three figures");
        assert!(crowded_people.iter().all(|p| p.1 == "detector"));

        let empty_people = boxes_of(&got["empty"]);
        assert_eq!(got["empty"]["status"], "ok");
        match on_empty {
            OnEmpty::None => assert!(empty_people.is_empty(), "{:?}", got["empty"]),
            OnEmpty::WholeFrame => {
                assert_eq!(empty_people.len(), 1);
                assert_eq!(empty_people[0].1, "frame");
                assert_eq!(empty_people[0].0, [0.0, 0.0, 960.0, 540.0]);
            }
        }
    }
}

/// At start-up the worker publishes what a renderer needs besides the results: the model's meta
/// and the mesh topology the exporter wrote beside the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_hash_holds_the_meta_and_the_mesh_topology() {
    use redis::AsyncCommands;
    let redis = shared_redis();
    let p = prefix("model-hash");
    let keys = Keys::new(&p);
    let c = config(&redis.url(), &p);
    let http = format!("http://{}", c.http.listen);
    let worker = Worker::start(c);
    wait_status(&format!("{http}/readyz"), 200, Duration::from_secs(120)).await;
    let mut conn = connect(&redis.url()).await;
    let hash: std::collections::HashMap<String, String> = conn.hgetall(&keys.model).await.unwrap();
    worker.stop().await;
    let json = |k: &str| -> Value {
        serde_json::from_str(
            hash.get(k)
                .unwrap_or_else(|| panic!("no `{k}` in {:?}", hash.keys())),
        )
        .unwrap()
    };
    assert_eq!(json("meta")["name"], "hmr2");
    assert!(!hash.contains_key("detector"), "no detector configured");
    let faces = json("faces");
    let faces = faces.as_array().unwrap();
    assert_eq!(faces.len(), 13776);
    assert!(faces.iter().all(|f| f
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i.as_u64().unwrap() < 6890)));
    assert_eq!(json("keypoint_names").as_array().unwrap().len(), 44);
    assert_eq!(json("parents").as_array().unwrap().len(), 24);
    assert_eq!(json("topology"), "synthetic");
}

/// A crowd larger than `limits.max_boxes`: the result keeps the cap, says how many the detector
/// found (`detected`), and `hmr2_frames_truncated_total` counts the frame. Jobs with their own
/// boxes carry no `detected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_cut_at_max_boxes_says_how_many_were_found() {
    let redis = shared_redis();
    let p = prefix("crowd");
    let keys = Keys::new(&p);
    let mut c = config(&redis.url(), &p);
    c.detector.path = tiny_detector();
    c.limits.max_boxes = 1;
    let mut frames: Vec<Frame> = (0..4)
        .map(|i| {
            let (img, _) = hmr2_tools::demo::frames::render(1280, 720, 2, i * 5);
            Frame::new(Job::new(format!("c{i}")), encode_jpeg(&img, 90))
        })
        .collect();
    let (img, drawn) = hmr2_tools::demo::frames::render(1280, 720, 1, 0);
    frames.push(Frame::new(
        Job::new("boxed").boxes(drawn),
        encode_jpeg(&img, 90),
    ));
    let mut conn = connect(&redis.url()).await;
    producer::add_all(&mut conn, &keys, &frames, true, |_| {})
        .await
        .unwrap();
    let worker = Worker::start(c);
    let got = wait_results(&redis.url(), &keys.results, 5, Duration::from_secs(120)).await;
    let metrics = http_get(&format!("{}/metrics", worker.http))
        .await
        .expect("GET /metrics")
        .1;
    worker.stop().await;
    let mut cut = 0;
    for i in 0..4 {
        let r = &got[&format!("c{i}")];
        let people = r["people"].as_array().unwrap().len();
        let detected = r["detected"].as_u64().expect("a detected count") as usize;
        assert!(people <= 1 && detected >= people, "{r}");
        if detected > people {
            cut += 1;
        }
    }
    assert!(
        cut >= 3,
        "two figures found and one kept in most frames ({cut} of 4)"
    );
    assert!(got["boxed"].get("detected").is_none(), "{}", got["boxed"]);
    let truncated: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hmr2_frames_truncated_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("hmr2_frames_truncated_total on /metrics");
    assert!(truncated >= cut as f64, "{truncated} < {cut}");
}
