//! The worker end to end: jobs in, results out, nothing lost, bad input dead-lettered.

use std::time::Duration;

use base64::Engine;
use hmr2_client::Keys;
use serde_json::{json, Value};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mixed_jobs_get_exactly_two_hundred_results() {
    let redis = shared_redis();
    let p = prefix("mixed");
    let keys = Keys::new(&p);
    let mut frames = Vec::new();
    for i in 0..200u32 {
        let png = i % 2 == 1;
        let (w, h) = if i % 3 == 0 { (320, 240) } else { (240, 320) };
        let mut f = frame(&format!("job-{i}"), image(w, h, i % 7, png));
        f.job.frame_number = Some(i as u64);
        let n_boxes = (i % 4) as usize;
        if n_boxes > 0 {
            f.job.boxes = (0..n_boxes)
                .map(|b| {
                    let x = 10.0 + 40.0 * b as f64;
                    [x, 20.0, x + 60.0, 200.0]
                })
                .collect();
        }
        frames.push(f);
    }
    // Half base64 in the JSON, half raw bytes in the `image` field.
    let (b64_half, raw_half) = frames.split_at(100);
    enqueue_frames(&redis.url(), &p, b64_half, false).await;
    enqueue_frames(&redis.url(), &p, raw_half, true).await;

    let worker = Worker::start(config(&redis.url(), &p));
    let got = wait_results(&redis.url(), &keys.results, 200, Duration::from_secs(180)).await;
    worker.stop().await;

    assert_eq!(
        results(&redis.url(), &keys.results).await.len(),
        200,
        "one result per job"
    );
    for (i, f) in frames.iter().enumerate() {
        let r = &got[f.job.job_id.as_ref()];
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["job_id"], f.job.job_id.as_ref());
        assert_eq!(r["frame_number"], i);
        let people = r["people"].as_array().unwrap();
        assert_eq!(people.len(), f.job.boxes.len().max(1), "job {i}");
        for person in people {
            assert_eq!(person["keypoints_2d"].as_array().unwrap().len(), 44);
            assert_eq!(person["keypoints_3d"].as_array().unwrap().len(), 44);
            assert_eq!(person["body_pose"].as_array().unwrap().len(), 23);
            assert_eq!(person["global_orient"].as_array().unwrap().len(), 3);
            assert_eq!(person["betas"].as_array().unwrap().len(), 10);
            assert!(person.get("vertices").is_none(), "vertices only on request");
        }
        let size = if i % 3 == 0 {
            json!([320, 240])
        } else {
            json!([240, 320])
        };
        assert_eq!(r["image_size"], size);
    }
    assert_eq!(
        pending(&redis.url(), &p).await,
        0,
        "everything acknowledged"
    );
    assert_eq!(
        xlen(&redis.url(), &keys.jobs).await,
        0,
        "acknowledged entries are deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertices_come_only_when_asked_for_and_reply_to_is_honoured() {
    let redis = shared_redis();
    let p = prefix("include");
    let mut f = frame("with-vertices", image(200, 300, 1, false));
    f.job.include.vertices = true;
    f.job.reply_to = Some(format!("{p}:results:mine").into());
    enqueue_frames(&redis.url(), &p, &[f], true).await;
    let worker = Worker::start(config(&redis.url(), &p));
    let got = wait_results(
        &redis.url(),
        &format!("{p}:results:mine"),
        1,
        Duration::from_secs(60),
    )
    .await;
    worker.stop().await;
    let person = &got["with-vertices"]["people"][0];
    assert_eq!(person["vertices"].as_array().unwrap().len(), 6890);
    assert_eq!(xlen(&redis.url(), &Keys::new(&p).results).await, 0);
}

