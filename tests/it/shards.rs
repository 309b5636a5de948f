//! Shard-count mismatch: job streams of shards the workers do not read are reported.

use std::collections::HashMap;
use std::time::Duration;

use hmr2_client::{producer, Keys, Layout};
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

/// How often `ACL LOG` has recorded `user` refused access to `key`.
async fn refusals(conn: &mut redis::aio::MultiplexedConnection, user: &str, key: &str) -> i64 {
    let entries: Vec<HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(conn)
        .await
        .unwrap();
    let text = |e: &HashMap<String, redis::Value>, k: &str| match e.get(k) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
        _ => String::new(),
    };
    entries
        .iter()
        .filter(|e| text(e, "username") == user && text(e, "object") == key)
        .map(|e| match e.get("count") {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_the_redis_user_may_not_read_are_probed_once() {
    let redis = shared_redis();
    let p = prefix("unread-acl");
    // The README's rule for a sharded queue: `{<prefix>:k}` names only, so the unsharded
    // `<prefix>:jobs` is refused.
    let user = format!("{p}-worker");
    let password = "pw-unread";
    let rule = crate::security::worker_acl(&p, password)
        .replace(&format!("~{p}:*"), &format!("~{{{p}:*}}* ~{p}:model"));
    let mut admin = connect(&redis.url()).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(rule.split_whitespace().skip(2).collect::<Vec<_>>())
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = redis
        .url()
        .replacen("redis://", &format!("redis://{user}:{password}@"), 1);
    let mut cfg = config(&url, &p);
    cfg.queue.shards = 2;
    let http = format!("http://{}", cfg.http.listen);
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    let mut worker = spawn_worker_process_with(&cfg, &[("HMR2_QUEUE__GAUGE_INTERVAL_MS", "100")]);
    let is = |want: f64| {
        let http = http.clone();
        move || {
            let http = http.clone();
            async move {
                match gauge(&http, "hmr2_queue_unread_shards").await {
                    Ok(v) if v == want => Ok(()),
                    Ok(v) => Err(format!("{v}")),
                    Err(e) => Err(e),
                }
            }
        }
    };
    wait_for("the first look", Duration::from_secs(120), is(0.0)).await;
    let unsharded = Keys::new(&p).jobs;
    assert_eq!(refusals(&mut admin, &user, &unsharded).await, 1);

    // Later looks still see the sharded names (here shard 2, past queue.shards = 2) and do not
    // ask for the refused name again.
    let past = Layout::new(&p, 3, false).shard(2).clone();
    producer::add(
        &mut admin,
        &past,
        &frame("v:0", image(64, 48, 0, false)),
        true,
    )
    .await
    .unwrap();
    wait_for("shard 2 counted", Duration::from_secs(60), is(1.0)).await;
    let _: () = admin.del(&past.jobs).await.unwrap();
    wait_for("the gauge back at 0", Duration::from_secs(60), is(0.0)).await;
    assert_eq!(refusals(&mut admin, &user, &unsharded).await, 1);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let said = log
        .lines()
        .filter(|l| l.contains(&unsharded) && l.contains("may not read"));
    assert_eq!(said.count(), 1, "{log}");
    signal_term(&worker);
    wait_exit(&mut worker, Duration::from_secs(60)).await;
}
