//! Shard-count mismatch: job streams of shards the workers do not read are reported.

use std::time::Duration;

use hmr2_client::{producer, Layout};
use redis::AsyncCommands;

use crate::support::*;

/// The value of the unlabelled gauge `name` on `/metrics`.
async fn gauge(http: &str, name: &str) -> Result<f64, String> {
    let (_, body) = http_get(&format!("{http}/metrics"))
        .await
        .ok_or("no answer from /metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name} yet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stream_past_queue_shards_is_reported_until_it_is_gone() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("unread");
    let cfg = config(&url, &p);
    assert_eq!(cfg.queue.shards, 1);
    let http = format!("http://{}", cfg.http.listen);
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    let mut worker = spawn_worker_process_with(&cfg, &[("HMR2_QUEUE__GAUGE_INTERVAL_MS", "100")]);
    let name = "hmr2_queue_unread_shards";
    let is = |want: f64| {
        let http = http.clone();
        move || {
            let http = http.clone();
            async move {
                match gauge(&http, name).await {
                    Ok(v) if v == want => Ok(()),
                    Ok(v) => Err(format!("{name} {v}")),
                    Err(e) => Err(e),
                }
            }
        }
    };
    wait_for(
        "the first look: nothing unread",
        Duration::from_secs(120),
        is(0.0),
    )
    .await;

    // A producer with two shards puts a video on shard 1, which this worker does not read.
    let wide = Layout::new(&p, 2, false);
    let stream = wide.shard(1).jobs.clone();
    let mut conn = connect(&url).await;
    producer::add(
        &mut conn,
        wide.shard(1),
        &frame("v:0", image(64, 48, 0, false)),
        true,
    )
    .await
    .unwrap();
    wait_for(
        "the unread stream to be counted",
        Duration::from_secs(60),
        is(1.0),
    )
    .await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(&stream))
        .unwrap_or_else(|| panic!("no error naming {stream}:\n{log}"));
    assert!(line.contains("queue.shards = 1"), "{line}");
    assert_eq!(xlen(&url, &stream).await, 1, "nobody read it");

    // The stream removed (drained by a worker with the right shard count, say): back to 0.
    let _: () = conn.del(&stream).await.unwrap();
    wait_for("the gauge back at 0", Duration::from_secs(60), is(0.0)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains(&stream)).count(),
        1,
        "logged once, not at every look:\n{log}"
    );
    signal_term(&worker);
    wait_exit(&mut worker, Duration::from_secs(60)).await;
}
