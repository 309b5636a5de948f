//! Shared helpers: Redis, workers (in-process and as child processes), frames, results.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hmr2_client::{producer, Frame, Job, Keys};
pub use hmr2_tools::redis_server::free_port;
use hmr2_tools::redis_server::RedisServer;
use hmr2_worker::config::Config;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    let p = repo().join("models/artifacts/hmr2-tiny.pt");
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

pub fn oom_model() -> PathBuf {
    let p = repo().join("models/artifacts/oom-test.pt");
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// The Redis server shared by the tests of this binary (each test uses its own prefix); killed
/// when the test binary exits (statics are never dropped).
pub fn shared_redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    static PID: AtomicU32 = AtomicU32::new(0);
    extern "C" fn kill_shared() {
        let pid = PID.load(Ordering::Relaxed);
        if pid != 0 {
            // SAFETY: kill(2) on the child this process started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    SERVER.get_or_init(|| {
        let server = RedisServer::start().expect("start redis-server");
        PID.store(server.pid().unwrap_or(0), Ordering::Relaxed);
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(kill_shared) };
        server
    })
}

/// A prefix no other test uses.
pub fn prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Test configuration: tiny model on the CPU, short timeouts, a free metrics port.
pub fn config(redis_url: &str, prefix: &str) -> Config {
    let mut c = Config::defaults();
    c.redis.url = redis_url.to_string();
    c.queue.prefix = prefix.to_string();
    c.queue.max_batch = 8;
    c.queue.block_ms = 200;
    c.queue.claim_interval_ms = 200;
    c.queue.gauge_interval_ms = 200;
    c.model.path = tiny_model();
    c.model.device = "cpu".into();
    c.pipeline.decode_threads = 2;
    c.http.listen = format!("127.0.0.1:{}", free_port().unwrap());
    c.shutdown.grace_seconds = 20;
    c
}

/// A worker running in this process.
pub struct Worker {
    pub token: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), hmr2_worker::worker::RunError>>,
    pub http: String,
}

impl Worker {
    pub fn start(config: Config) -> Self {
        let token = CancellationToken::new();
        let http = format!("http://{}", config.http.listen);
        let task = tokio::spawn(hmr2_worker::run(config, token.clone()));
        Worker { token, task, http }
    }

    /// Stops it and waits for a clean return.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("worker stops within 60 s")
            .expect("worker task")
            .expect("worker returns Ok");
    }
}

/// A worker as a child process of the real binary, configured through `HMR2_*` variables.
pub fn spawn_worker_process(config: &Config) -> WorkerProcess {
    spawn_worker_process_with(config, &[])
}

/// A worker child process, killed when dropped (so a failing test leaves nothing behind).
pub struct WorkerProcess(Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Like [`spawn_worker_process`], with extra environment variables. Its stderr goes to
/// `$TMPDIR/<prefix>.log`.
pub fn spawn_worker_process_with(config: &Config, env: &[(&str, &str)]) -> WorkerProcess {
    spawn_process("run", &format!("{}.log", config.queue.prefix), config, env)
}

/// `hmr2-worker track` (the tracking stage alone) as a child process, configured like
/// [`spawn_worker_process_with`]. Its stderr goes to `$TMPDIR/<prefix>-track-<port>.log`.
pub fn spawn_tracker_process(config: &Config, env: &[(&str, &str)]) -> WorkerProcess {
    let port = config.http.listen.rsplit(':').next().unwrap_or("0");
    let log = format!("{}-track-{port}.log", config.queue.prefix);
    spawn_process("track", &log, config, env)
}

fn spawn_process(command: &str, log: &str, config: &Config, env: &[(&str, &str)]) -> WorkerProcess {
    let log = std::fs::File::create(std::env::temp_dir().join(log)).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_hmr2-worker"))
        .arg(command)
        .env("HMR2_REDIS__URL", &config.redis.url)
        .env("HMR2_QUEUE__PREFIX", &config.queue.prefix)
        .env("HMR2_REDIS__CLUSTER", config.redis.cluster.to_string())
        .env("HMR2_QUEUE__SHARDS", config.queue.shards.to_string())
        .env("HMR2_QUEUE__MAX_BATCH", config.queue.max_batch.to_string())
        .env("HMR2_QUEUE__BLOCK_MS", config.queue.block_ms.to_string())
        .env(
            "HMR2_QUEUE__CLAIM_IDLE_MS",
            config.queue.claim_idle_ms.to_string(),
        )
        .env("HMR2_MODEL__PATH", &config.model.path)
        .env("HMR2_MODEL__DEVICE", &config.model.device)
        .env("HMR2_HTTP__LISTEN", &config.http.listen)
        .env(
            "HMR2_SHUTDOWN__GRACE_SECONDS",
            config.shutdown.grace_seconds.to_string(),
        )
        .env("HMR2_PIPELINE__DECODE_THREADS", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(WorkerProcess)
        .expect("spawn the worker binary")
}

/// A connection to `url`. Under load (a full test run on few cores) one attempt can time out:
/// each try gets 10 s to connect, and failed tries are repeated for up to 60 s.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("a valid redis URL");
    // Replies may be slow while another test's large entry holds Redis's one thread.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    wait_for(
        &format!("a connection to {url}"),
        Duration::from_secs(60),
        || async {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        },
    )
    .await
}

