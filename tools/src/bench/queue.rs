//! `hmr2 bench-cluster`: the queue on one `redis-server` against a Redis Cluster, with 1, 3 and
//! 6 shards, side by side in one run.
//!
//! ## Method
//! 1. The frames are small synthetic JPEGs (160×120 by default, a few distinct ones encoded once
//!    and cycled), sent whole (no boxes), and the model is one whose forward pass costs nothing
//!    (`benches/baseline/null_model.py`): what is left is the queue and the worker's pipeline
//!    around it, which is what the topologies change.
//! 2. Each run gets a fresh Redis: a throwaway `redis-server`, or a throwaway cluster of
//!    `--masters` masters without replicas ([`RedisCluster`]), and the configured key prefix
//!    (`hmr2` by default: which masters the shards land on is what a deployment with that
//!    prefix gets). `--jobs` jobs, numbered frames of `--videos` videos, are put on their shards
//!    ([`producer::add_all_sharded`]: crc32 of the video id, modulo the shards) **before the
//!    worker starts**.
//! 3. One worker runs in this process (`hmr2_worker::run`), with the same configuration for
//!    every topology except `redis.url`, `redis.cluster` and `queue.shards` (and, in the control
//!    row, `redis.pool_idle_check_ms = 0`: a `PING` at every pool checkout). The clock starts
//!    when `/readyz` first answers 200 and stops when the last result is read: one reader per
//!    shard (`XREAD BLOCK` on the shard's results stream, a connection of its own each, from
//!    [`hmr2_worker::connect`]).
//! 4. **CPU per job**: CPU time of this process (the worker, and the result readers) and of the
//!    redis-server processes (every child process of this one, from `/proc/<pid>/stat`), over
//!    the timed window, divided by the jobs. **Latency**: each result's `timings_ms.total`
//!    (fetch to result ready to publish).
//! 5. The topologies run in order (single node, then the cluster with each shard count, then the
//!    control row), and
//!    the whole series `--rounds` times, interleaved, so a change in the machine's load shows as
//!    the spread between rounds rather than as a difference between topologies. Ratios are
//!    taken round by round against the single node of the same round; the summary gives their
//!    median over the rounds and their range.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use hmr2_client::{producer, Frame, Job, JobResult, Status};
use hmr2_worker::config::Config;
use hmr2_worker::model;
use hmr2_worker::Conn;

use super::measure::{self, Percentiles};
use super::report::Machine;
use super::session::http_get;
use super::{cpu_name, loadavg};
use crate::demo::frames;
use crate::redis_server::{free_port, RedisCluster, RedisServer};

/// Options of `hmr2 bench-cluster`.
#[derive(Debug, Clone)]
pub struct QueueBenchOptions {
    /// Jobs per run.
    pub jobs: usize,
    /// Frame size.
    pub size: (u32, u32),
    /// Distinct frames rendered and cycled through.
    pub distinct: usize,
    /// Videos the jobs are frames of (the shard of a job is that of its video).
    pub videos: usize,
    /// Shard counts on the cluster, one run each (the single node always has one shard).
    pub shards: Vec<usize>,
    /// Masters of the cluster (no replicas).
    pub masters: usize,
    /// How many times the whole series runs, interleaved.
    pub rounds: usize,
    /// Send the JPEG bytes in the `image` field instead of base64 in the job JSON.
    pub raw: bool,
    /// Also run the single node with a `PING` at every pool checkout
    /// ([`Topology::single_ping_every_checkout`]).
    pub ping_control: bool,
    /// Where the JSON report goes.
    pub json: PathBuf,
}

/// One topology: where the queue is and how many shards it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// For people: `single node, 1 shard`, `cluster 3 masters, 6 shards`.
    pub name: String,
    /// Masters of the cluster; 0 for a single node.
    pub masters: usize,
    pub shards: usize,
    /// The pool checks every connection with a `PING` at checkout (`redis.pool_idle_check_ms =
    /// 0`) instead of only those idle for a while (the default).
    pub ping_every_checkout: bool,
}

impl Topology {
    pub fn single() -> Self {
        Topology {
            name: "single node, 1 shard".into(),
            masters: 0,
            shards: 1,
            ping_every_checkout: false,
        }
    }

