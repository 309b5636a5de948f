//! Hostile input and Redis faults that must end a job (or spoil nothing) instead of wedging a
//! slot: reply streams the worker may not or cannot write, entries no client library would
//! write, large entries of a dead worker, leases after an outage, the consumer group's upkeep.

use std::collections::HashMap;
use std::time::Duration;

use hmr2_client::Keys;
use hmr2_client::{Frame, Job};
use hmr2_tools::redis_server::RedisServer;
use hmr2_worker::test_support::Queue;
use redis::AsyncCommands;

use crate::support::*;

fn framed(id: &str, reply_to: Option<&str>) -> Frame {
    let mut job = Job::new(id.to_string()).video("video", 0);
    if let Some(r) = reply_to {
        job = job.reply_to(r.to_string());
    }
    Frame::new(job, image(160, 120, 1, false))
}

/// Every dead letter: its `error` and `job` fields (lossy), and the names of its fields.
async fn dead_letters(url: &str, stream: &str) -> Vec<HashMap<String, Vec<u8>>> {
    let mut c = connect(url).await;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    let redis::Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|e| {
            let redis::Value::Array(mut parts) = e else {
                panic!("entry")
            };
            let redis::Value::Array(flat) = parts.remove(1) else {
                panic!("fields")
            };
            flat.chunks(2)
                .map(|kv| {
                    let b = |v: &redis::Value| match v {
                        redis::Value::BulkString(b) => b.clone(),
                        _ => Vec::new(),
                    };
                    (String::from_utf8_lossy(&b(&kv[0])).to_string(), b(&kv[1]))
                })
                .collect()
        })
        .collect()
}

/// Delivers up to `count` new entries to `consumer` (a worker that then dies, or stays busy).
async fn read_as(
    c: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    consumer: &str,
    count: usize,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&keys.group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(&keys.jobs)
        .arg(">")
        .query_async(c)
        .await
        .unwrap();
}

fn text(m: &HashMap<String, Vec<u8>>, k: &str) -> String {
    m.get(k)
        .map(|v| String::from_utf8_lossy(v).to_string())
        .unwrap_or_default()
}

