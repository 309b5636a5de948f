//! The queue on a real Redis Cluster (3 masters, one replica each, on loopback ports; DESIGN
//! §11), and sharding on one node: every job answered through a master's failover, a worker
//! that waits for the cluster to form, the reply_to rule across shards, and fairness between
//! shards.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use hmr2_client::{producer, Frame, Job, Layout};
use hmr2_tools::redis_server::{ClusterTls, RedisCluster};
use hmr2_worker::config::Config;
use hmr2_worker::detector::TorchDetector;
use hmr2_worker::model::TorchModel;
use hmr2_worker::test_support::{Batches, StandIn};
use hmr2_worker::Models;
use redis::aio::ConnectionLike;
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Each cluster test, cluster start included, ends within this.
const TEST_LIMIT: Duration = Duration::from_secs(420);

async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test ran past its time limit");
}

async fn start_cluster(ports: Option<Vec<u16>>) -> RedisCluster {
    tokio::task::spawn_blocking(move || match ports {
        Some(p) => RedisCluster::start_on(3, 1, &p),
        None => RedisCluster::start(3, 1),
    })
    .await
    .unwrap()
    .expect("start the Redis Cluster")
}

/// A worker configuration for the cluster of `seeds` with `shards` shards.
fn cluster_config(seeds: &[String], prefix: &str, shards: usize) -> Config {
    let mut c = config(&seeds.join(","), prefix);
    c.redis.cluster = true;
    c.queue.shards = shards;
    c
}

/// A producer's connection to the cluster (the worker's own, cluster-aware).
async fn cluster_conn(config: &Config) -> hmr2_worker::Conn {
    hmr2_worker::connect(config)
        .await
        .expect("connect to the cluster")
}

/// A frame of video `video` (so its shard is the video's).
fn video_frame(video: &str, n: u64, seed: u32) -> Frame {
    Frame::new(
        Job::new(format!("{video}:{n}")).video(video.to_string(), n),
        image(64, 48, seed, true),
    )
}

/// The results read so far from every shard's results stream, by job id, and the cursors.
struct Collector {
    cursors: Vec<String>,
    by_job: HashMap<String, Vec<Value>>,
}

impl Collector {
    fn new(layout: &Layout) -> Self {
        Collector {
            cursors: vec!["0".to_string(); layout.len()],
            by_job: HashMap::new(),
        }
    }

    /// Polls until results for `n` distinct jobs are in; fails the test after `within`.
    async fn wait_for<C: ConnectionLike + Send + Sync>(
        &mut self,
        conn: &mut C,
        layout: &Layout,
        n: usize,
        within: Duration,
    ) {
        let mut deadline = Deadline::new(&format!("results for {n} jobs"), within);
        self.poll(conn, layout).await;
        while self.by_job.len() < n {
            deadline.tick(self.by_job.len()).await;
            self.poll(conn, layout).await;
        }
    }

    /// Reads what is new on every shard; a shard that cannot be read now (its master is
    /// failing over) is read next time.
    async fn poll<C: ConnectionLike + Send + Sync>(&mut self, conn: &mut C, layout: &Layout) {
        for (k, keys) in layout.shards().iter().enumerate() {
            let reply: redis::RedisResult<redis::streams::StreamReadReply> = conn
                .xread_options(
                    &[&keys.results],
                    &[&self.cursors[k]],
                    &redis::streams::StreamReadOptions::default().count(1000),
                )
                .await;
            let Ok(reply) = reply else { continue };
            for key in reply.keys {
                for e in key.ids {
                    self.cursors[k] = e.id.clone();
                    let get = |f: &str| match e.map.get(f) {
                        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
                        _ => String::new(),
                    };
                    let result: Value = serde_json::from_str(&get("result")).expect("JSON result");
                    self.by_job.entry(get("job_id")).or_default().push(result);
                }
            }
        }
    }
}

