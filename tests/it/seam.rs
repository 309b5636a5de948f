//! The worker through its model seam (`run_with`): a stand-in model instead of libtorch, so the
//! batching, the out-of-memory ladder and non-finite outputs are exercised end to end against a
//! real redis-server with figures the test controls. The stand-in is the only mock here: no
//! device can be made to run out of memory, nor a model to answer NaN, on demand on this
//! machine.

use std::time::Duration;

use hmr2_client::{producer, Frame, Job, JobResult, Keys, WarningCode};
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

/// A frame whose left half is white and right half black, PNG.
fn half_white_png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, _| {
        image::Rgb(if x < width / 2 { [255; 3] } else { [0; 3] })
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_whose_outputs_are_not_finite_is_dropped_with_a_warning() {
    let redis = shared_redis();
    let p = prefix("nonfinite");
    let keys = Keys::new(&p);
    let c = config(&redis.url(), &p);
    // Two boxes: one on the white half, one on the black half.
    let white = [20.0, 60.0, 100.0, 180.0];
    let black = [220.0, 60.0, 300.0, 180.0];
    let job = Job::new("nf-0").video("nf", 0).boxes(vec![white, black]);
    let mut conn = connect(&redis.url()).await;
    producer::add(
        &mut conn,
        &keys,
        &Frame::new(job, half_white_png(320, 240)),
        true,
    )
    .await
    .unwrap();

    // The stand-in answers NaN in the 3D keypoints of a bright crop (the white box's), finite
    // outputs for the others (the black box's, and the warm-up's zero crops).
    let model = StandIn::new().on_forward(|crops, n, _| {
        let mut out = StandIn::output(n);
        for (i, crop) in StandIn::crops(crops, n).enumerate() {
            let mean = crop.iter().map(|&b| b as f64).sum::<f64>() / crop.len() as f64;
            if mean > 128.0 {
                out.keypoints_3d[i * 44 * 3 + 5] = f32::NAN;
            }
        }
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

    wait_results(&redis.url(), &keys.results, 1, Duration::from_secs(120)).await;
    let metrics = http_get(&format!("{http}/metrics")).await.unwrap().1;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    // The contract's own reader reads it: no `null` where a number belongs.
    let page = producer::read_results(&mut conn, &keys.results, "-", 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let r: &JobResult = page[0].result.as_ref().expect("a readable result");
    assert_eq!(r.status, hmr2_client::Status::Ok);
    assert_eq!(r.people.len(), 1, "{r:?}");
    assert_eq!(r.people[0].bbox, black.map(|v| v as f32));
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].code, WarningCode::NonFiniteOutput);
    assert_eq!(
        r.warnings[0].message,
        "person 0 (box [20.0, 60.0, 100.0, 180.0]) dropped: keypoints_3d holds NaN"
    );
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("hmr2_people_dropped_total{reason=\"non_finite\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no dropped-people counter:\n{metrics}"));
    assert!(dropped >= 1.0, "{metrics}");
    assert_eq!(pending(&redis.url(), &p).await, 0);
}