    /// The single node with a `PING` at every pool checkout: what the pool did before it kept
    /// the check for idle connections, a control for that change.
    pub fn single_ping_every_checkout() -> Self {
        Topology {
            name: "single node, 1 shard, PING at every checkout".into(),
            ping_every_checkout: true,
            ..Topology::single()
        }
    }

    pub fn cluster(masters: usize, shards: usize) -> Self {
        let s = if shards == 1 { "" } else { "s" };
        Topology {
            name: format!("cluster {masters} masters, {shards} shard{s}"),
            masters,
            shards,
            ping_every_checkout: false,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.masters > 0
    }
}

/// The topologies of a series, in the order they run: the single node, then the cluster with
/// each shard count, then (with `ping_control`) the single node with a `PING` at every checkout.
pub fn topologies(masters: usize, shards: &[usize], ping_control: bool) -> Vec<Topology> {
    std::iter::once(Topology::single())
        .chain(shards.iter().map(|&n| Topology::cluster(masters, n)))
        .chain(ping_control.then(Topology::single_ping_every_checkout))
        .collect()
}

/// One run of one topology.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Index into [`QueueReport::topologies`].
    pub topology: usize,
    pub round: usize,
    /// From `/readyz` 200 to the last result read.
    pub seconds: f64,
    pub jobs_per_s: f64,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    /// `timings_ms.total` of the ok results.
    pub latency_ms: Percentiles,
    /// CPU time of this process (worker and result readers) per job, milliseconds.
    pub worker_cpu_ms_per_job: f64,
    /// CPU time of the redis-server processes per job, milliseconds.
    pub redis_cpu_ms_per_job: f64,
    /// Jobs put on each shard.
    pub jobs_per_shard: Vec<usize>,
    /// The port of the master serving each shard (cluster only).
    pub shard_masters: Vec<u16>,
    /// How long the backlog took to enqueue, seconds (pipelined, shard by shard).
    pub enqueue_seconds: f64,
    /// From starting the worker to its first `/readyz` 200, seconds.
    pub startup_seconds: f64,
}

impl Run {
    /// CPU time per job, this process and Redis together, milliseconds.
    pub fn cpu_ms_per_job(&self) -> f64 {
        self.worker_cpu_ms_per_job + self.redis_cpu_ms_per_job
    }

    /// How many distinct masters its shards are on (0 on a single node).
    pub fn masters_used(&self) -> usize {
        let mut ports = self.shard_masters.clone();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }
}

/// A topology over all its rounds, against the single node.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub topology: usize,
    pub name: String,
    pub rounds: usize,
    /// Medians over the rounds.
    pub jobs_per_s: f64,
    pub worker_cpu_ms_per_job: f64,
    pub redis_cpu_ms_per_job: f64,
    pub cpu_ms_per_job: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Jobs/s over the single node's in the same round: the median over the rounds.
    pub jobs_per_s_vs_single: f64,
    /// The same ratio, lowest and highest over the rounds.
    pub jobs_per_s_vs_single_range: [f64; 2],
    /// CPU per job (this process and Redis) over the single node's in the same round: the
    /// median over the rounds.
    pub cpu_per_job_vs_single: f64,
    /// The same ratio, lowest and highest over the rounds.
    pub cpu_per_job_vs_single_range: [f64; 2],
    /// Distinct masters the shards are on (cluster only; the same in every round, as the keys
    /// and the slot ranges of a fresh cluster are).
    pub masters_used: usize,
}

/// Setup of the series.
#[derive(Debug, Clone, Serialize)]
pub struct QueueSetup {
    pub jobs: usize,
    pub videos: usize,
    pub size: [u32; 2],
    pub distinct_frames: usize,
    pub jpeg_bytes_mean: usize,
    pub raw: bool,
    /// `queue.prefix`: the shards' hash tags are `{<prefix>:<k>}`.
    pub prefix: String,
    pub model: String,
    pub model_device: String,
    pub max_batch: usize,
    pub rounds: usize,
    pub replicas: usize,
    pub redis_server: String,
    pub method: String,
}

/// What `hmr2 bench-cluster` writes.
#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    pub machine: Machine,
    pub setup: QueueSetup,
    pub topologies: Vec<Topology>,
    pub runs: Vec<Run>,
    pub summary: Vec<Summary>,
}

/// The Redis of one run; dropped (its processes killed) when the run ends.
enum Redis {
    Node(RedisServer),
    Cluster(RedisCluster),
}

