//! Faults and lifecycle: a killed worker, SIGTERM, a Redis restart.

use std::collections::HashSet;
use std::time::Duration;

use hmr2_client::Keys;
use hmr2_tools::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::support::*;

fn frames(n: usize) -> Vec<hmr2_client::Frame> {
    (0..n)
        .map(|i| frame(&format!("f{i}"), image(480, 360, (i % 5) as u32, false)))
        .collect()
}

fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_worker_are_reclaimed_and_finished_by_another() {
    let redis = shared_redis();
    let p = prefix("kill");
    let keys = Keys::new(&p);
    let n = 150;
    enqueue_frames(&redis.url(), &p, &frames(n), true).await;

    let mut cfg = config(&redis.url(), &p);
    cfg.queue.claim_idle_ms = 1_000;
    let mut first = spawn_worker_process(&cfg);
    // Kill it mid-run: once it has published some results and holds unacknowledged entries.
    let url = redis.url();
    wait_for(
        "the first worker to be mid-run",
        Duration::from_secs(60),
        || async { xlen(&url, &keys.results).await >= 5 && pending(&url, &p).await > 0 },
    )
    .await;
    signal(&first, libc::SIGKILL);
    first.wait().unwrap();
    let orphaned = pending(&redis.url(), &p).await;
    let done_before = xlen(&redis.url(), &keys.results).await;
    assert!(orphaned > 0, "the killed worker left entries pending");
    assert!(done_before < n, "the kill came mid-run");

    let mut cfg2 = config(&redis.url(), &p);
    cfg2.queue.claim_idle_ms = 1_000;
    let second = Worker::start(cfg2);
    let got = wait_results(&redis.url(), &keys.results, n, Duration::from_secs(120)).await;
    second.stop().await;
    let expected: HashSet<String> = (0..n).map(|i| format!("f{i}")).collect();
    assert_eq!(
        got.keys().cloned().collect::<HashSet<_>>(),
        expected,
        "no job lost"
    );
    for r in got.values() {
        assert_eq!(r["status"], "ok");
    }
    assert_eq!(pending(&redis.url(), &p).await, 0);
    assert_eq!(xlen(&redis.url(), &keys.jobs).await, 0);
    // Duplicates are possible only for entries the killed worker had in flight.
    let total = xlen(&redis.url(), &keys.results).await;
    assert!(
        total - n <= orphaned,
        "{total} results for {n} jobs, {orphaned} were in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs_leaves_the_rest_and_exits_zero() {
    let redis = shared_redis();
    let p = prefix("term");
    let keys = Keys::new(&p);
    let n = 400;
    enqueue_frames(&redis.url(), &p, &frames(n), true).await;
    let mut child = spawn_worker_process(&config(&redis.url(), &p));
    let url = redis.url();
    wait_for("first results", Duration::from_secs(60), || async {
        xlen(&url, &keys.results).await >= 5
    })
    .await;
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "clean exit");
    let done = xlen(&redis.url(), &keys.results).await;
    let left = xlen(&redis.url(), &keys.jobs).await;
    assert_eq!(
        done + left,
        n,
        "every job is either answered or still queued"
    );
    assert!(
        left > 0,
        "the worker stopped fetching instead of draining the whole queue"
    );
    // Whatever it was delivered but did not finish (a read under way as the signal came) is
    // released: idle for far longer than any claim_idle_ms, so other workers take it at once.
    let mut c = connect(&redis.url()).await;
    let held: redis::streams::StreamPendingCountReply = c
        .xpending_count(&keys.jobs, &keys.group, "-", "+", 1000)
        .await
        .unwrap();
    for e in &held.ids {
        assert!(
            e.last_delivered_ms >= 3_600_000,
            "entry {} was left pending for claim_idle_ms instead of released",
            e.id
        );
    }
    let consumers: redis::streams::StreamInfoConsumersReply =
        c.xinfo_consumers(&keys.jobs, &keys.group).await.unwrap();
    if held.ids.is_empty() {
        assert!(
            consumers.consumers.is_empty(),
            "a worker that holds nothing leaves the group on a clean exit"
        );
    }
    // A second worker with the default claim_idle_ms (60 s) finishes everything well before
    // that: nothing was stranded.
    let mut cfg = config(&redis.url(), &p);
    cfg.queue.claim_idle_ms = 60_000;
    let second = Worker::start(cfg);
    wait_results(&redis.url(), &keys.results, n, Duration::from_secs(45)).await;
    second.stop().await;
    assert_eq!(pending(&redis.url(), &p).await, 0);
}

