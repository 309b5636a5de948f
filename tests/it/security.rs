//! Who may touch the queue: Redis over TLS with an ACL user limited to the worker's keys and
//! commands (the line the README gives operators), and no secret in any log line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hmr2_client::Keys;
use hmr2_tools::redis_server::{free_port, RedisServer};

use crate::support::*;

/// The ACL rule of the README, for a given prefix.
pub(crate) fn worker_acl(prefix: &str, password: &str) -> String {
    format!(
        "user hmr2-worker on >{password} ~{prefix}:* resetchannels -@all +@connection \
         +xreadgroup +xclaim +xrange +xack +xdel +xadd +xlen +xpending +xinfo|groups +xinfo|stream \
         +xinfo|consumers +xgroup|create +xgroup|delconsumer +expire +evalsha +eval \
         +script|load +type +hset +del +hget +hgetall +hsetnx +hexists +hlen +exists +rename \
         +zadd +zrem +zrange +zcard +time +persist"
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed")
        .status
        .success();
    assert!(ok, "openssl {args:?} failed");
}

/// A test CA and a server certificate for localhost.
pub(crate) fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hmr2 test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_least_privilege_acl_user_and_no_password_in_logs() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = prefix("tls");
    let password = "pw-7f3a9c1e-never-log-me";
    let acl = certs.path().join("users.acl");
    std::fs::write(
        &acl,
        format!(
            "user default on nopass ~* &* +@all\n{}\n",
            worker_acl(&p, password)
        ),
    )
    .unwrap();
    let tls_port = free_port().unwrap();
    let c = |f: &str| certs.path().join(f).to_string_lossy().to_string();
    let tls_port_s = tls_port.to_string();
    let (cert, key, ca, aclfile) = (
        c("server.pem"),
        c("server.key"),
        c("ca.pem"),
        acl.to_string_lossy().to_string(),
    );
    let redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port_s,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--aclfile",
        &aclfile,
    ])
    .unwrap();
    let keys = Keys::new(&p);
    // The pipeline enqueues through the plain port as the admin user: the frames of one
    // tracked video, so the rule must cover recording, tracking and writing the video too.
    let frames: Vec<_> = (0..3)
        .map(|i| {
            let job = hmr2_client::Job::new(format!("s{i}"))
                .video("acl".to_string(), i as u64)
                .tracked(3, 10.0);
            hmr2_client::Frame::new(job, image(200, 200, i, false))
        })
        .collect();
    enqueue_frames(&redis.url(), &p, &frames, true).await;

    let mut cfg = config(
        &format!("rediss://hmr2-worker:{password}@localhost:{tls_port}"),
        &p,
    );
    cfg.queue.claim_interval_ms = 200;
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    let mut worker = spawn_worker_process_with(
        &cfg,
        &[("SSL_CERT_FILE", ca.as_str()), ("RUST_LOG", "debug")],
    );
    let got = wait_results(&redis.url(), &keys.results, 3, Duration::from_secs(60)).await;
    let video = keys.video_output("acl", None).unwrap();
    wait_for(
        "the tracked video written under the ACL user",
        Duration::from_secs(60),
        || async {
            let mut admin = connect(&redis.url()).await;
            let r: redis::streams::StreamRangeReply =
                redis::AsyncCommands::xrange_all(&mut admin, &video)
                    .await
                    .unwrap_or_default();
            r.ids.iter().filter(|e| e.map.contains_key("frame")).count() == 3
                && r.ids.iter().any(|e| e.map.contains_key("done"))
        },
    )
    .await;
    signal_term(&worker);
    assert_eq!(worker.wait().unwrap().code(), Some(0));
    // The ACL allows the clean exit's tidying: the worker's empty consumer left the group.
    let mut admin = connect(&redis.url()).await;
    let consumers: redis::streams::StreamInfoConsumersReply =
        redis::AsyncCommands::xinfo_consumers(&mut admin, &keys.jobs, &keys.group)
            .await
            .unwrap();
    assert!(
        consumers.consumers.is_empty(),
        "consumer not removed: {:?}",
        consumers
            .consumers
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    assert!(
        got.values().all(|r| r["status"] == "ok"),
        "served over TLS with the ACL user"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("DEBUG"), "the log was written at debug level");
    assert!(!log.contains(password), "the password appeared in the log");
    assert!(
        log.contains("hmr2-worker:***@localhost"),
        "the URL is shown redacted"
    );

    // A wrong password: start-up ends at once naming the setting; the log never shows the secret.
    let wrong = "wrong-b81d5-secret";
    let mut cfg = config(
        &format!("rediss://hmr2-worker:{wrong}@localhost:{tls_port}"),
        &p,
    );
    cfg.queue.prefix = p.clone();
    let mut bad = spawn_worker_process_with(
        &cfg,
        &[("SSL_CERT_FILE", ca.as_str()), ("RUST_LOG", "debug")],
    );
    let status = wait_exit(&mut bad, Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "a refused password ends start-up: {log}");
    assert!(
        log.contains("WRONGPASS") && log.contains("redis.url"),
        "{log}"
    );
    assert!(
        !log.contains(wrong),
        "the wrong password appeared in the log"
    );
}

