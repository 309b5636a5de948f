//! The README's Rust producer runs as written: its code block is `client/examples/track_video.rs`
//! word for word, and that example, built by `cargo test --workspace`, turns a folder of frames
//! into one tracked video through a real worker and a real redis-server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use hmr2_tools::demo::frames::{encode_jpeg, render_clip};
use hmr2_tools::redis_server::RedisServer;

use crate::support::*;

/// The fenced block that follows `<!-- test: <name> -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let marker = format!("<!-- test: {name} -->\n");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?}"))
        .1;
    let body = after.split_once('\n').expect("a fence after the marker").1;
    body.split_once("```\n")
        .expect("a closing fence")
        .0
        .to_string()
}

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds the client's examples",
        path.display()
    );
    path
}

#[test]
fn the_readmes_rust_block_is_the_example_that_runs() {
    let example = std::fs::read_to_string(repo().join("client/examples/track_video.rs")).unwrap();
    assert_eq!(readme_block("rust-readme"), example);
    assert!(
        example.lines().count() < 20,
        "README examples stay under 20 lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_rust_producer_tracks_a_folder_of_frames() {
    // Its own server: the example uses the default prefix, "hmr2".
    let redis = RedisServer::start().expect("redis-server");
    let mut c = config(&redis.url(), "hmr2");
    c.detector.path = repo().join("models/detector-tiny.pt");
    let worker = Worker::start(c);
    let frames = tempfile::tempdir().unwrap();
    for i in 0..16 {
        let (img, _) = render_clip(640, 360, i * 3);
        let jpeg = encode_jpeg(&img, 90);
        std::fs::write(frames.path().join(format!("{i:05}.jpg")), jpeg).unwrap();
    }
    let mut child = Command::new(example("track_video"))
        .arg(frames.path())
        .env("HMR2_URL", redis.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example runs");
    let status = wait_exit(&mut child, Duration::from_secs(300)).await;
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The clip's figures, tracked: one line per track, numbered from 1.
    assert!(
        stdout.contains("TrackInfo { track_id: 1, first_frame: 0"),
        "{stdout}"
    );
    assert!(stdout.lines().count() >= 2, "{stdout}");
    worker.stop().await;
}
