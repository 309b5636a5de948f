//! What an operator sees: /metrics over real HTTP, health and readiness, OOM recovery, memory.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use hmr2_client::Keys;
use hmr2_tools::redis_server::RedisServer;
use hmr2_worker::detector::TorchDetector;
use hmr2_worker::metrics as m;
use hmr2_worker::test_support::StandIn;
use hmr2_worker::Models;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// The metric names of DESIGN §5.
const DESIGN_NAMES: &[&str] = &[
    m::GPU_MEMORY_USED,
    m::GPU_MEMORY_TOTAL,
    m::GPU_UTILIZATION,
    m::TORCH_ALLOCATED,
    m::TORCH_RESERVED,
    m::JOB_PEAK_ALLOCATED,
    m::CACHE_RELEASES,
    m::OOM,
    m::JOBS,
    m::STAGE_DURATION,
    m::QUEUE_WAIT,
    m::JOB_DURATION,
    m::BATCH_SIZE,
    m::QUEUE_LENGTH,
    m::QUEUE_PENDING,
    m::QUEUE_LAG,
    m::WORKER_READY,
    m::BUILD_INFO,
    m::PEOPLE_PER_FRAME,
];

/// Counters labelled by GPU: on a CPU machine they only appear once something happened.
const GPU_COUNTERS: &[&str] = &[m::CACHE_RELEASES, m::OOM];