/// A shutdown that outlasts the grace period leaves jobs pending for other workers and still
/// exits with status 0: the process must not run libtorch's static destructors while the
/// inference thread is inside a forward pass (that ended in SIGSEGV).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_outlasts_the_grace_period_exits_zero() {
    let redis = shared_redis();
    let url = redis.url();
    for round in 0..3 {
        let p = prefix(&format!("grace{round}"));
        let keys = Keys::new(&p);
        enqueue_frames(&url, &p, &frames(300), true).await;
        let mut cfg = config(&url, &p);
        // No grace at all, and large batches: the forward pass under way when the signal
        // comes is still running when the worker leaves.
        cfg.shutdown.grace_seconds = 0;
        cfg.queue.max_batch = 32;
        let mut child = spawn_worker_process(&cfg);
        wait_for("first results", Duration::from_secs(60), || async {
            xlen(&url, &keys.results).await >= 40
        })
        .await;
        signal(&child, libc::SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(60)).await;
        let log = std::fs::read_to_string(std::env::temp_dir().join(format!("{p}.log")))
            .unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: a shutdown past the grace period exits cleanly, not {status}:\n{log}"
        );
        assert!(
            log.contains("grace period over"),
            "round {round}: the shutdown did outlast the grace period:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rides_out_a_redis_restart() {
    let mut redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ])
    .unwrap();
    let p = prefix("restart");
    let keys = Keys::new(&p);
    let n = 200;
    enqueue_frames(&redis.url(), &p, &frames(n), true).await;
    let worker = Worker::start(config(&redis.url(), &p));
    let url = redis.url();
    wait_for("first results", Duration::from_secs(60), || async {
        xlen(&url, &keys.results).await >= 10
    })
    .await;
    redis.shutdown();
    // Down long enough for the worker to notice.
    wait_status(
        &format!("{}/readyz", worker.http),
        503,
        Duration::from_secs(30),
    )
    .await;
    redis.restart().unwrap();
    let got = wait_results(&redis.url(), &keys.results, n, Duration::from_secs(120)).await;
    assert_eq!(got.len(), n, "every job answered after the restart");
    // An entry delivered again around the restart may still be in flight once every job has a
    // result: it is acknowledged soon after.
    wait_for("nothing pending", Duration::from_secs(30), || async {
        match pending(&url, &p).await {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    })
    .await;
    worker.stop().await;
    assert_eq!(pending(&redis.url(), &p).await, 0);
    assert_eq!(xlen(&redis.url(), &keys.jobs).await, 0);
}

