//! A worker that cannot work stops taking work: a model that fails like a broken device makes
//! its worker not live (`/healthz` 503) and exit with an error, while the jobs it held go to a
//! healthy worker without a dead letter; a forward pass that hangs makes the worker not live
//! while it hangs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use hmr2_client::{Frame, Keys};
use hmr2_worker::detector::TorchDetector;
use hmr2_worker::test_support::StandIn;
use hmr2_worker::Models;
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The tiny model, except that a batch holding an all-white crop fails with a (simulated)
/// CUDA illegal-memory-access error: `python -m models.faulty_model`.
fn faulty_model() -> PathBuf {
    let p = repo().join("models/artifacts/faulty-test.pt");
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// A job whose only crop is entirely white: the faulty model fails on it, the tiny model does
/// not. The box's crop lies entirely inside the white image.
fn marked(job_id: &str) -> Frame {
    let mut f = frame(job_id, white_png(256));
    f.job.boxes = vec![[64.0, 0.0, 192.0, 256.0]];
    f
}

fn good(job_id: &str, seed: u32) -> Frame {
    frame(job_id, image(320, 240, seed, seed % 2 == 0))
}

/// Polls `/healthz` until it answers 503 with a `broken` reason, or `within` passes; returns
/// that body.
async fn wait_broken(http: &str, worker: &mut WorkerProcess, within: Duration) -> Value {
    wait_for("worker A to report itself broken", within, || {
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("worker A exited ({status}) before /healthz was seen reporting it broken");
        }
        async move {
            let (status, body) = http_get(&format!("{http}/healthz")).await?;
            let report: Value = serde_json::from_str(&body).expect("/healthz answers JSON");
            if report["broken"].is_string() {
                assert_eq!(status, 503, "a broken worker is not live: {body}");
                Some(report)
            } else {
                None
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_device_stops_its_worker_and_its_jobs_go_to_a_healthy_one() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("broken");
    let keys = Keys::new(&p);

    // Worker A runs the faulty model. A long blocking read keeps its listener up for a while
    // after it breaks (a read under way finishes before the worker stops), so the probe below
    // sees the 503 before the process exits.
    let mut a_cfg = config(&url, &p);
    a_cfg.model.path = faulty_model();
    a_cfg.queue.claim_idle_ms = 1500;
    a_cfg.queue.block_ms = 1500;
    let a_http = format!("http://{}", a_cfg.http.listen);
    let mut a = spawn_worker_process_with(&a_cfg, &[("HMR2_QUEUE__CLAIM_INTERVAL_MS", "200")]);
    let log_path = std::env::temp_dir().join(format!("{p}.log"));

    // A works on good frames.
    let first: Vec<Frame> = (0..10).map(|i| good(&format!("g{i}"), i)).collect();
    enqueue_frames(&url, &p, &first, true).await;
    wait_for("A to answer 10 jobs", Duration::from_secs(120), || {
        if let Ok(Some(status)) = a.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("worker A exited ({status}) on good frames:\n{log}");
        }
        async {
            let got = results(&url, &keys.results).await;
            if got.len() == 10 {
                assert!(got.iter().all(|(_, r)| r["status"] == "ok"), "{got:?}");
                Ok(())
            } else {
                Err(format!("{} of 10 answered", got.len()))
            }
        }
    })
    .await;

    // Then a marked frame arrives alone: A's device "fails" on it. Alone, so that A's next
    // read finds nothing and blocks (block_ms): the listener stays up that long after A
    // breaks, for the probe to see (with more entries waiting, that read would return at once
    // and A could be gone within milliseconds).
    enqueue_frames(&url, &p, &[marked("marked")], true).await;
    let report = wait_broken(&a_http, &mut a, Duration::from_secs(60)).await;
    let reason = report["broken"].as_str().unwrap();
    assert!(reason.contains("illegal memory access"), "{report}");
    assert_eq!(report["alive"], false, "{report}");
    let status = wait_exit(&mut a, Duration::from_secs(60)).await;
    let a_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !status.success(),
        "a broken worker exits with an error, not {status}:\n{a_log}"
    );
    assert!(
        a_log.contains("illegal memory access"),
        "the reason is logged:\n{a_log}"
    );

    // More good frames, then worker B, which runs the tiny model and does not fail on the
    // marked frame: it answers every job A left, and the new ones, without a dead letter.
    let third: Vec<Frame> = (10..20).map(|i| good(&format!("g{i}"), i)).collect();
    enqueue_frames(&url, &p, &third, true).await;
    let mut b_cfg = config(&url, &p);
    b_cfg.queue.claim_idle_ms = 1500;
    let mut b = spawn_worker_process_with(&b_cfg, &[("HMR2_QUEUE__CLAIM_INTERVAL_MS", "200")]);
    let got = wait_results(&url, &keys.results, 21, Duration::from_secs(180)).await;
    wait_for("nothing pending", Duration::from_secs(60), || async {
        match pending(&url, &p).await {
            0 => Ok(()),
            n => Err(format!("{n} entries pending")),
        }
    })
    .await;
    signal_term(&b);
    let b_status = wait_exit(&mut b, Duration::from_secs(60)).await;
    assert!(b_status.success(), "worker B stops cleanly: {b_status}");

    let all = results(&url, &keys.results).await;
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    for (id, r) in &all {
        *per_job.entry(id).or_default() += 1;
        assert_eq!(r["status"], "ok", "{id}: {r}");
    }
    assert_eq!(per_job.len(), 21, "{per_job:?}");
    assert!(
        per_job.values().all(|&n| n == 1),
        "exactly one result per job: {per_job:?}"
    );
    let marked_result = &got["marked"];
    assert_eq!(marked_result["people"].as_array().unwrap().len(), 1);
    assert!(
        marked_result["worker"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{}", b.id())),
        "B answered the marked frame: {marked_result}"
    );
    let mut c = connect(&url).await;
    let dead: usize = c.xlen(&keys.dead).await.unwrap();
    assert_eq!(dead, 0, "no job was dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_pass_that_hangs_past_the_stall_timeout_makes_the_worker_not_live() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("stall");
    let keys = Keys::new(&p);
    let mut c = config(&url, &p);
    c.gpu.stall_timeout_s = 1;
    let http = format!("http://{}", c.http.listen);
    // No real device can be made to hang on demand here: the stand-in blocks in `forward` on a
    // batch holding an all-white crop (first byte 255) until the test releases it, and
    // otherwise answers like a model.
    let (release, hung) = std_mpsc::channel();
    let model = StandIn::new().hang_when(
        |crops, n| StandIn::crops(crops, n).any(|c| c[0] == 255),
        hung,
    );
    let token = CancellationToken::new();
    let worker = tokio::spawn(hmr2_worker::run_with(c, token.clone(), move |_| {
        Ok(Models {
            hmr: model,
            detector: None::<TorchDetector>,
        })
    }));
    wait_status(&format!("{http}/readyz"), 200, Duration::from_secs(60)).await;

    enqueue_frames(&url, &p, &[marked("hangs")], true).await;
    wait_status(&format!("{http}/healthz"), 503, Duration::from_secs(30)).await;
    let (status, body) = http_get(&format!("{http}/healthz")).await.unwrap();
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503);
    assert_eq!(report["stalled"]["operation"], "forward", "{body}");
    assert!(
        report["stalled"]["seconds"].as_f64().unwrap() > 1.0,
        "{body}"
    );
    assert!(
        report["broken"].is_null(),
        "a stall alone is not final: {body}"
    );

    // The device comes back: the worker is live again and the job is answered.
    release.send(()).unwrap();
    wait_status(&format!("{http}/healthz"), 200, Duration::from_secs(30)).await;
    let got = wait_results(&url, &keys.results, 1, Duration::from_secs(30)).await;
    assert_eq!(got["hangs"]["status"], "ok");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
