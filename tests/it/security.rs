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
         +script|load +type +hset +del"
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
    // The pipeline enqueues through the plain port as the admin user.
    let frames: Vec<_> = (0..3)
        .map(|i| frame(&format!("s{i}"), image(200, 200, i, false)))
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

    // A wrong password: the worker keeps retrying, logs the failure, never the secret.
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
    wait_for(
        "the failure to be logged",
        Duration::from_secs(60),
        || async {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("redis unavailable")
        },
    )
    .await;
    let (status, body) = http_get(&format!("http://{}/readyz", cfg.http.listen))
        .await
        .expect("readyz");
    assert_eq!(status, 503, "not ready without Redis: {body}");
    signal_term(&bad);
    bad.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains(wrong),
        "the wrong password appeared in the log"
    );
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