/// The Redis of the current run, shared with the signal watcher so a second Ctrl-C kills it.
type RedisSlot = Arc<Mutex<Option<Redis>>>;

/// `redis-server 7.0.15`, from `redis-server --version` (`Redis server v=7.0.15 sha=...`).
fn redis_server_version() -> String {
    let bin = std::env::var("HMR2_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let v = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("(unknown version)");
    format!("redis-server {v}")
}

/// The jobs of a run: job `i` is frame `i / videos` of video `i % videos`.
fn make_jobs(jobs: usize, videos: usize, synth: &[frames::SyntheticFrame]) -> Vec<Frame> {
    (0..jobs)
        .map(|i| {
            let (video, n) = (format!("video-{}", i % videos), (i / videos) as u64);
            let job = Job::new(format!("{video}:{n}")).video(video, n);
            Frame::new(job, synth[i % synth.len()].jpeg.clone())
        })
        .collect()
}

/// Runs the series, prints the table, writes the JSON report and returns it.
pub async fn run(config: Config, o: QueueBenchOptions) -> anyhow::Result<QueueReport> {
    anyhow::ensure!(o.jobs > 0, "--jobs must be at least 1");
    anyhow::ensure!(o.videos > 0, "--videos must be at least 1");
    anyhow::ensure!(o.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(o.masters >= 3, "a Redis Cluster needs at least 3 masters");
    anyhow::ensure!(
        o.shards.iter().all(|&n| (1..=1024).contains(&n)),
        "--shards: each must be 1-1024"
    );
    let load_before = loadavg();
    let (w, h) = o.size;
    let distinct = o.distinct.max(1);
    eprintln!("bench-cluster: rendering {distinct} distinct {w}x{h} frames");
    let synth =
        tokio::task::spawn_blocking(move || frames::synthetic_frames(w, h, 0, distinct)).await?;
    let jpeg_bytes_mean = synth.iter().map(|f| f.jpeg.len()).sum::<usize>() / synth.len();
    let jobs = make_jobs(o.jobs, o.videos, &synth);

    let mut config = config;
    config.detector.path = PathBuf::new();
    config.queue.results_maxlen = config.queue.results_maxlen.max(2 * o.jobs as u64);
    let device = model::resolve_device(config.device())?;

    let slot: RedisSlot = Arc::new(Mutex::new(None));
    let stop = CancellationToken::new();
    let killer = slot.clone();
    tokio::spawn(hmr2_worker::signal::stop_on_signal(
        stop.clone(),
        move || {
            if let Ok(mut s) = killer.lock() {
                drop(s.take());
            }
        },
    ));

    let tops = topologies(o.masters, &o.shards, o.ping_control);
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        for (t, top) in tops.iter().enumerate() {
            eprintln!(
                "bench-cluster: round {}/{}, {} ({} jobs)",
                round + 1,
                o.rounds,
                top.name,
                o.jobs
            );
            let r = run_one(&config, top, &jobs, o.raw, &slot, &stop).await;
            // Whatever happened, this run's Redis goes now.
            let redis = slot.lock().ok().and_then(|mut s| s.take());
            tokio::task::spawn_blocking(move || drop(redis)).await?;
            let mut r = r.with_context(|| format!("{} (round {})", top.name, round + 1))?;
            r.topology = t;
            r.round = round;
            eprintln!(
                "bench-cluster:   {:.0} jobs/s, {:.3} ms CPU/job (+ redis {:.3}), p50 {:.1} ms",
                r.jobs_per_s, r.worker_cpu_ms_per_job, r.redis_cpu_ms_per_job, r.latency_ms.p50
            );
            runs.push(r);
        }
    }

    let report = QueueReport {
        machine: Machine {
            cpu: cpu_name(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_before,
            load_after: loadavg(),
            libtorch: model::torch_version(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        setup: QueueSetup {
            jobs: o.jobs,
            videos: o.videos,
            size: [w, h],
            distinct_frames: distinct,
            jpeg_bytes_mean,
            raw: o.raw,
            prefix: config.queue.prefix.clone(),
            model: config.model.path.display().to_string(),
            model_device: model::device_label(device),
            max_batch: config.queue.max_batch,
            rounds: o.rounds,
            replicas: 0,
            redis_server: redis_server_version(),
            method: "per run: a fresh Redis, a backlog of --jobs jobs on their shards enqueued \
                     before the worker starts, one worker in-process; clock from /readyz 200 to \
                     the last result read (one XREAD BLOCK reader per shard); topologies \
                     interleaved, --rounds times"
                .into(),
        },
        summary: summarize(&tops, &runs),
        topologies: tops,
        runs,
    };
    print!("{}", table(&report));
    if let Some(dir) = o.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", o.json.display()))?;
    println!("report written to {}", o.json.display());
    Ok(report)
}

/// One run of `top`: a fresh Redis (left in `slot`), the backlog, the worker, the results.
async fn run_one(
    base: &Config,
    top: &Topology,
    jobs: &[Frame],
    raw: bool,
    slot: &RedisSlot,
    stop: &CancellationToken,
) -> anyhow::Result<Run> {
    let mut config = base.clone();
    let masters = top.masters;
    let redis = tokio::task::spawn_blocking(move || -> std::io::Result<Redis> {
        if masters > 0 {
            RedisCluster::start(masters, 0).map(Redis::Cluster)
        } else {
            RedisServer::start().map(Redis::Node)
        }
    })
    .await??;
    match &redis {
        Redis::Node(s) => {
            config.redis.url = s.url();
            config.redis.cluster = false;
        }
        Redis::Cluster(c) => {
            config.redis.url = c.urls().join(",");
            config.redis.cluster = true;
        }
    }
    *slot.lock().expect("not poisoned") = Some(redis);
    // The configured prefix (`hmr2` by default) on a fresh Redis: the shards' hash tags, so
    // their slots and masters, are those a deployment with this prefix gets.
    config.queue.shards = top.shards;
    if top.ping_every_checkout {
        config.redis.pool_idle_check_ms = 0;
    }
    config.http.listen = format!("127.0.0.1:{}", free_port()?);
    config.validate()?;
    anyhow::ensure!(
        config.cluster() == top.is_cluster(),
        "the configuration does not say cluster = {}",
        top.is_cluster()
    );
    let layout = config.layout();
    anyhow::ensure!(
        layout.len() == top.shards,
        "the layout has {} shards, not {}",
        layout.len(),
        top.shards
    );

    // Which master serves each shard (the slot of its hash tag).
    let shard_masters =
        tokio::task::block_in_place(|| match slot.lock().expect("not poisoned").as_ref() {
            Some(Redis::Cluster(c)) => layout
                .shards()
                .iter()
                .map(|keys| Ok(c.master_for_slot(hash_slot(&keys.jobs))?.port))
                .collect::<std::io::Result<Vec<u16>>>(),
            _ => Ok(Vec::new()),
        })?;

    let mut conn = hmr2_worker::connect(&config)
        .await
        .context("connecting to Redis")?;
    let mut jobs_per_shard = vec![0usize; layout.len()];
    for f in jobs {
        jobs_per_shard[producer::shard_keys(&layout, f).shard] += 1;
    }
    let t = Instant::now();
    producer::add_all_sharded(&mut conn, &layout, jobs, raw, |_| {}).await?;
    let enqueue_seconds = t.elapsed().as_secs_f64();
    drop(conn);

    // The readers' connections, made before the clock starts.
    let mut readers = Vec::with_capacity(layout.len());
    for keys in layout.shards() {
        let c = hmr2_worker::connect(&config).await?;
        readers.push((c, keys.results.clone(), jobs_per_shard[keys.shard]));
    }

    let token = CancellationToken::new();
    let _cancel_on_drop = token.clone().drop_guard();
    let addr: std::net::SocketAddr = config.http.listen.parse()?;
    let started = Instant::now();
    let mut worker = tokio::spawn(hmr2_worker::run(config, token.clone()));
    loop {
        if worker.is_finished() {
            return match (&mut worker).await? {
                Ok(()) => Err(anyhow::anyhow!("the worker stopped before it was ready")),
                Err(e) => Err(e).context("the worker did not start"),
            };
        }
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            break;
        }
        anyhow::ensure!(!stop.is_cancelled(), "interrupted");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the worker was not ready within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (t0, cpu0, redis0) = (
        Instant::now(),
        measure::cpu_seconds(),
        measure::children_cpu_seconds(),
    );
    let startup_seconds = (t0 - started).as_secs_f64();

    let seen = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for (c, stream, expect) in readers {
        tasks.spawn(read_shard(c, stream, expect, seen.clone()));
    }
    let mut reads = Vec::with_capacity(layout.len());
    let (mut last_seen, mut last_progress) = (0, Instant::now());
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => {
                if let Some(r) = r {
                    reads.push(r??);
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = seen.load(Ordering::Relaxed);
                if now != last_seen {
                    (last_seen, last_progress) = (now, Instant::now());
                }
                anyhow::ensure!(
                    !worker.is_finished(),
                    "the worker stopped after {now} of {} results",
                    jobs.len()
                );
                anyhow::ensure!(
                    last_progress.elapsed() < Duration::from_secs(120),
                    "no result for 2 minutes ({now} of {} arrived); is the worker stuck?",
                    jobs.len()
                );
            }
            _ = stop.cancelled() => {
                anyhow::bail!("interrupted after {} of {} results", seen.load(Ordering::Relaxed), jobs.len());
            }
        }
    }
    let end = reads.iter().filter_map(|r| r.last).max().unwrap_or(t0);
    let (cpu1, redis1) = (measure::cpu_seconds(), measure::children_cpu_seconds());
    token.cancel();
    worker.await?.context("the worker failed")?;

    let seconds = (end - t0).as_secs_f64().max(1e-9);
    let mut latencies = Vec::with_capacity(jobs.len());
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for r in reads {
        latencies.extend(r.latencies);
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let ok = latencies.len();
    let n = jobs.len().max(1) as f64;
    Ok(Run {
        topology: 0,
        round: 0,
        seconds,
        jobs_per_s: jobs.len() as f64 / seconds,
        ok,
        errors,
        latency_ms: Percentiles::of(latencies),
        worker_cpu_ms_per_job: 1e3 * (cpu1 - cpu0) / n,
        redis_cpu_ms_per_job: 1e3 * (redis1 - redis0) / n,
        jobs_per_shard,
        shard_masters,
        enqueue_seconds,
        startup_seconds,
    })
}

/// What one shard's reader saw.
struct ShardRead {
    latencies: Vec<f64>,
    errors: BTreeMap<String, usize>,
    /// When its last result was read (`None`: it expected none).
    last: Option<Instant>,
}

/// Reads `expect` results from `stream`, from its beginning (`XREAD BLOCK`), counting them
/// in `seen` as they come.
async fn read_shard(
    mut conn: Conn,
    stream: String,
    expect: usize,
    seen: Arc<AtomicUsize>,
) -> anyhow::Result<ShardRead> {
    let mut out = ShardRead {
        latencies: Vec::with_capacity(expect),
        errors: BTreeMap::new(),
        last: None,
    };
    let (mut got, mut after) = (0, "0-0".to_string());
    let opts = StreamReadOptions::default().count(512).block(500);
    while got < expect {
        let before = got;
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&stream], &[&after], &opts).await?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in key.ids {
                if let Some(redis::Value::BulkString(b)) = id.map.get("result") {
                    let text = String::from_utf8_lossy(b);
                    let r = JobResult::from_json(&text).with_context(|| {
                        format!("result {} in {stream} is not a v1 result", id.id)
                    })?;
                    got += 1;
                    seen.fetch_add(1, Ordering::Relaxed);
                    if r.status == Status::Ok {
                        out.latencies.push(r.timings_ms.total);
                    } else {
                        let code = r
                            .error
                            .map_or_else(|| "unknown".into(), |e| e.code.to_string());
                        *out.errors.entry(code).or_default() += 1;
                    }
                }
                after = id.id;
            }
        }
        if got > before {
            out.last = Some(Instant::now());
        }
    }
    Ok(out)
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn hash_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        let close = rest.iter().position(|&c| c == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let data = tagged.unwrap_or(b);
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % crate::redis_server::CLUSTER_SLOTS as u16
}

/// The median (the mean of the middle two for an even count); 0 when empty.
fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Lowest and highest; `[0, 0]` when empty.
fn range(v: &[f64]) -> [f64; 2] {
    if v.is_empty() {
        return [0.0; 2];
    }
    [
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ]
}

/// Each topology over its rounds, against the single node (topology 0). Ratios are taken
/// round by round, each run against the single node of its round (what ran just before it),
/// and their median is the summary: one round disturbed by other work on the machine moves
/// the range, not the median.
pub fn summarize(tops: &[Topology], runs: &[Run]) -> Vec<Summary> {
    let of = |t: usize| runs.iter().filter(move |r| r.topology == t);
    let single = |round: usize| runs.iter().find(|b| b.topology == 0 && b.round == round);
    tops.iter()
        .enumerate()
        .map(|(t, top)| {
            let (fps, cpu): (Vec<f64>, Vec<f64>) = of(t)
                .filter_map(|r| {
                    let b = single(r.round)?;
                    Some((
                        r.jobs_per_s / b.jobs_per_s.max(1e-9),
                        r.cpu_ms_per_job() / b.cpu_ms_per_job().max(1e-9),
                    ))
                })
                .unzip();
            Summary {
                topology: t,
                name: top.name.clone(),
                rounds: of(t).count(),
                jobs_per_s: median(of(t).map(|r| r.jobs_per_s)),
                worker_cpu_ms_per_job: median(of(t).map(|r| r.worker_cpu_ms_per_job)),
                redis_cpu_ms_per_job: median(of(t).map(|r| r.redis_cpu_ms_per_job)),
                cpu_ms_per_job: median(of(t).map(Run::cpu_ms_per_job)),
                latency_p50_ms: median(of(t).map(|r| r.latency_ms.p50)),
                latency_p99_ms: median(of(t).map(|r| r.latency_ms.p99)),
                jobs_per_s_vs_single: median(fps.iter().copied()),
                jobs_per_s_vs_single_range: range(&fps),
                cpu_per_job_vs_single: median(cpu.iter().copied()),
                cpu_per_job_vs_single_range: range(&cpu),
                masters_used: of(t).map(Run::masters_used).max().unwrap_or(0),
            }
        })
        .collect()
}

/// The table printed at the end: every run, then the summary against the single node.
pub fn table(r: &QueueReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let u = &r.setup;
    let _ = writeln!(
        s,
        "\n{} ({} cores), load {:.2} -> {:.2}; {}; model {} on {}; {} jobs of {} videos, \
         {}x{} JPEG ({} bytes), {}; prefix {}",
        m.cpu,
        m.cores,
        m.load_before[0],
        m.load_after[0],
        u.redis_server,
        u.model,
        u.model_device,
        u.jobs,
        u.videos,
        u.size[0],
        u.size[1],
        u.jpeg_bytes_mean,
        if u.raw { "raw image field" } else { "base64" },
        u.prefix
    );
    let _ = writeln!(
        s,
        "\n{:<30} {:>5} {:>9} {:>10} {:>10} {:>8} {:>8}  jobs per shard",
        "run", "round", "jobs/s", "CPU ms/job", "redis ms", "p50 ms", "p99 ms"
    );
    for run in &r.runs {
        let _ = writeln!(
            s,
            "{:<30} {:>5} {:>9.1} {:>10.3} {:>10.3} {:>8.1} {:>8.1}  {:?}{}",
            r.topologies[run.topology].name,
            run.round + 1,
            run.jobs_per_s,
            run.worker_cpu_ms_per_job,
            run.redis_cpu_ms_per_job,
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.jobs_per_shard,
            if run.ok < run.jobs_per_shard.iter().sum::<usize>() {
                format!("  errors {:?}", run.errors)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "\n{:<30} {:>9} {:>18} {:>11} {:>18} {:>7} {:>7} {:>8}",
        "topology",
        "jobs/s",
        "vs single (range)",
        "CPU ms/job",
        "CPU vs single",
        "p50 ms",
        "p99 ms",
        "masters"
    );
    for t in &r.summary {
        let [lo, hi] = t.jobs_per_s_vs_single_range;
        let _ = writeln!(
            s,
            "{:<30} {:>9.1} {:>18} {:>11.3} {:>18} {:>7.1} {:>7.1} {:>8}",
            t.name,
            t.jobs_per_s,
            format!("{:.2}x ({lo:.2}-{hi:.2})", t.jobs_per_s_vs_single),
            t.cpu_ms_per_job,
            format!(
                "{:.2}x ({:.2}-{:.2})",
                t.cpu_per_job_vs_single,
                t.cpu_per_job_vs_single_range[0],
                t.cpu_per_job_vs_single_range[1]
            ),
            t.latency_p50_ms,
            t.latency_p99_ms,
            if r.topologies[t.topology].is_cluster() {
                format!("{}/{}", t.masters_used, r.topologies[t.topology].masters)
            } else {
                "-".into()
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(topology: usize, round: usize, fps: f64, cpu: f64) -> Run {
        Run {
            topology,
            round,
            seconds: 1.0,
            jobs_per_s: fps,
            ok: 10,
            errors: BTreeMap::new(),
            latency_ms: Percentiles::of(vec![1.0, 2.0, 3.0]),
            worker_cpu_ms_per_job: cpu,
            redis_cpu_ms_per_job: 0.5,
            jobs_per_shard: vec![10],
            shard_masters: if topology > 0 {
                vec![7000, 7001]
            } else {
                vec![]
            },
            enqueue_seconds: 0.1,
            startup_seconds: 0.2,
        }
    }

    #[test]
    fn the_single_node_comes_first_then_each_shard_count() {
        let t = topologies(3, &[1, 3, 6], true);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0], Topology::single());
        assert!(!t[0].is_cluster());
        assert_eq!(t[1].name, "cluster 3 masters, 1 shard");
        assert_eq!(t[3].name, "cluster 3 masters, 6 shards");
        assert!(t[3].is_cluster() && t[3].shards == 6);
        assert!(!t[4].is_cluster() && t[4].ping_every_checkout && !t[0].ping_every_checkout);
        assert_eq!(topologies(3, &[1], false).len(), 2);
    }

    #[test]
    fn ratios_are_against_the_single_node_of_the_same_round() {
        let tops = topologies(3, &[3], false);
        let runs = [
            run(0, 0, 100.0, 1.5),
            run(1, 0, 90.0, 2.0),
            run(0, 1, 200.0, 1.5),
            run(1, 1, 190.0, 2.0),
        ];
        let s = summarize(&tops, &runs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].jobs_per_s_vs_single, 1.0);
        assert_eq!(s[0].jobs_per_s_vs_single_range, [1.0, 1.0]);
        assert_eq!(s[0].jobs_per_s, 150.0);
        assert_eq!(s[1].jobs_per_s, 140.0);
        assert!((s[1].jobs_per_s_vs_single - 0.925).abs() < 1e-12);
        assert_eq!(s[1].jobs_per_s_vs_single_range, [0.9, 0.95]);
        assert_eq!(s[1].cpu_ms_per_job, 2.5);
        assert_eq!(s[1].cpu_per_job_vs_single, 1.25);
        assert_eq!(s[1].cpu_per_job_vs_single_range, [1.25, 1.25]);
        assert_eq!((s[0].masters_used, s[1].masters_used), (0, 2));
        assert_eq!(s[1].rounds, 2);
    }

    #[test]
    fn one_disturbed_round_moves_the_range_not_the_median() {
        let tops = topologies(3, &[6], false);
        let runs = [
            run(0, 0, 100.0, 1.5),
            run(1, 0, 90.0, 1.5),
            run(0, 1, 100.0, 1.5),
            run(1, 1, 40.0, 3.5),
            run(0, 2, 100.0, 1.5),
            run(1, 2, 92.0, 1.5),
        ];
        let s = &summarize(&tops, &runs)[1];
        assert!((s.jobs_per_s_vs_single - 0.9).abs() < 1e-12);
        assert_eq!(s.jobs_per_s_vs_single_range, [0.4, 0.92]);
        assert_eq!(s.cpu_per_job_vs_single, 1.0);
        assert_eq!(s.cpu_per_job_vs_single_range, [1.0, 2.0]);
    }

    #[test]
    fn hash_slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(hash_slot("123456789"), 0x31C3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("{p:3}:jobs"), hash_slot("{p:3}:results"));
        // An empty tag is no tag: the whole key is hashed.
        assert_ne!(hash_slot("{}x"), hash_slot("x"));
    }

    #[test]
    fn jobs_are_frames_of_videos_in_turn() {
        let synth = [frames::SyntheticFrame {
            jpeg: vec![1, 2, 3],
            boxes: Vec::new(),
        }];
        let jobs = make_jobs(5, 2, &synth);
        let ids: Vec<&str> = jobs.iter().map(|f| f.job.job_id.as_ref()).collect();
        assert_eq!(
            ids,
            [
                "video-0:0",
                "video-1:0",
                "video-0:1",
                "video-1:1",
                "video-0:2"
            ]
        );
        assert_eq!(jobs[3].job.video_id.as_deref(), Some("video-1"));
        assert_eq!(jobs[4].job.frame_number, Some(2));
    }
}