fn value_of(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_http_list_every_design_name() {
    let redis = shared_redis();
    let p = prefix("metrics");
    let frames: Vec<_> = (0..4)
        .map(|i| frame(&format!("m{i}"), image(320, 240, i, false)))
        .collect();
    enqueue_frames(&redis.url(), &p, &frames, true).await;
    let worker = Worker::start(config(&redis.url(), &p));
    wait_results(
        &redis.url(),
        &Keys::new(&p).results,
        4,
        Duration::from_secs(60),
    )
    .await;
    // The queue gauges are sampled every `queue.gauge_interval_ms`: wait for this queue's.
    let queue_length = format!("hmr2_queue_length{{stream=\"{p}:jobs\"}}");
    let body = wait_for(
        "a queue-gauge sample of this queue",
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(&format!("{}/metrics", worker.http))
                .await
                .expect("GET /metrics");
            assert_eq!(status, 200);
            body.contains(&queue_length).then_some(body)
        },
    )
    .await;
    let gpu = tch::Cuda::is_available();
    for name in DESIGN_NAMES {
        let present =
            body.contains(&format!("# TYPE {name} ")) || body.contains(&format!("\n{name}"));
        if !gpu && (m::GPU_ONLY.contains(name) || GPU_COUNTERS.contains(name)) {
            // No GPU in this process: NVML and allocator gauges are absent by design.
            continue;
        }
        assert!(present, "{name} missing from /metrics:\n{body}");
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no description"
        );
    }
    assert!(value_of(&body, "hmr2_jobs_total{outcome=\"ok\"}").unwrap() >= 4.0);
    assert_eq!(value_of(&body, "hmr2_worker_ready"), Some(1.0));
    assert!(body.contains("hmr2_build_info{"), "{body}");
    // Only GET on the three paths.
    let client = reqwest::Client::new();
    let post = client
        .post(format!("{}/metrics", worker.http))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    let other = client
        .get(format!("{}/admin", worker.http))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_warm_up_and_redis() {
    let mut redis = RedisServer::start().unwrap();
    let p = prefix("ready");
    let cfg = config(&redis.url(), &p);
    let http = format!("http://{}", cfg.http.listen);
    // The warm-up is the model's first forward pass: the stand-in holds it until released.
    let (release, held) = std_mpsc::channel();
    let mut first = true;
    let model = StandIn::new().hang_when(move |_, _| std::mem::take(&mut first), held);
    let token = CancellationToken::new();
    let worker = tokio::spawn(hmr2_worker::run_with(cfg, token.clone(), move |_| {
        Ok(Models {
            hmr: model,
            detector: None::<TorchDetector>,
        })
    }));
    // Loaded, warming up: live, and not ready, saying why.
    wait_status(&format!("{http}/healthz"), 200, Duration::from_secs(60)).await;
    let (s, body) = http_get(&format!("{http}/readyz")).await.unwrap();
    assert_eq!(s, 503, "ready before the warm-up finished: {body}");
    assert!(body.contains("\"warm\":false"), "{body}");
    release.send(()).unwrap();
    wait_status(&format!("{http}/readyz"), 200, Duration::from_secs(60)).await;
    let (_, body) = http_get(&format!("{http}/readyz")).await.unwrap();
    assert!(body.contains("\"warm\":true"), "{body}");
    // Redis away: not ready (and says why), still alive.
    redis.kill();
    wait_status(&format!("{http}/readyz"), 503, Duration::from_secs(30)).await;
    let (_, body) = http_get(&format!("{http}/readyz")).await.unwrap();
    assert!(body.contains("\"redis_ok\":false"), "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let why = report["not_ready"]["redis_read"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("reading ") && why.contains(":jobs"),
        "/readyz names the stream it cannot read and why: {body}"
    );
    let (s, _) = http_get(&format!("{http}/healthz")).await.unwrap();
    assert_eq!(s, 200, "alive even while Redis is down");
    redis.restart().unwrap();
    wait_status(&format!("{http}/readyz"), 200, Duration::from_secs(30)).await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_splits_batches_and_every_job_finishes() {
    let redis = shared_redis();
    let p = prefix("oom");
    let keys = Keys::new(&p);
    // The test model "runs out of memory" above 2 crops per forward; the worker batches 8.
    let frames: Vec<_> = (0..40)
        .map(|i| {
            let mut f = frame(&format!("o{i}"), image(320, 240, i % 3, false));
            if i % 5 == 0 {
                f.job.boxes = vec![[0.0, 0.0, 100.0, 200.0], [120.0, 10.0, 300.0, 230.0]];
            }
            f
        })
        .collect();
    enqueue_frames(&redis.url(), &p, &frames, true).await;
    let mut cfg = config(&redis.url(), &p);
    cfg.model.path = oom_model();
    let worker = Worker::start(cfg);
    let got = wait_results(&redis.url(), &keys.results, 40, Duration::from_secs(120)).await;
    let (_, body) = http_get(&format!("{}/metrics", worker.http)).await.unwrap();
    worker.stop().await;
    assert!(got.values().all(|r| r["status"] == "ok"));
    let ooms = value_of(&body, "hmr2_gpu_oom_total{gpu=\"cpu\"}").unwrap_or(0.0);
    assert!(ooms >= 1.0, "the OOMs were counted:\n{body}");
    assert_eq!(pending(&redis.url(), &p).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_fits_is_retried_then_dead_lettered() {
    let redis = shared_redis();
    let p = prefix("neverfits");
    let keys = Keys::new(&p);
    // An all-white crop makes the test model fail even alone (OOM at batch size 1).
    let white = white_png(256);
    // This box's square crop lies entirely inside the white image.
    let mut white_job = frame("white", white);
    white_job.job.boxes = vec![[64.0, 0.0, 192.0, 256.0]];
    let mut frames = vec![white_job];
    frames.extend((0..6).map(|i| frame(&format!("ok{i}"), image(320, 240, i, false))));
    enqueue_frames(&redis.url(), &p, &frames, true).await;
    let mut cfg = config(&redis.url(), &p);
    cfg.model.path = oom_model();
    cfg.queue.claim_idle_ms = 300;
    cfg.queue.max_deliveries = 2;
    let worker = Worker::start(cfg);
    let got = wait_results(&redis.url(), &keys.results, 7, Duration::from_secs(60)).await;
    worker.stop().await;
    for i in 0..6 {
        assert_eq!(got[&format!("ok{i}")]["status"], "ok");
    }
    let white = &got["white"];
    assert_eq!(white["status"], "error");
    assert_eq!(white["error"]["code"], "too_many_deliveries", "{white}");
    assert_eq!(xlen(&redis.url(), &keys.dead).await, 1);
    assert_eq!(pending(&redis.url(), &p).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_make_the_worker_not_ready() {
    let redis = shared_redis();
    let p = prefix("failing");
    let white = white_png(256);
    let frames: Vec<_> = (0..3)
        .map(|i| {
            let mut f = frame(&format!("w{i}"), white.clone());
            f.job.boxes = vec![[64.0, 0.0, 192.0, 256.0]];
            f
        })
        .collect();
    enqueue_frames(&redis.url(), &p, &frames, true).await;
    let mut cfg = config(&redis.url(), &p);
    cfg.model.path = oom_model();
    cfg.queue.max_batch = 1;
    cfg.queue.claim_idle_ms = 300;
    cfg.queue.max_deliveries = 1000;
    cfg.gpu.max_consecutive_failures = 3;
    let worker = Worker::start(cfg);
    let (s, body) = wait_for(
        "the worker to report failing",
        Duration::from_secs(60),
        || async {
            http_get(&format!("{}/readyz", worker.http))
                .await
                .filter(|(_, body)| body.contains("\"failing\":true"))
        },
    )
    .await;
    assert_eq!(s, 503);
    assert!(body.contains("\"inference_alive\":true"), "{body}");
    worker.stop().await;
    assert_eq!(
        xlen(&redis.url(), &Keys::new(&p).results).await,
        0,
        "failed frames are not acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_policy_serves_jobs() {
    let redis = shared_redis();
    for policy in ["per_job", "threshold", "never"] {
        let p = prefix(policy);
        let frames: Vec<_> = (0..4)
            .map(|i| frame(&format!("{policy}{i}"), image(200, 200, i, true)))
            .collect();
        enqueue_frames(&redis.url(), &p, &frames, false).await;
        let mut cfg = config(&redis.url(), &p);
        cfg.gpu.release = serde_json::from_value(serde_json::json!(policy)).unwrap();
        let worker = Worker::start(cfg);
        let got = wait_results(
            &redis.url(),
            &Keys::new(&p).results,
            4,
            Duration::from_secs(60),
        )
        .await;
        worker.stop().await;
        assert!(got.values().all(|r| r["status"] == "ok"), "{policy}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_stays_flat_over_two_thousand_frames() {
    let redis = shared_redis();
    let p = prefix("rss");
    let keys = Keys::new(&p);
    let images: Vec<Vec<u8>> = (0..8).map(|i| image(320, 240, i, false)).collect();
    let total = 2000;
    // This test looks for memory the worker keeps per frame. glibc's own heuristics add a
    // creep that depends on how busy the machine is, not on the worker: its mmap threshold
    // rises each time a large block is freed (frame-sized buffers then come from the heap and
    // their space is kept), and threads that allocate under contention get arenas of their
    // own. Measured here: 10-33 MiB over the 1,500 frames after warm-up with the defaults,
    // about 1 MiB with a fixed threshold and two arenas (docs/memory.md says what these
    // settings cost in production). The peak under load with the defaults is bounded by
    // `memory::a_flood_of_maximum_size_jobs_keeps_host_memory_bounded`.
    let mut child = spawn_worker_process_with(
        &config(&redis.url(), &p),
        &[
            ("MALLOC_ARENA_MAX", "2"),
            ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ],
    );
    let mut samples = Vec::new();
    for chunk in 0..(total / 250) {
        let frames: Vec<_> = (0..250)
            .map(|i| {
                let n = chunk * 250 + i;
                frame(&format!("r{n}"), images[n % images.len()].clone())
            })
            .collect();
        enqueue_frames(&redis.url(), &p, &frames, true).await;
        wait_results(
            &redis.url(),
            &keys.results,
            (chunk + 1) * 250,
            Duration::from_secs(300),
        )
        .await;
        samples.push(rss_kib(child.id()));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The first 500 frames are the warm-up (allocator pools, thread stacks, caches).
    let after_warmup = samples[1];
    let peak = *samples[1..].iter().max().unwrap();
    let growth_mib = (peak.saturating_sub(after_warmup)) as f64 / 1024.0;
    eprintln!(
        "RSS samples (KiB) every 250 frames: {samples:?}; growth after warm-up {growth_mib:.1} MiB"
    );
    assert!(
        growth_mib < 12.0,
        "RSS grew by {growth_mib:.1} MiB after warm-up: {samples:?}"
    );
}