/// Sends `WAIT 1` to every master: what the producer wrote is on a replica before a master is
/// killed (Redis replicates asynchronously: a job only the dead master had is the producer's
/// loss, not the queue's).
async fn wait_replicated(cluster: &RedisCluster) {
    for m in cluster.masters().unwrap() {
        let mut c = connect(&m.url()).await;
        let n: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 1, "master {} has its replica in sync", m.port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_answered_through_the_failover_of_a_master() {
    bounded(async {
        let mut cluster = start_cluster(None).await;
        let p = prefix("cl").replace('-', "_");
        let mut cfg = cluster_config(&cluster.urls(), &p, 4);
        cfg.queue.claim_idle_ms = 3000;
        let layout = cfg.layout();
        let mut conn = cluster_conn(&cfg).await;

        // 2,000 jobs of 40 tracked videos of 50 frames: every shard gets some.
        const JOBS: usize = 2000;
        const VIDEOS: usize = 40;
        let frames: Vec<Frame> = (0..JOBS)
            .map(|i| {
                let mut f = video_frame(
                    &format!("video-{}", i % VIDEOS),
                    (i / VIDEOS) as u64,
                    (i % 7) as u32,
                );
                f.job = f.job.tracked((JOBS / VIDEOS) as u64, 25.0);
                f
            })
            .collect();
        let per_shard = frames.iter().fold(vec![0usize; 4], |mut n, f| {
            n[producer::shard_keys(&layout, f).shard] += 1;
            n
        });
        assert!(per_shard.iter().all(|&n| n > 100), "{per_shard:?}");
        producer::add_all_sharded(&mut conn, &layout, &frames, true, |_| {})
            .await
            .expect("enqueue on the cluster");
        wait_replicated(&cluster).await;

        let env = [
            ("HMR2_QUEUE__CLAIM_INTERVAL_MS", "500"),
            ("HMR2_QUEUE__GAUGE_INTERVAL_MS", "500"),
        ];
        let mut workers = Vec::new();
        for _ in 0..2 {
            let mut c = cfg.clone();
            c.http.listen = format!("127.0.0.1:{}", free_port().unwrap());
            workers.push((spawn_worker_process_with(&c, &env), c.http.listen.clone()));
        }

        // Mid-run, the master of shard 0 dies; its replica takes over.
        let mut seen = Collector::new(&layout);
        let mut deadline = Deadline::new("every job answered", Duration::from_secs(300));
        seen.wait_for(&mut conn, &layout, JOBS / 4, Duration::from_secs(300))
            .await;
        let slot = {
            let mut c = connect(&cluster.seed_url()).await;
            let s: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&layout.shard(0).jobs)
                .query_async(&mut c)
                .await
                .unwrap();
            s
        };
        let victim = cluster.master_for_slot(slot).unwrap();
        let index = cluster
            .masters()
            .unwrap()
            .iter()
            .position(|m| m.id == victim.id)
            .unwrap();
        let killed_at = seen.by_job.len();
        let t_kill = Instant::now();
        cluster.kill_master(index).unwrap();
        tokio::task::block_in_place(|| cluster.wait_failover(Duration::from_secs(60)))
            .expect("a replica takes over");
        eprintln!(
            "master of shard 0 killed after {killed_at} results; its replica serves after {:?}",
            t_kill.elapsed()
        );

        while seen.by_job.len() < JOBS {
            let missing: Vec<_> = frames
                .iter()
                .map(|f| f.job.job_id.to_string())
                .filter(|id| !seen.by_job.contains_key(id))
                .take(10)
                .collect();
            let answered = seen.by_job.len();
            deadline
                .tick(format!(
                    "{answered} of {JOBS} jobs answered; missing e.g. {missing:?}"
                ))
                .await;
            seen.poll(&mut conn, &layout).await;
        }

        // Every job answered, ok; a job answered twice is the same job run again.
        let ids: HashSet<String> = frames.iter().map(|f| f.job.job_id.to_string()).collect();
        assert_eq!(seen.by_job.keys().cloned().collect::<HashSet<_>>(), ids);
        let mut duplicates = 0;
        for (id, results) in &seen.by_job {
            for r in results {
                assert_eq!(r["status"], "ok", "{id}: {r}");
                assert_eq!(r["job_id"], id.as_str());
            }
            if results.len() > 1 {
                duplicates += 1;
                for r in &results[1..] {
                    assert_eq!(r["people"], results[0]["people"], "{id}: a re-run");
                }
            }
        }
        eprintln!(
            "{JOBS} jobs answered {:?} after the kill; {duplicates} answered more than once",
            t_kill.elapsed()
        );

        // Both workers are ready again, nothing is dead-lettered, and the queue is empty.
        for (_, listen) in &workers {
            wait_status(
                &format!("http://{listen}/readyz"),
                200,
                Duration::from_secs(60),
            )
            .await;
        }
        for keys in layout.shards() {
            let dead: usize = conn.xlen(&keys.dead).await.unwrap();
            assert_eq!(dead, 0, "{}", keys.dead);
            let left: usize = conn.xlen(&keys.jobs).await.unwrap();
            assert_eq!(left, 0, "{}", keys.jobs);
        }
        // Every video, frames recorded through the failover, is written exactly once.
        // Frame i is of video i % VIDEOS: the first VIDEOS frames are one of each.
        for (v, first) in frames.iter().take(VIDEOS).enumerate() {
            let video = format!("video-{v}");
            let keys = producer::shard_keys(&layout, first);
            let out = keys.video_output(&video, None).unwrap();
            let entries: redis::streams::StreamRangeReply = wait_for(
                &format!("the output of {video}"),
                Duration::from_secs(120),
                || async {
                    let mut conn = cluster_conn(&cfg).await;
                    let r: redis::streams::StreamRangeReply =
                        conn.xrange_all(&out).await.unwrap_or_default();
                    if r.ids.iter().any(|e| e.map.contains_key("done")) {
                        Ok(r)
                    } else {
                        Err(format!("{} entries", r.ids.len()))
                    }
                },
            )
            .await;
            let done: Vec<Value> = entries
                .ids
                .iter()
                .filter_map(|e| e.get::<String>("done"))
                .map(|d| serde_json::from_str(&d).unwrap())
                .collect();
            assert_eq!(done.len(), 1, "{video}: {done:?}");
            assert_eq!(done[0]["status"], "ok", "{video}: {}", done[0]);
            assert_eq!(
                done[0]["ok_frames"].as_u64(),
                Some((JOBS / VIDEOS) as u64),
                "{video}"
            );
            assert_eq!(
                entries.ids.len(),
                JOBS / VIDEOS + 1,
                "{video}: one entry per frame, then done"
            );
        }
        for (mut w, _) in workers {
            signal_term(&w);
            let status = tokio::task::block_in_place(|| w.wait()).unwrap();
            assert!(status.success(), "a worker exits cleanly: {status}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_cluster_becomes_ready_when_it_forms() {
    bounded(async {
        let ports = RedisCluster::free_ports_for(3, 1).unwrap();
        let seeds: Vec<String> = ports
            .chunks(2)
            .map(|p| format!("redis://127.0.0.1:{}", p[0]))
            .collect();
        let p = prefix("early").replace('-', "_");
        let cfg = cluster_config(&seeds, &p, 3);
        let worker = Worker::start(cfg.clone());
        let ready = format!("{}/readyz", worker.http);
        wait_status(
            &format!("{}/healthz", worker.http),
            200,
            Duration::from_secs(60),
        )
        .await;
        let (status, _) = http_get(&ready).await.unwrap();
        assert_eq!(status, 503, "not ready without Redis");

        let _cluster = start_cluster(Some(ports)).await;
        wait_status(&ready, 200, Duration::from_secs(90)).await;

        // It serves every shard.
        let layout = cfg.layout();
        let mut conn = cluster_conn(&cfg).await;
        let frames: Vec<Frame> = (0..30)
            .map(|i| video_frame(&format!("v{i}"), 0, i))
            .collect();
        let shards: HashSet<usize> = frames
            .iter()
            .map(|f| producer::shard_keys(&layout, f).shard)
            .collect();
        assert_eq!(shards.len(), 3);
        producer::add_all_sharded(&mut conn, &layout, &frames, true, |_| {})
            .await
            .unwrap();
        let mut seen = Collector::new(&layout);
        seen.wait_for(&mut conn, &layout, frames.len(), Duration::from_secs(120))
            .await;
        assert!(seen.by_job.values().flatten().all(|r| r["status"] == "ok"));
        worker.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_on_another_shard_is_an_invalid_job() {
    bounded(async {
        let cluster = start_cluster(None).await;
        let p = prefix("reply").replace('-', "_");
        let cfg = cluster_config(&cluster.urls(), &p, 4);
        let layout = cfg.layout();
        let worker = Worker::start(cfg.clone());
        wait_status(
            &format!("{}/readyz", worker.http),
            200,
            Duration::from_secs(60),
        )
        .await;
        let mut conn = cluster_conn(&cfg).await;
        let cfg = &cfg;

        let home = layout.keys_for(Some("vid"), "x").clone();
        let other = layout.shard(home.shard + 1);
        let job = |id: &str, reply_to: String| {
            Frame::new(
                Job::new(id.to_string()).video("vid", 0).reply_to(reply_to),
                image(64, 48, 1, true),
            )
        };
        let wrong = job("wrong", format!("{}:mine", other.results));
        let right = job("right", format!("{}:mine", home.results));
        producer::add_all_sharded(&mut conn, &layout, &[wrong, right], true, |_| {})
            .await
            .unwrap();

        // The wrong one is answered on its own shard's default stream and dead-lettered there.
        let read = |stream: String| async move {
            let c = &mut cluster_conn(cfg).await;
            let r: redis::streams::StreamRangeReply = c.xrange_all(&stream).await.unwrap();
            r.ids
                .into_iter()
                .filter_map(|e| match e.map.get("result") {
                    Some(redis::Value::BulkString(b)) => serde_json::from_slice::<Value>(b).ok(),
                    _ => None,
                })
                .collect::<Vec<Value>>()
        };
        let (errors, oks) = wait_for(
            "results on the default and the named stream",
            Duration::from_secs(60),
            || async {
                let errors = read(home.results.clone()).await;
                let oks = read(format!("{}:mine", home.results)).await;
                if !errors.is_empty() && !oks.is_empty() {
                    Ok((errors, oks))
                } else {
                    Err(format!("{errors:?} {oks:?}"))
                }
            },
        )
        .await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["job_id"], "wrong");
        assert_eq!(errors[0]["error"]["code"], "invalid_job");
        assert_eq!(oks.len(), 1);
        assert_eq!(oks[0]["job_id"], "right");
        assert_eq!(oks[0]["status"], "ok");
        let dead: usize = conn.xlen(&home.dead).await.unwrap();
        assert_eq!(dead, 1);
        let theirs: usize = conn
            .exists(format!("{}:mine", other.results))
            .await
            .unwrap();
        assert_eq!(theirs, 0, "nothing is written on another shard");
        worker.stop().await;
    })
    .await;
}

/// One node, three shards: a shard with a deep backlog does not starve the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_shard_does_not_starve_the_others() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("fair");
    let mut cfg = config(&url, &p);
    cfg.queue.shards = 3;
    let layout = cfg.layout();
    assert_eq!(layout.shard(1).jobs, format!("{{{p}:1}}:jobs"));
    // 600 jobs of one video (one shard), then 20 each of two videos of the other shards.
    let video_on = |shard: usize| {
        (0..)
            .map(|i| format!("video-{i}"))
            .find(|v| layout.keys_for(Some(v), "").shard == shard)
            .unwrap()
    };
    let mut frames: Vec<Frame> = (0..600).map(|n| video_frame(&video_on(0), n, 1)).collect();
    for shard in [1, 2] {
        let v = video_on(shard);
        frames.extend((0..20).map(|n| video_frame(&v, n, 2)));
    }
    let mut c = connect(&url).await;
    producer::add_all_sharded(&mut c, &layout, &frames, true, |_| {})
        .await
        .unwrap();
    let worker = Worker::start(cfg.clone());
    let mut seen = Collector::new(&layout);
    let mut deadline = Deadline::new("the small shards' jobs", Duration::from_secs(240));
    let small_done = |seen: &Collector| {
        frames[600..]
            .iter()
            .all(|f| seen.by_job.contains_key(f.job.job_id.as_ref()))
    };
    while !small_done(&seen) {
        deadline
            .tick(format!("{} results", seen.by_job.len()))
            .await;
        seen.poll(&mut c, &layout).await;
    }
    let hot_done = frames[..600]
        .iter()
        .filter(|f| seen.by_job.contains_key(f.job.job_id.as_ref()))
        .count();
    assert!(
        hot_done < 300,
        "the small shards were served while the hot one still had work ({hot_done} of 600 done)"
    );
    let gauges = http_get(&format!("{}/metrics", worker.http))
        .await
        .unwrap()
        .1;
    for keys in layout.shards() {
        assert!(
            gauges.contains(&format!("hmr2_queue_length{{stream=\"{}\"}}", keys.jobs)),
            "a queue gauge per shard: {}",
            keys.jobs
        );
    }
    worker.stop().await;
}

/// The README's ACL rule for a sharded queue: the one-node rule with the key patterns
/// `~{<prefix>:*}* ~<prefix>:model` and `+cluster|slots` (the client's slot map).
fn sharded_acl(prefix: &str, password: &str) -> Vec<String> {
    let rule = crate::security::worker_acl(prefix, password).replace(
        &format!("~{prefix}:*"),
        &format!("~{{{prefix}:*}}* ~{prefix}:model"),
    ) + " +cluster|slots";
    rule.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_least_privilege_acl_user_serve_a_sharded_queue_on_the_cluster() {
    bounded(async {
        let certs = tempfile::tempdir().unwrap();
        crate::security::make_certs(certs.path());
        let tls = ClusterTls {
            cert: certs.path().join("server.pem"),
            key: certs.path().join("server.key"),
            ca: certs.path().join("ca.pem"),
        };
        let cluster = tokio::task::spawn_blocking(move || RedisCluster::start_tls(3, 1, &tls))
            .await
            .unwrap()
            .expect("start the Redis Cluster with TLS");
        let p = prefix("acl");
        let password = "pw-c1u5t3r-never-log-me";
        // ACLs are per node: the user is set on every node, replicas included.
        for url in cluster.urls() {
            let mut c = connect(&url).await;
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER");
            for part in sharded_acl(&p, password) {
                cmd.arg(part);
            }
            let () = cmd.query_async(&mut c).await.unwrap();
        }
        // The worker sees only the TLS ports, as the ACL user.
        let seeds: Vec<String> = cluster
            .tls_urls()
            .iter()
            .map(|u| u.replace("rediss://", &format!("rediss://hmr2-worker:{password}@")))
            .collect();
        let cfg = cluster_config(&seeds, &p, 3);
        let admin = cluster_config(&cluster.urls(), &p, 3);
        let layout = cfg.layout();
        let ca = certs.path().join("ca.pem");
        let mut worker = spawn_worker_process_with(
            &cfg,
            &[
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
                ("RUST_LOG", "debug"),
            ],
        );
        wait_status(
            &format!("http://{}/readyz", cfg.http.listen),
            200,
            Duration::from_secs(60),
        )
        .await;
        let mut conn = cluster_conn(&admin).await;
        let frames: Vec<Frame> = (0..12)
            .map(|i| video_frame(&format!("v{i}"), 0, i))
            .collect();
        producer::add_all_sharded(&mut conn, &layout, &frames, true, |_| {})
            .await
            .unwrap();
        let mut seen = Collector::new(&layout);
        seen.wait_for(&mut conn, &layout, frames.len(), Duration::from_secs(60))
            .await;
        assert!(seen.by_job.values().flatten().all(|r| r["status"] == "ok"));
        // The model hash is written under the same rule.
        let model: usize = conn.exists(&layout.shard(0).model).await.unwrap();
        assert_eq!(model, 1);
        signal_term(&worker);
        let status = tokio::task::block_in_place(|| worker.wait()).unwrap();
        assert!(status.success(), "{status}");
        let log = std::fs::read_to_string(std::env::temp_dir().join(format!("{p}.log"))).unwrap();
        assert!(log.contains("DEBUG"), "the log was written at debug level");
        assert!(!log.contains(password), "the password appeared in the log");
        assert!(
            log.contains("hmr2-worker:***@127.0.0.1"),
            "URLs are shown redacted"
        );
    })
    .await;
}

/// One node, four shards with a backlog each: the worker never holds more than
/// `max_batch × (queue_depth + 2)` entries over all shards together, and never runs a forward
/// pass of more than `max_batch` crops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_and_the_in_flight_bound_hold_across_shards() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("bound");
    let mut cfg = config(&url, &p);
    cfg.queue.shards = 4;
    cfg.queue.max_batch = 2;
    cfg.pipeline.queue_depth = 1;
    let inflight = 2 * (1 + 2);
    let layout = cfg.layout();
    let frames: Vec<Frame> = (0..240)
        .map(|i| video_frame(&format!("video-{}", i % 16), (i / 16) as u64, 3))
        .collect();
    let mut c = connect(&url).await;
    producer::add_all_sharded(&mut c, &layout, &frames, true, |_| {})
        .await
        .unwrap();
    let batches = Batches::default();
    let noted = batches.clone();
    let path = cfg.model.path.clone();
    let token = CancellationToken::new();
    let worker = tokio::spawn(hmr2_worker::run_with(
        cfg.clone(),
        token.clone(),
        move |device| {
            // The tiny TorchScript model, noting the size of every forward pass.
            Ok(Models {
                hmr: StandIn::around(TorchModel::load(&path, device)?).batches(&noted),
                detector: None::<TorchDetector>,
            })
        },
    ));
    let mut seen = Collector::new(&layout);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while seen.by_job.len() < frames.len() {
        assert!(Instant::now() < deadline, "{} results", seen.by_job.len());
        // Every shard's pending count at one instant (one node: MULTI is atomic).
        let mut pipe = redis::pipe();
        pipe.atomic();
        for keys in layout.shards() {
            pipe.cmd("XPENDING").arg(&keys.jobs).arg(&keys.group);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut c).await.unwrap_or_default();
        let held: i64 = replies
            .iter()
            .filter_map(|r| match r {
                redis::Value::Array(v) => match v.first() {
                    Some(redis::Value::Int(n)) => Some(*n),
                    _ => None,
                },
                _ => None,
            })
            .sum();
        most = most.max(held);
        seen.poll(&mut c, &layout).await;
        // The sampling interval: short, so that the largest number held at once is seen.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(most > 0, "the sampling saw the worker at work");
    assert!(
        most <= inflight,
        "{most} entries held at once, over the bound of {inflight}"
    );
    let largest = batches.largest();
    assert!(
        (1..=2).contains(&largest),
        "the largest forward pass had {largest} crops; max_batch is 2"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}

/// One node, three shards: entries a dead consumer took on every shard are reclaimed, shard by
/// shard, and answered once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reclaimed_on_every_shard() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("orphans");
    let mut cfg = config(&url, &p);
    cfg.queue.shards = 3;
    cfg.queue.block_ms = 100;
    cfg.queue.claim_idle_ms = 500;
    let layout = cfg.layout();
    let frames: Vec<Frame> = (0..30)
        .map(|i| video_frame(&format!("video-{}", i % 10), (i / 10) as u64, 4))
        .collect();
    let mut c = connect(&url).await;
    producer::add_all_sharded(&mut c, &layout, &frames, true, |_| {})
        .await
        .unwrap();
    // A consumer that then dies takes every entry of every shard.
    for keys in layout.shards() {
        let () = c.xgroup_create(&keys.jobs, &keys.group, "0").await.unwrap();
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&keys.group)
            .arg("gone")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(&keys.jobs)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let pending: redis::streams::StreamPendingReply =
            c.xpending(&keys.jobs, &keys.group).await.unwrap();
        assert!(pending.count() > 0, "{} has orphans", keys.jobs);
    }
    let worker = Worker::start(cfg.clone());
    let mut seen = Collector::new(&layout);
    seen.wait_for(&mut c, &layout, frames.len(), Duration::from_secs(120))
        .await;
    for (id, results) in &seen.by_job {
        assert_eq!(results.len(), 1, "{id} answered once");
        assert_eq!(results[0]["status"], "ok");
    }
    for keys in layout.shards() {
        let left: usize = c.xlen(&keys.jobs).await.unwrap();
        assert_eq!(left, 0, "{}", keys.jobs);
    }
    worker.stop().await;
}