/// A PNG whose header claims `width`×`height` (the pixel data is irrelevant: the header is
/// checked before anything is decoded).
fn png_with_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = image(8, 8, 1, true);
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_input_gets_its_code_and_a_dead_letter() {
    let redis = shared_redis();
    let p = prefix("bad");
    let keys = Keys::new(&p);
    let jpeg = image(320, 240, 3, false);
    let good = b64(&jpeg);
    let job = |extra: Value| {
        let mut j = json!({"v": 1, "image_base64": good});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        j.to_string().into_bytes()
    };
    let huge = "A".repeat(2 * 1024 * 1024);
    type Fields = Vec<(&'static str, Vec<u8>)>;
    let cases: Vec<(&str, Fields)> = vec![
        (
            "invalid_json",
            vec![("job", b"{\"job_id\": \"x\", oops".to_vec())],
        ),
        (
            "invalid_json",
            vec![(
                "job",
                br#"{"job_id":"nan","image_base64":"AA","boxes":[[NaN,0,1,1]]}"#.to_vec(),
            )],
        ),
        ("invalid_job", vec![("image", jpeg.clone())]),
        (
            "unsupported_version",
            vec![("job", job(json!({"job_id": "v2", "v": 2})))],
        ),
        (
            "missing_image",
            vec![("job", br#"{"job_id":"noimg"}"#.to_vec())],
        ),
        (
            "invalid_base64",
            vec![(
                "job",
                job(json!({"job_id": "b64", "image_base64": "!!not base64!!"})),
            )],
        ),
        (
            "invalid_image",
            vec![(
                "job",
                job(json!({"job_id": "trunc", "image_base64": b64(&jpeg[..jpeg.len() / 2])})),
            )],
        ),
        (
            "invalid_image",
            vec![(
                "job",
                job(json!({"job_id": "text", "image_base64": b64(b"hello, this is not an image")})),
            )],
        ),
        (
            "invalid_image",
            vec![(
                "job",
                job(json!({"job_id": "zero", "image_base64": b64(&png_with_header(0, 10))})),
            )],
        ),
        (
            "image_too_large",
            vec![(
                "job",
                job(
                    json!({"job_id": "bomb", "image_base64": b64(&png_with_header(100_000, 100_000))}),
                ),
            )],
        ),
        (
            "image_too_large",
            vec![("job", job(json!({"job_id": "bytes", "image_base64": huge})))],
        ),
        (
            "invalid_box",
            vec![(
                "job",
                job(json!({"job_id": "outside", "boxes": [[1000, 1000, 1100, 1100]]})),
            )],
        ),
        (
            "invalid_box",
            vec![(
                "job",
                job(json!({"job_id": "inverted", "boxes": [[100, 100, 50, 150]]})),
            )],
        ),
        (
            "invalid_box",
            vec![(
                "job",
                job(json!({"job_id": "overflow", "boxes": [[0, 0, 1e39, 10]]})),
            )],
        ),
        (
            "invalid_box",
            vec![(
                "job",
                job(json!({"job_id": "many", "boxes": vec![[0, 0, 10, 10]; 33]})),
            )],
        ),
        (
            "invalid_box",
            vec![(
                "job",
                job(json!({"job_id": "shape", "boxes": [[0, 0, 10]]})),
            )],
        ),
        (
            "invalid_job",
            vec![("job", job(json!({"job_id": "x".repeat(300)})))],
        ),
        (
            "invalid_job",
            vec![("job", job(json!({"job_id": "inc", "include": ["mesh"]})))],
        ),
        ("invalid_job", vec![("job", job(json!({"job_id": 42})))]),
    ];
    let mut ids = Vec::new();
    for (code, fields) in &cases {
        let f: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        ids.push((code, xadd_raw(&redis.url(), &p, &f).await));
    }
    let mut cfg = config(&redis.url(), &p);
    cfg.limits.max_image_bytes = 1024 * 1024;
    let worker = Worker::start(cfg);
    let all = wait_for(
        "a result for every bad job",
        Duration::from_secs(60),
        || async {
            let all = results(&redis.url(), &keys.results).await;
            if all.len() >= cases.len() {
                Ok(all)
            } else {
                Err(format!("{} of {}", all.len(), cases.len()))
            }
        },
    )
    .await;
    // The worker still serves good jobs afterwards.
    enqueue_frames(&redis.url(), &p, &[frame("good-after", jpeg.clone())], true).await;
    wait_for(
        "the good job after bad ones to be served",
        Duration::from_secs(60),
        || async {
            results(&redis.url(), &keys.results)
                .await
                .iter()
                .any(|(id, _)| id == "good-after")
        },
    )
    .await;
    worker.stop().await;

    for (code, entry) in &ids {
        let r = all
            .iter()
            .map(|(_, r)| r)
            .find(|r| r["entry_id"] == entry.as_str())
            .unwrap_or_else(|| panic!("no result for entry {entry} ({code})"));
        assert_eq!(r["status"], "error");
        assert_eq!(r["error"]["code"], **code, "entry {entry}: {r}");
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
    }
    let after = results(&redis.url(), &keys.results).await;
    let ok = after.iter().find(|(id, _)| id == "good-after").unwrap();
    assert_eq!(ok.1["status"], "ok");
    assert_eq!(
        xlen(&redis.url(), &keys.dead).await,
        cases.len(),
        "one dead letter per bad job"
    );
    let mut c = connect(&redis.url()).await;
    let dead: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut c, &keys.dead)
            .await
            .unwrap();
    for e in &dead.ids {
        assert!(e.map.contains_key("error") && e.map.contains_key("deliveries"));
        assert!(
            !e.map.contains_key("image"),
            "the frame is dropped from dead letters (queue.dead_keep_image = false)"
        );
    }
    let with_job = cases
        .iter()
        .filter(|(_, f)| f.iter().any(|(k, _)| *k == "job"))
        .count();
    assert_eq!(
        dead.ids
            .iter()
            .filter(|e| e.map.contains_key("job"))
            .count(),
        with_job,
        "every dead letter keeps its job's `job` field"
    );
    assert_eq!(pending(&redis.url(), &p).await, 0);
    assert_eq!(xlen(&redis.url(), &keys.jobs).await, 0);
}

/// The largest absolute difference between two JSON trees of numbers.
fn max_diff(a: &Value, b: &Value) -> f64 {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs(),
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(x, y)| max_diff(x, y))
                .fold(0.0, f64::max)
        }
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .map(|(k, v)| max_diff(v, &y[k]))
            .fold(0.0, f64::max),
        (x, y) => {
            assert_eq!(x, y);
            0.0
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_gives_the_same_result_at_batch_sizes_one_and_eight() {
    let redis = shared_redis();
    let img = image(640, 480, 5, false);
    let mut people = Vec::new();
    for max_batch in [1usize, 8] {
        let p = prefix(&format!("batch{max_batch}"));
        let frames: Vec<_> = (0..8)
            .map(|i| {
                let mut f = frame(&format!("same-{i}"), img.clone());
                f.job.boxes = vec![[100.0, 50.0, 300.0, 450.0]];
                f
            })
            .collect();
        enqueue_frames(&redis.url(), &p, &frames, true).await;
        let mut cfg = config(&redis.url(), &p);
        cfg.queue.max_batch = max_batch;
        let worker = Worker::start(cfg);
        let got = wait_results(
            &redis.url(),
            &Keys::new(&p).results,
            8,
            Duration::from_secs(60),
        )
        .await;
        worker.stop().await;
        for r in got.values() {
            people.push(r["people"].clone());
        }
    }
    for other in &people[1..] {
        let d = max_diff(&people[0], other);
        assert!(d <= 1e-3, "results differ by {d} between batch sizes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_that_is_not_a_stream_gets_an_error_on_the_default_stream() {
    let redis = shared_redis();
    let p = prefix("replytype");
    let keys = Keys::new(&p);
    let mut c = connect(&redis.url()).await;
    let _: () = redis::AsyncCommands::set(&mut c, format!("{p}:results:a-string"), "x")
        .await
        .unwrap();
    let mut f = frame("bad-reply", image(200, 200, 2, false));
    f.job.reply_to = Some(format!("{p}:results:a-string").into());
    enqueue_frames(&redis.url(), &p, &[f], true).await;
    let worker = Worker::start(config(&redis.url(), &p));
    let got = wait_results(&redis.url(), &keys.results, 1, Duration::from_secs(60)).await;
    worker.stop().await;
    let r = &got["bad-reply"];
    assert_eq!(r["error"]["code"], "invalid_job", "{r}");
    assert_eq!(xlen(&redis.url(), &keys.dead).await, 1);
    assert_eq!(pending(&redis.url(), &p).await, 0);
}
