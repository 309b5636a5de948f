//! The worker through its model seam (`run_with`): a stand-in model instead of libtorch, so the
//! batching and the out-of-memory ladder are exercised end to end against a real redis-server
//! with figures the test controls. The stand-in is the only mock here: no device can be made to
//! run out of memory on demand on this machine.

use std::time::Duration;

use hmr2_client::{producer, Frame, Job, Keys};
use hmr2_worker::detector::TorchDetector;
use hmr2_worker::test_support::{Batches, StandIn};
use hmr2_worker::Models;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_do_not_fit_are_split_and_every_job_is_answered() {
    let redis = shared_redis();
    let p = prefix("seam");
    let keys = Keys::new(&p);
    let mut c = config(&redis.url(), &p);
    c.queue.max_batch = 8;
    let n = 24;
    let frames: Vec<Frame> = (0..n)
        .map(|i| {
            let job = Job::new(format!("seam-{i}"))
                .video("seam", i as u64)
                .boxes(vec![
                    [10.0, 10.0, 100.0, 200.0],
                    [120.0, 20.0, 220.0, 230.0],
                ]);
            Frame::new(job, image(320, 240, i as u32 % 5, i % 2 == 0))
        })
        .collect();
    let mut conn = connect(&redis.url()).await;
    producer::add_all(&mut conn, &keys, &frames, true, |_| {})
        .await
        .unwrap();

    // Fits at most 3 crops per forward pass; every output's `pred_cam` is `(1, 0, 0)` and its
    // betas hold the crop's mean byte, so each person's output can be traced to its crop.
    let batches = Batches::default();
    let model = StandIn::new()
        .fits(3)
        .batches(&batches)
        .on_forward(|crops, n, _| {
            let mut out = StandIn::output(n);
            out.betas = StandIn::crops(crops, n)
                .flat_map(|c| [c.iter().map(|&b| b as f32).sum::<f32>() / c.len() as f32; 10])
                .collect();
            Ok(out)
        });
    let http = format!("http://{}", c.http.listen);
    let token = CancellationToken::new();
    let worker = tokio::spawn(hmr2_worker::run_with(c, token.clone(), move |_| {
        Ok(Models {
            hmr: model,
            detector: None::<TorchDetector>,
        })
    }));

    let got = wait_results(&redis.url(), &keys.results, n, Duration::from_secs(120)).await;
    let metrics = http_get(&format!("{http}/metrics")).await.unwrap().1;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    assert_eq!(got.len(), n);
    for (id, r) in &got {
        assert_eq!(r["status"], "ok", "{id}: {r}");
        assert_eq!(r["device"], "stand-in");
        let people = r["people"].as_array().unwrap();
        assert_eq!(people.len(), 2, "{id}: both boxes answered");
        // Two different crops: their traced outputs differ, in box order.
        assert_ne!(people[0]["betas"], people[1]["betas"], "{id}");
        assert_eq!(people[0]["box"][0], 10.0);
    }
    // Warm-up at max_batch 8 and full batches did not fit: the ladder split them.
    assert_eq!(batches.largest(), 8);
    let ooms: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("hmr2_gpu_oom_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(ooms >= 1.0, "OOM splits are counted:\n{metrics}");
    assert_eq!(pending(&redis.url(), &p).await, 0);
}