/// Credentials Redis refuses (a server with `requirepass`) end start-up before the model loads:
/// a non-zero exit whose message names `redis.url` and Redis's own reply (WRONGPASS for a wrong
/// password, NOAUTH for none), with no model warm-up in the log. The right password, percent-
/// encoded in the URL, starts a worker that serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_redis_refuses_stop_start_up_before_the_model_loads() {
    let redis = RedisServer::start().unwrap();
    let password = "right:9c1f@pass";
    let mut admin = connect(&redis.url()).await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = redis.port();
    let run = |url: String| start_worker(url);

    let wrong = "wrong-77d0e-secret";
    for (url, reply) in [
        (format!("redis://:{wrong}@127.0.0.1:{port}"), "WRONGPASS"),
        (format!("redis://127.0.0.1:{port}"), "NOAUTH"),
    ] {
        let (_, exited, log_path, _worker) = run(url).await;
        let log = std::fs::read_to_string(&log_path).unwrap();
        let status = exited.unwrap_or_else(|| panic!("the worker became ready: {log}"));
        assert!(!status.success(), "{log}");
        assert!(
            log.contains(reply) && log.contains("redis.url") && log.contains("HMR2_REDIS__URL"),
            "{log}"
        );
        assert!(
            !log.contains("warm-up done"),
            "the model was loaded before Redis was checked: {log}"
        );
        assert!(!log.contains(wrong), "the password appeared in the log");
    }

    // The right one (percent-encoded in the URL): the worker warms up and serves.
    let url = format!("redis://:right%3A9c1f%40pass@127.0.0.1:{port}");
    let (cfg, exited, log_path, worker) = run(url).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(exited.is_none(), "the right password was refused: {log}");
    assert!(log.contains("warm-up done"), "{log}");
    let keys = Keys::new(&cfg.queue.prefix);
    let authed = format!("redis://:right%3A9c1f%40pass@127.0.0.1:{port}");
    enqueue_frames(
        &authed,
        &cfg.queue.prefix,
        &[frame("a1", image(64, 48, 1, false))],
        true,
    )
    .await;
    let got = wait_results(&authed, &keys.results, 1, Duration::from_secs(60)).await;
    assert_eq!(got["a1"]["status"], "ok");
    drop(worker);
}

/// Starts a worker process on `url`: its configuration, its exit status if it exited before it
/// was ready (`None` once ready), its log file, the process.
async fn start_worker(
    url: String,
) -> (
    hmr2_worker::config::Config,
    Option<std::process::ExitStatus>,
    std::path::PathBuf,
    WorkerProcess,
) {
    let p = prefix("auth");
    let cfg = config(&url, &p);
    let mut worker = spawn_worker_process_with(&cfg, &[("RUST_LOG", "info")]);
    let exited = worker_exit_or_ready(&mut worker, &cfg).await;
    let log_path = std::env::temp_dir().join(format!("{p}.log"));
    (cfg, exited, log_path, worker)
}

/// Waits until `worker` exits (its status) or reports ready (`None`).
async fn worker_exit_or_ready(
    worker: &mut WorkerProcess,
    cfg: &hmr2_worker::config::Config,
) -> Option<std::process::ExitStatus> {
    let ready = format!("http://{}/readyz", cfg.http.listen);
    wait_for(
        "the worker to exit or be ready",
        Duration::from_secs(120),
        || {
            let ready = ready.clone();
            let exited = worker.try_wait().unwrap();
            async move {
                if let Some(status) = exited {
                    return Ok(Some(status));
                }
                match http_get(&ready).await {
                    Some((200, _)) => Ok(None),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
}

/// The rule these tests run is the README's, word for word.
#[test]
fn the_readme_gives_the_acl_rule_tested_here() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER hmr2-worker "))
        .expect("the README's ACL line");
    let readme_rule: Vec<&str> = line.split_whitespace().skip(2).collect();
    let tested = worker_acl("hmr2", "PASSWORD");
    let tested_rule: Vec<&str> = tested.split_whitespace().skip(1).collect();
    assert_eq!(readme_rule, tested_rule);
}