/// The number right after `key` (such as `used_memory:` or `errorstat_OOM:count=`) in Redis's
/// `INFO <section>`; 0 when the line is absent (a counter that has not moved yet).
pub async fn info_number(admin: &mut MultiplexedConnection, section: &str, key: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or(0, |rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
}

/// A textured test image (gradients + noise), encoded.
pub fn image(width: u32, height: u32, seed: u32, png: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state & 0x3f) as u8;
        image::Rgb([
            ((x * 255 / width.max(1)) as u8).wrapping_add(n),
            ((y * 255 / height.max(1)) as u8).wrapping_add(n / 2),
            ((seed * 40) as u8).wrapping_add(n),
        ])
    });
    let mut out = Cursor::new(Vec::new());
    let format = if png {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// An all-white PNG: the OOM test model never fits such a crop, not even alone.
pub fn white_png(side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

/// A plain frame job.
pub fn frame(job_id: &str, image: Vec<u8>) -> Frame {
    Frame::new(Job::new(job_id.to_string()).video("video", 0), image)
}

pub async fn enqueue_frames(url: &str, prefix: &str, frames: &[Frame], raw: bool) -> Vec<String> {
    let mut c = connect(url).await;
    producer::add_all(&mut c, &Keys::new(prefix), frames, raw, |_| {})
        .await
        .expect("enqueue")
}

/// Adds one entry with arbitrary fields to the job stream.
pub async fn xadd_raw(url: &str, prefix: &str, fields: &[(&str, &[u8])]) -> String {
    let mut c = connect(url).await;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(Keys::new(prefix).jobs).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut c).await.expect("xadd")
}

/// Every result in `stream`: (job_id field, parsed result).
pub async fn results(url: &str, stream: &str) -> Vec<(String, Value)> {
    let mut c = connect(url).await;
    let reply: redis::streams::StreamRangeReply = c.xrange_all(stream).await.expect("xrange");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let get = |k: &str| match e.map.get(k) {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
                _ => String::new(),
            };
            let result = serde_json::from_str(&get("result")).expect("result is JSON");
            (get("job_id"), result)
        })
        .collect()
}

/// Waits until `stream` holds results for `n` distinct job ids; returns them by job id.
pub async fn wait_results(
    url: &str,
    stream: &str,
    n: usize,
    within: Duration,
) -> HashMap<String, Value> {
    wait_for(&format!("{n} results in {stream}"), within, || async {
        let by_id: HashMap<String, Value> = results(url, stream).await.into_iter().collect();
        if by_id.len() >= n {
            Ok(by_id)
        } else {
            Err(format!("{} of {n}", by_id.len()))
        }
    })
    .await
}

pub async fn xlen(url: &str, key: &str) -> usize {
    let mut c = connect(url).await;
    c.xlen(key).await.expect("xlen")
}

/// Entries delivered to the group and not acknowledged.
pub async fn pending(url: &str, prefix: &str) -> usize {
    let k = Keys::new(prefix);
    let mut c = connect(url).await;
    let r: redis::RedisResult<redis::streams::StreamPendingReply> =
        c.xpending(&k.jobs, &k.group).await;
    match r {
        Ok(p) => p.count(),
        Err(_) => 0,
    }
}

/// GET `url`: status and body.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Waits until GET `url` answers `status`.
pub async fn wait_status(url: &str, status: u16, within: Duration) {
    wait_for(&format!("{url} to answer {status}"), within, || async {
        match http_get(url).await {
            Some((s, _)) if s == status => Ok(()),
            Some((s, body)) => Err(format!("{s} {}", body.trim_end())),
            None => Err("no answer".to_string()),
        }
    })
    .await
}

/// Waits until `child` exits; returns its status.
pub async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    wait_for(&format!("process {} to exit", child.id()), within, || {
        let exited = child.try_wait().expect("try_wait");
        async move { exited }
    })
    .await
}

/// Sends SIGTERM to a child worker.
pub fn signal_term(child: &Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

/// What a probe of [`wait_for`] answers: the value once the condition holds, or, until then,
/// what it sees (for the message if the deadline passes).
pub trait Probe<T> {
    fn outcome(self) -> Result<T, Option<String>>;
}

impl Probe<()> for bool {
    fn outcome(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Probe<T> for Option<T> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Probe<T> for Result<T, E> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Polls `probe` until it answers (`true`, `Some(value)` or `Ok(value)`): every 10 ms at
/// first, then every 100 ms. Once `within` has passed it fails the test, naming `what`, how long
/// it waited and what the probe saw last. The one way the tests wait for something to happen:
/// never a fixed sleep, and deadlines generous enough for a loaded machine.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Probe<T>,
{
    let mut deadline = Deadline::new(what, within);
    loop {
        match probe().await.outcome() {
            Ok(value) => return value,
            Err(seen) => deadline.tick(seen.as_deref().unwrap_or("")).await,
        }
    }
}

/// The deadline of [`wait_for`], for a loop that keeps state between looks (a cursor, the
/// largest value sampled): `while !done { deadline.tick(seen).await; ... }`.
pub struct Deadline {
    what: String,
    start: Instant,
    within: Duration,
    pause: Duration,
}

impl Deadline {
    pub fn new(what: &str, within: Duration) -> Self {
        Deadline {
            what: what.to_string(),
            start: Instant::now(),
            within,
            pause: Duration::from_millis(10),
        }
    }

    /// Fails the test if the deadline has passed (with `seen`, what the last look found, in the
    /// message); otherwise waits before the next look, at most until the deadline, so there is
    /// always one last look at it.
    pub async fn tick(&mut self, seen: impl Display) {
        let waited = self.start.elapsed();
        if waited >= self.within {
            let seen = seen.to_string();
            let seen = if seen.is_empty() {
                String::new()
            } else {
                format!("; last seen: {seen}")
            };
            panic!(
                "gave up waiting for {} after {waited:.1?} (deadline {:?}){seen}",
                self.what, self.within
            );
        }
        tokio::time::sleep(self.pause.min(self.within - waited)).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
    }
}