async fn wait_drained(url: &str, p: &str, within: Duration) {
    let keys = Keys::new(p);
    wait_for(
        "every job to be finished (else a slot is wedged)",
        within,
        || async {
            let (held, queued) = (pending(url, p).await, xlen(url, &keys.jobs).await);
            if held == 0 && queued == 0 {
                Ok(())
            } else {
                Err(format!("{held} pending, {queued} queued"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_must_name_a_results_stream_of_the_prefix_and_expires() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("replyto");
    let keys = Keys::new(&p);
    let victim = format!("{p}-other-tenant:jobs");
    let mut admin = connect(&url).await;
    let _: String = admin
        .xadd(&victim, "*", &[("job", "theirs")])
        .await
        .unwrap();
    // A tenant whose prefix happens to start with this one's results stream.
    let neighbour = format!("{}-b:jobs", keys.results);
    let _: String = admin
        .xadd(&neighbour, "*", &[("job", "theirs")])
        .await
        .unwrap();
    let mine = format!("{}:video-7", keys.results);
    let frames = vec![
        framed("outside", Some(&victim)),
        framed("neighbour", Some(&neighbour)),
        framed("jobs", Some(&keys.jobs)),
        framed("mine", Some(&mine)),
        framed("default", None),
    ];
    enqueue_frames(&url, &p, &frames, true).await;
    let worker = Worker::start(config(&url, &p));
    let got = wait_results(&url, &keys.results, 4, Duration::from_secs(60)).await;
    let on_mine = wait_results(&url, &mine, 1, Duration::from_secs(60)).await;
    wait_drained(&url, &p, Duration::from_secs(30)).await;
    worker.stop().await;

    for id in ["outside", "neighbour", "jobs"] {
        let r = &got[id];
        assert_eq!(r["status"], "error", "{id}: {r}");
        assert_eq!(r["error"]["code"], "invalid_job", "{id}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must start with"),
            "{r}"
        );
    }
    assert_eq!(got["default"]["status"], "ok");
    assert_eq!(on_mine["mine"]["status"], "ok");
    for other in [&victim, &neighbour] {
        assert_eq!(xlen(&url, other).await, 1, "{other} was not touched");
    }
    let dead = dead_letters(&url, &keys.dead).await;
    assert_eq!(dead.len(), 3, "every bad reply_to job is dead-lettered");
    let ttl: i64 = admin.ttl(&mine).await.unwrap();
    assert!(
        ttl > 86_000 && ttl <= 86_400,
        "a per-job reply stream expires after queue.reply_ttl_s: ttl {ttl}"
    );
    let ttl: i64 = admin.ttl(&keys.results).await.unwrap();
    assert_eq!(ttl, -1, "the default results stream does not expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_streams_that_can_never_be_written_end_the_job_instead_of_wedging_it() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("permanent");
    let keys = Keys::new(&p);
    let mut admin = connect(&url).await;
    // A key of the wrong type, a stream whose last id is the largest there is, and a stream
    // the worker's ACL user may read but not write.
    let wrong_type = format!("{}:string", keys.results);
    let _: () = admin.set(&wrong_type, "not a stream").await.unwrap();
    let exhausted = format!("{}:exhausted", keys.results);
    let _: String = redis::cmd("XADD")
        .arg(&exhausted)
        .arg("18446744073709551615-18446744073709551615")
        .arg("x")
        .arg("1")
        .query_async(&mut admin)
        .await
        .unwrap();
    let forbidden = format!("{}:forbidden", keys.results);
    let user = format!("{p}-user");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(">pw")
        .arg(format!("%R~{forbidden}"))
        .arg(format!("~{}", keys.jobs))
        .arg(format!("~{}", keys.dead))
        .arg(format!("~{}", keys.model))
        .arg(format!("~{}", keys.results))
        .arg(format!("~{}", wrong_type))
        .arg(format!("~{}", exhausted))
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let frames = vec![
        framed("wrong-type", Some(&wrong_type)),
        framed("exhausted", Some(&exhausted)),
        framed("forbidden", Some(&forbidden)),
        framed("good", None),
    ];
    enqueue_frames(&url, &p, &frames, true).await;
    let cfg = config(&as_user(&url, &user), &p);
    let worker = Worker::start(cfg);
    let got = wait_results(&url, &keys.results, 4, Duration::from_secs(60)).await;
    wait_drained(&url, &p, Duration::from_secs(30)).await;
    worker.stop().await;
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();

    assert_eq!(got["good"]["status"], "ok");
    for id in ["wrong-type", "exhausted", "forbidden"] {
        let r = &got[id];
        assert_eq!(r["error"]["code"], "invalid_job", "{id}: {r}");
    }
    let dead = dead_letters(&url, &keys.dead).await;
    let mut codes: Vec<String> = dead.iter().map(|d| text(d, "error")).collect();
    codes.sort();
    assert_eq!(
        codes, ["invalid_job"; 3],
        "each bad reply_to job is dead-lettered once"
    );
    assert_eq!(xlen(&url, &forbidden).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_without_its_frame() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("fields");
    let keys = Keys::new(&p);
    // 10,000 fields: more than Lua's unpack takes in one call.
    let names: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    let mut fields: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
    xadd_raw(&url, &p, &fields).await;
    // A job whose image fails to decode: its dead letter keeps the job, not the frame.
    let job = format!(
        r#"{{"job_id":"bad-image","image_base64":"{}"}}"#,
        "QUFB".repeat(50_000)
    );
    fields = vec![("job", job.as_bytes()), ("image", &[0u8; 4096][..])];
    xadd_raw(&url, &p, &fields).await;
    let worker = Worker::start(config(&url, &p));
    wait_drained(&url, &p, Duration::from_secs(60)).await;
    worker.stop().await;

    let dead = dead_letters(&url, &keys.dead).await;
    assert_eq!(dead.len(), 2, "both entries dead-lettered");
    let many = dead
        .iter()
        .find(|d| d.contains_key("fields_dropped"))
        .expect("capped");
    assert_eq!(text(many, "fields_dropped"), (10_000 - 64).to_string());
    assert_eq!(text(many, "error"), "invalid_job");
    let img = dead
        .iter()
        .find(|d| text(d, "error") == "invalid_image")
        .expect("image");
    assert!(
        !img.contains_key("image"),
        "the frame is dropped from the dead letter"
    );
    let job: serde_json::Value = serde_json::from_slice(&img["job"]).unwrap();
    assert_eq!(job["job_id"], "bad-image");
    assert!(job.get("image_base64").is_none(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entry_with_a_binary_field_name_spoils_neither_its_read_nor_the_log() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("binary");
    let keys = Keys::new(&p);
    let marker = "PAYLOAD-MARKER-".repeat(4000);
    let mut c = connect(&url).await;
    let frames: Vec<Frame> = (0..6).map(|i| framed(&format!("g{i}"), None)).collect();
    enqueue_frames(&url, &p, &frames[..3], true).await;
    let _: String = redis::cmd("XADD")
        .arg(&keys.jobs)
        .arg("*")
        .arg(&b"\xff\xfe-not-utf8"[..])
        .arg(marker.as_bytes())
        .arg("job")
        .arg(r#"{"job_id":"binary"}"#)
        .query_async(&mut c)
        .await
        .unwrap();
    enqueue_frames(&url, &p, &frames[3..], true).await;
    let cfg = config(&url, &p);
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    let mut worker = spawn_worker_process_with(&cfg, &[("RUST_LOG", "debug")]);
    let got = wait_results(&url, &keys.results, 7, Duration::from_secs(60)).await;
    wait_drained(&url, &p, Duration::from_secs(30)).await;
    signal_term(&worker);
    assert_eq!(worker.wait().unwrap().code(), Some(0));
    for i in 0..6 {
        assert_eq!(got[&format!("g{i}")]["status"], "ok", "good job g{i}");
    }
    assert_eq!(
        got["binary"]["error"]["code"], "missing_image",
        "the entry with a binary field name is answered on its own"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains("PAYLOAD-MARKER"),
        "payload bytes reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_jobs_are_read_and_those_of_a_dead_worker_reclaimed() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("large");
    let keys = Keys::new(&p);
    // Entries of 24 MB each: 4 delivered to a consumer that died holding them, then 16 new
    // ones, read 16 at a time (384 MB in one reply).
    let pad = vec![b'x'; 24 << 20];
    let img = image(160, 120, 2, false);
    // This test's own connection needs a long response timeout too.
    let cfg =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .unwrap();
    let adder = c.clone();
    let add = async |i: usize| {
        let job = format!(r#"{{"job_id":"big{i}"}}"#);
        let _: String = redis::cmd("XADD")
            .arg(&keys.jobs)
            .arg("*")
            .arg("job")
            .arg(job)
            .arg("image")
            .arg(&img)
            .arg("pad")
            .arg(&pad)
            .query_async(&mut adder.clone())
            .await
            .unwrap();
    };
    for i in 0..4 {
        add(i).await;
    }
    let _: () = c.xgroup_create(&keys.jobs, &keys.group, "0").await.unwrap();
    read_as(&mut c, &keys, "dead-worker", 4).await;
    assert_eq!(pending(&url, &p).await, 4);
    for i in 4..20 {
        add(i).await;
    }
    let mut cfg = config(&url, &p);
    cfg.queue.max_batch = 16;
    cfg.queue.claim_idle_ms = 500;
    let worker = Worker::start(cfg);
    let got = wait_results(&url, &keys.results, 20, Duration::from_secs(120)).await;
    wait_drained(&url, &p, Duration::from_secs(30)).await;
    worker.stop().await;
    assert!(got.values().all(|r| r["status"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_lease_never_takes_back_an_entry_reclaimed_elsewhere() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("lease");
    let keys = Keys::new(&p);
    enqueue_frames(&url, &p, &[framed("a", None)], true).await;
    let mut cfg = config(&url, &p);
    cfg.queue.consumer = "first".into();
    let first = Queue::new(&cfg).unwrap();
    first.shard(0).ensure_group().await.unwrap();
    let mut conn = first.blocking_connection().await.unwrap();
    let got = first.shard(0).read_new(&mut conn, 1, true).await.unwrap();
    assert_eq!(got.len(), 1);
    let id = got[0].id.clone();
    // After a long outage, another worker reclaims the entry.
    let mut c = connect(&url).await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&keys.jobs)
        .arg(&keys.group)
        .arg("second")
        .arg(0)
        .arg(&id)
        .query_async(&mut c)
        .await
        .unwrap();
    let lost = first
        .shard(0)
        .extend_lease(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(
        lost,
        std::slice::from_ref(&id),
        "the first worker learns it lost the entry"
    );
    let owner: redis::Value = redis::cmd("XPENDING")
        .arg(&keys.jobs)
        .arg(&keys.group)
        .arg(&id)
        .arg(&id)
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        format!("{owner:?}").contains("second"),
        "the entry stays with the worker that reclaimed it: {owner:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_undelivered_entries_even_when_redis_cannot() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("lag");
    let keys = Keys::new(&p);
    let frames: Vec<Frame> = (0..10).map(|i| framed(&format!("l{i}"), None)).collect();
    let ids = enqueue_frames(&url, &p, &frames, true).await;
    let mut c = connect(&url).await;
    let _: () = c.xgroup_create(&keys.jobs, &keys.group, "0").await.unwrap();
    read_as(&mut c, &keys, "busy", 6).await;
    // The last delivered entry is finished (acked and deleted): XINFO's lag turns nil.
    let _: u64 = c.xack(&keys.jobs, &keys.group, &[&ids[5]]).await.unwrap();
    let _: u64 = c.xdel(&keys.jobs, &[&ids[5]]).await.unwrap();
    let q = Queue::new(&config(&url, &p)).unwrap();
    let s = q.shard(0).stats().await.unwrap();
    assert_eq!((s.length, s.pending), (9, 5));
    assert_eq!(s.lag, Some(4), "four entries were never delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_hold_nothing_are_removed_and_those_that_hold_entries_stay() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("consumers");
    let keys = Keys::new(&p);
    enqueue_frames(&url, &p, &[framed("held", None)], true).await;
    let mut c = connect(&url).await;
    let _: () = c.xgroup_create(&keys.jobs, &keys.group, "$").await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&keys.jobs)
        .arg(&keys.group)
        .arg("gone-empty")
        .query_async(&mut c)
        .await
        .unwrap();
    // "gone-holding" holds an entry (delivered, never finished).
    let _: () = c.xgroup_setid(&keys.jobs, &keys.group, "0").await.unwrap();
    read_as(&mut c, &keys, "gone-holding", 1).await;
    let names = |c: &mut redis::aio::MultiplexedConnection| {
        let (jobs, group) = (keys.jobs.clone(), keys.group.clone());
        let mut c = c.clone();
        async move {
            let r: redis::streams::StreamInfoConsumersReply =
                c.xinfo_consumers(&jobs, &group).await.unwrap();
            let mut n: Vec<String> = r.consumers.into_iter().map(|c| c.name).collect();
            n.sort();
            n
        }
    };
    let mut cfg = config(&url, &p);
    cfg.queue.prune_consumers_after_s = 1;
    cfg.queue.claim_idle_ms = 600_000;
    cfg.queue.consumer = "live".into();
    let worker = Worker::start(cfg);
    let n = wait_for(
        "the idle empty consumer to be removed",
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            async move {
                let n = names(&mut c).await;
                if n.contains(&"gone-empty".to_string()) {
                    Err(format!("{n:?}"))
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert!(n.contains(&"gone-holding".to_string()), "{n:?}");
    worker.stop().await;
    let n = names(&mut c).await;
    assert_eq!(
        n,
        ["gone-holding"],
        "a clean shutdown removes the worker's own empty consumer; one holding entries stays"
    );
}

/// `url` logged in as ACL user `user` (password `pw`).
fn as_user(url: &str, user: &str) -> String {
    format!("redis://{user}:pw@{}", url.trim_start_matches("redis://"))
}

/// Error replies with `code` Redis has sent since it started (INFO errorstats).
async fn error_replies(url: &str, code: &str) -> u64 {
    let key = format!("errorstat_{code}:count=");
    info_number(&mut connect(url).await, "errorstats", &key).await
}

/// How a key a script writes is made unwritable, and mended.
enum Break {
    /// The dead-letter stream's last id is the largest there is.
    DeadExhausted,
    /// The dead-letter stream's key holds a string.
    DeadWrongType,
    /// The worker's ACL user may read the dead-letter stream, not write it.
    DeadReadOnly,
    /// The worker's ACL user may not run this command (on the job stream).
    Denied(&'static str),
}

/// Every key `publish.lua` and `dead_letter.lua` write, made unwritable in turn: the step is
/// refused before its first write, again and again, with nothing written (no answer, the job
/// still pending); once the key is mended, the job gets exactly one answer (and one dead letter
/// when it is bad). `dead_letter.lua` used to write the error result before finding the
/// dead-letter stream full: one answer per claim cycle, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_finish_writes_nothing_and_a_job_is_answered_once() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mut admin = connect(&url).await;
    for (i, (broken, bad)) in [
        (Break::DeadExhausted, true),
        (Break::DeadWrongType, true),
        (Break::DeadReadOnly, true),
        (Break::Denied("xdel"), false),
        (Break::Denied("xack"), true),
    ]
    .into_iter()
    .enumerate()
    {
        let p = prefix(&format!("halfway{i}"));
        let keys = Keys::new(&p);
        let user = format!("{p}-user");
        let mut acl: Vec<String> = vec!["reset".into(), "on".into(), ">pw".into(), "+@all".into()];
        acl.push(format!("~{p}:jobs"));
        acl.push(format!("~{p}:results*"));
        acl.push(format!("~{p}:model"));
        match &broken {
            Break::DeadExhausted => {
                let _: String = redis::cmd("XADD")
                    .arg(&keys.dead)
                    .arg("18446744073709551615-18446744073709551615")
                    .arg("x")
                    .arg("1")
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                acl.push(format!("~{}", keys.dead));
            }
            Break::DeadWrongType => {
                let _: () = admin.set(&keys.dead, "not a stream").await.unwrap();
                acl.push(format!("~{}", keys.dead));
            }
            Break::DeadReadOnly => acl.push(format!("%R~{}", keys.dead)),
            Break::Denied(cmd) => {
                acl.push(format!("~{}", keys.dead));
                acl.push(format!("-{cmd}"));
            }
        }
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg(&acl)
            .query_async(&mut admin)
            .await
            .unwrap();
        if bad {
            xadd_raw(&url, &p, &[("job", b"not json")]).await;
        } else {
            enqueue_frames(&url, &p, &[framed("good", None)], true).await;
        }
        let code = match broken {
            Break::DeadExhausted => "ERR",
            Break::DeadWrongType => "WRONGTYPE",
            Break::DeadReadOnly | Break::Denied(_) => "NOPERM",
        };
        let before = error_replies(&url, code).await;
        let cfg = config(&as_user(&url, &user), &p);
        let worker = Worker::start(cfg);
        wait_for("the job to be read", Duration::from_secs(60), || async {
            pending(&url, &p).await == 1
        })
        .await;
        wait_for(
            "three refused attempts",
            Duration::from_secs(60),
            || async {
                let refused = error_replies(&url, code).await - before;
                if refused >= 3 {
                    Ok(())
                } else {
                    Err(format!("{refused} refused"))
                }
            },
        )
        .await;
        assert_eq!(
            xlen(&url, &keys.results).await,
            0,
            "case {i}: no answer yet"
        );
        assert_eq!(
            pending(&url, &p).await,
            1,
            "case {i}: the job is still held"
        );
        match broken {
            Break::DeadExhausted | Break::DeadWrongType => {
                let _: () = admin.del(&keys.dead).await.unwrap();
            }
            Break::DeadReadOnly => {
                let _: () = redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(&user)
                    .arg(format!("~{}", keys.dead))
                    .query_async(&mut admin)
                    .await
                    .unwrap();
            }
            Break::Denied(cmd) => {
                let _: () = redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(&user)
                    .arg(format!("+{cmd}"))
                    .query_async(&mut admin)
                    .await
                    .unwrap();
            }
        }
        wait_drained(&url, &p, Duration::from_secs(60)).await;
        worker.stop().await;
        let answers = results(&url, &keys.results).await;
        assert_eq!(answers.len(), 1, "case {i}: one answer: {answers:?}");
        let expected = if bad { "error" } else { "ok" };
        assert_eq!(answers[0].1["status"], expected, "case {i}");
        let letters = dead_letters(&url, &keys.dead).await;
        assert_eq!(letters.len(), usize::from(bad), "case {i}: dead letters");
    }
}

/// An ACL user that may not run XREADGROUP: the worker is not ready for as long as it cannot
/// read, and says why (a permission problem, in the server's words); it counts the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_not_read_is_not_ready_and_says_why() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("noread");
    let user = format!("{p}-user");
    let mut admin = connect(&url).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(">pw")
        .arg(format!("~{p}:*"))
        .arg("+@all")
        .arg("-xreadgroup")
        .query_async(&mut admin)
        .await
        .unwrap();
    enqueue_frames(&url, &p, &[framed("waiting", None)], true).await;
    let cfg = config(&as_user(&url, &user), &p);
    let http = format!("http://{}", cfg.http.listen);
    let worker = spawn_worker_process(&cfg);
    wait_status(&format!("{http}/readyz"), 503, Duration::from_secs(60)).await;
    // Not ready at every look, not only now and then.
    wait_for("a refused read", Duration::from_secs(60), || async {
        let (_, body) = http_get(&format!("{http}/readyz"))
            .await
            .unwrap_or_default();
        body.contains("permission problem")
    })
    .await;
    for _ in 0..20 {
        let (status, body) = http_get(&format!("{http}/readyz")).await.unwrap();
        assert_eq!(status, 503, "{body}");
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        let why = ready["not_ready"]["redis_read"]
            .as_str()
            .unwrap_or_default();
        let why = why.to_lowercase();
        assert!(
            why.contains("permission") && why.contains("xreadgroup"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hmr2_redis_errors_total{")
                && l.contains(r#"op="read""#)
                && l.contains(r#"code="NOPERM""#)),
        "no NOPERM read errors counted"
    );
    drop(worker);
    assert_eq!(xlen(&url, &Keys::new(&p).results).await, 0);
}

/// What the worker is sent of an entry is bounded (`read.lua`): a `job` over
/// `max_job_bytes` comes as its head, enough to answer the job on its own `reply_to`; an image
/// over `max_image_bytes`, a side field over 16 KiB and fields past the 64th are not sent; a
/// field name is cut to 256 bytes. Each is answered with the error it earns, and dead letters
/// carry notes, not the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_over_the_limits_are_answered_from_what_the_worker_is_sent() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("bounded");
    let keys = Keys::new(&p);
    let mut cfg = config(&url, &p);
    cfg.limits.max_image_bytes = 64 << 10;
    cfg.limits.max_job_bytes = cfg.limits.base64_image_bytes() + 1024;
    let mine = format!("{}:mine", keys.results);
    let mut cut = format!(r#"{{"job_id":"cut","reply_to":"{mine}","filler":""#).into_bytes();
    cut.resize(3 * cfg.limits.max_job_bytes, b'z');
    cut.extend_from_slice(b"\"}");
    xadd_raw(&url, &p, &[("job", &cut)]).await;
    let long_name = "n".repeat(4 << 20);
    let side = vec![b's'; 1_000_000];
    xadd_raw(
        &url,
        &p,
        &[
            ("job", b"nope"),
            (long_name.as_str(), b"v"),
            ("side", &side),
        ],
    )
    .await;
    let big_image = vec![0xffu8; 2 * cfg.limits.max_image_bytes];
    xadd_raw(
        &url,
        &p,
        &[("job", br#"{"job_id":"img"}"#), ("image", &big_image)],
    )
    .await;
    let worker = Worker::start(cfg);
    let on_default = wait_results(&url, &keys.results, 2, Duration::from_secs(60)).await;
    let on_mine = wait_results(&url, &mine, 1, Duration::from_secs(60)).await;
    wait_drained(&url, &p, Duration::from_secs(30)).await;
    worker.stop().await;

    let r = &on_mine["cut"];
    assert_eq!(r["error"]["code"], "invalid_job", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_job_bytes"), "{message}");
    assert_eq!(on_default["img"]["error"]["code"], "image_too_large");
    let bad_json = on_default
        .values()
        .find(|r| r["error"]["code"] == "invalid_json")
        .expect("the entry with a long field name is answered");
    assert_eq!(bad_json["status"], "error");

    let letters = dead_letters(&url, &keys.dead).await;
    assert_eq!(letters.len(), 3, "one dead letter each");
    for letter in &letters {
        for (name, value) in letter {
            assert!(
                name.len() <= 300,
                "a dead letter carries a {} byte name",
                name.len()
            );
            assert!(value.len() <= 20 << 10, "{name}: {} bytes", value.len());
        }
    }
    let with_names = letters
        .iter()
        .find(|l| l.keys().any(|k| k.starts_with("nnnn")))
        .expect("the long name, cut");
    assert!(with_names.keys().any(|k| k.ends_with("...<4194304 bytes>")));
    assert_eq!(text(with_names, "side"), "<1000000 bytes dropped>");
}