/// A publish that would grow a Redis over `maxmemory` (here each result is larger than the
/// small frame it answers) is refused whole: nothing is acknowledged without its result, the
/// worker says why on `/readyz` and in its metrics, and every job is answered once memory is
/// allowed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_redis_refuses_writes() {
    let redis = RedisServer::start().unwrap();
    let p = prefix("maxmem");
    let keys = Keys::new(&p);
    let n = 40;
    let small: Vec<_> = (0..n)
        .map(|i| frame(&format!("f{i}"), image(32, 24, (i % 5) as u32, false)))
        .collect();
    enqueue_frames(&redis.url(), &p, &small, true).await;
    let mut admin = connect(&redis.url()).await;
    create_group(&mut admin, &keys).await;
    config_set(&mut admin, "maxmemory", "1").await;
    let cfg = config(&redis.url(), &p);
    let http = format!("http://{}", cfg.http.listen);
    let _worker = spawn_worker_process(&cfg);
    // The worker fetches and runs the jobs, but every publish is refused (OOM).
    let url = redis.url();
    wait_for("jobs to be fetched", Duration::from_secs(60), || async {
        pending(&url, &p).await > 0
    })
    .await;
    // ... and has its writes refused again and again: as many refusals as two attempts per job.
    wait_for(
        "the worker's writes to be refused",
        Duration::from_secs(60),
        || async {
            let refused = refused_writes(&mut connect(&url).await).await;
            if refused >= 2 * n {
                Ok(())
            } else {
                Err(format!("{refused} refused"))
            }
        },
    )
    .await;
    assert!(
        pending(&redis.url(), &p).await > 0,
        "the jobs are still held"
    );
    assert_eq!(
        xlen(&redis.url(), &keys.results).await,
        0,
        "nothing published"
    );
    assert_eq!(
        xlen(&redis.url(), &keys.jobs).await,
        n,
        "nothing acknowledged or deleted"
    );
    // Why, for an operator: readiness names the publish path and the server's words, and the
    // metrics count the refusals.
    let (status, body) = http_get(&format!("{http}/readyz")).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let why = ready["not_ready"]["redis_publish"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("out of memory") && why.contains("OOM"),
        "{body}"
    );
    let (_, metrics) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hmr2_redis_errors_total{")
                && l.contains(r#"op="publish""#)
                && l.contains(r#"code="OOM""#)),
        "no OOM publish errors counted"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"hmr2_worker_ready_input{input="redis_publish"} 0"#),
        "the redis_publish readiness input is not shown down"
    );
    config_set(&mut admin, "maxmemory", "0").await;
    let got = wait_results(&redis.url(), &keys.results, n, Duration::from_secs(120)).await;
    assert!(got.values().all(|r| r["status"] == "ok"));
    wait_for("nothing pending", Duration::from_secs(30), || async {
        pending(&url, &p).await == 0
    })
    .await;
    assert_eq!(xlen(&redis.url(), &keys.jobs).await, 0);
    wait_status(&format!("{http}/readyz"), 200, Duration::from_secs(30)).await;
}

/// Producers filled Redis past `maxmemory` (their own XADDs then fail with OOM, leaving it
/// just over the limit): every publish frees the frame it acknowledges, more than its result
/// adds, so the worker drains the backlog on its own (a `#!lua` script without `allow-oom` was
/// refused whole: nothing was ever answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_maxmemory_drains_by_itself() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let p = prefix("full");
    let keys = Keys::new(&p);
    let n = 60;
    let pad = vec![b'p'; 100_000];
    for i in 0..n {
        let job = format!(r#"{{"job_id":"f{i}"}}"#);
        let img = image(64, 48, i as u32 % 5, false);
        xadd_raw(
            &url,
            &p,
            &[("job", job.as_bytes()), ("image", &img), ("pad", &pad)],
        )
        .await;
    }
    let mut admin = connect(&url).await;
    create_group(&mut admin, &keys).await;
    // Half the backlog over the limit: half the jobs must be answered while Redis is out of
    // memory before it is under the limit again.
    let used = used_memory(&mut admin).await;
    let limit = used - (n as u64 / 2) * pad.len() as u64;
    config_set(&mut admin, "maxmemory-policy", "noeviction").await;
    config_set(&mut admin, "maxmemory", &limit.to_string()).await;
    let refused: redis::RedisResult<String> = admin.xadd(&keys.jobs, "*", &[("job", "{}")]).await;
    assert!(
        refused.is_err_and(|e| e.code() == Some("OOM")),
        "Redis is over maxmemory"
    );
    let worker = Worker::start(config(&url, &p));
    let got = wait_results(&url, &keys.results, n, Duration::from_secs(120)).await;
    worker.stop().await;
    assert!(got.values().all(|r| r["status"] == "ok"), "{got:?}");
    assert_eq!(pending(&url, &p).await, 0);
    assert_eq!(xlen(&url, &keys.jobs).await, 0);
    assert!(
        used_memory(&mut admin).await < limit,
        "the backlog's memory was freed"
    );
}

/// Creates the job stream's consumer group, as a worker would have before Redis filled up.
async fn create_group(admin: &mut redis::aio::MultiplexedConnection, keys: &Keys) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.jobs)
        .arg(&keys.group)
        .arg("0")
        .query_async(admin)
        .await
        .unwrap();
}

/// `CONFIG SET key value`.
async fn config_set(admin: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(admin)
        .await
        .unwrap();
}

/// Redis's `used_memory`.
async fn used_memory(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    info_number(admin, "memory", "used_memory:").await
}

/// The pool hands out busy connections without a PING; one that a Redis restart broke fails
/// its command once and is then replaced, not handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_broken_by_a_restart_is_replaced() {
    let mut redis = RedisServer::start().unwrap();
    let p = prefix("pool");
    let cfg = config(&redis.url(), &p);
    let q = hmr2_worker::test_support::Queue::new(&cfg).unwrap();
    q.shard(0).ensure_group().await.unwrap();
    q.shard(0).stats().await.expect("a first command");
    redis.shutdown();
    redis.restart().unwrap();
    let mut failures = 0;
    for _ in 0..5 {
        if q.shard(0).stats().await.is_err() {
            failures += 1;
        }
    }
    assert!(
        failures <= 1,
        "{failures} of 5 commands failed after the restart: the broken connection was reused"
    );
}

/// Commands the server refused because of `maxmemory` (`-OOM` errors).
async fn refused_writes(admin: &mut redis::aio::MultiplexedConnection) -> usize {
    info_number(admin, "errorstats", "errorstat_OOM:count=").await as usize
}

/// PINGs the server has answered since its statistics were reset.
async fn pings(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    info_number(admin, "commandstats", "cmdstat_ping:calls=").await
}

/// `redis.pool_idle_check_ms`: a connection in steady use goes out without a PING (one round
/// trip less per result), one idle that long is checked first, and 0 checks at every checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_pings_only_connections_that_sat_idle() {
    let redis = RedisServer::start().unwrap();
    let mut admin = connect(&redis.url()).await;
    let p = prefix("ping");
    let mut pings_for = Vec::new();
    for (idle_check_ms, pause) in [(5000, None), (200, Some(300)), (0, None)] {
        let mut cfg = config(&redis.url(), &p);
        cfg.redis.pool_idle_check_ms = idle_check_ms;
        let q = hmr2_worker::test_support::Queue::new(&cfg).unwrap();
        q.shard(0).ensure_group().await.unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut admin)
            .await
            .unwrap();
        for _ in 0..20 {
            if let Some(ms) = pause {
                // The stimulus: the connection sits idle longer than the idle check.
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            q.shard(0).stats().await.unwrap();
        }
        pings_for.push(pings(&mut admin).await);
    }
    let [steady, idle, every] = pings_for[..] else {
        unreachable!()
    };
    assert_eq!(steady, 0, "connections in steady use were PINGed");
    assert!(
        idle >= 19,
        "{idle} PINGs for 20 checkouts after 300 ms idle (check at 200 ms)"
    );
    assert!(
        every >= 19,
        "{every} PINGs for 20 checkouts with pool_idle_check_ms = 0"
    );
}

/// The consumer group destroyed mid-run (as a Redis restarted without its data loses it):
/// reads and publishes meet NOGROUP, the worker creates the group again, and every job is
/// answered `ok`. A publish that met NOGROUP used to count as a permanent error of the job's
/// `reply_to`: a good result was thrown away and the job dead-lettered `invalid_job`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumer_group_is_created_again_and_no_job_is_blamed() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("nogroup");
    let keys = Keys::new(&p);
    let n = 200;
    enqueue_frames(&url, &p, &frames(n), true).await;
    let worker = Worker::start(config(&url, &p));
    wait_for("first results", Duration::from_secs(60), || async {
        xlen(&url, &keys.results).await >= 10
    })
    .await;
    let mut admin = connect(&url).await;
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&keys.jobs)
        .arg(&keys.group)
        .query_async(&mut admin)
        .await
        .unwrap();
    let got = wait_results(&url, &keys.results, n, Duration::from_secs(120)).await;
    wait_for("nothing pending", Duration::from_secs(30), || async {
        pending(&url, &p).await == 0
    })
    .await;
    worker.stop().await;
    let errors: Vec<_> = results(&url, &keys.results)
        .await
        .into_iter()
        .filter(|(_, r)| r["status"] != "ok")
        .collect();
    assert!(errors.is_empty(), "error results: {errors:?}");
    assert_eq!(got.len(), n);
    assert_eq!(xlen(&url, &keys.dead).await, 0, "no job dead-lettered");
}
