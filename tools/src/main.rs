//! Command line of `hmr2`, the tooling around the worker: `enqueue`, `demo`, `bench`, `bench-cluster`, `synth`.
//! Parses flags, layers the worker's configuration the same way `hmr2-worker` does, and calls
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hmr2_tools::{bench, demo, enqueue, synth};
use hmr2_worker::cli::{passive_openmp, GlobalArgs};
use hmr2_worker::config::Config;
use hmr2_worker::telemetry;

#[derive(Parser)]
#[command(
    name = "hmr2",
    version,
    about = "Tooling around hmr2-worker: enqueue jobs, run the demo, benchmark the worker",
    after_help = "The worker itself (run, check, config) is the `hmr2-worker` binary."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enqueues image files (or every .jpg/.jpeg/.png in folders) as jobs; prints the job ids.
    Enqueue(EnqueueArgs),
    /// The whole system in one command: a throwaway redis-server, the worker in-process (tiny
    /// model, best device) and a synthetic clip sent as one tracked video: a progress bar, a
    /// summary, the video's tracks, PNG overlays coloured by track and a trajectory plot in
    /// --out. With images given, each image runs as a frame of its own, with keypoint overlays.
    Demo(DemoArgs),
    /// End-to-end benchmark through a real Redis (throwaway unless --redis-url), with the raw
    /// decode rate and the model-only rate measured beside it; prints a table, writes JSON.
    Bench(BenchArgs),
    /// The queue on one throwaway redis-server against a throwaway Redis Cluster (3 masters, no
    /// replicas) with 1, 3 and 6 shards, side by side in one run, one worker in-process: jobs/s,
    /// CPU per job (worker and Redis) and latency, with ratios against the single node; prints a
    /// table, writes JSON. Meant for a null model (benches/baseline/null_model.py).
    BenchCluster(BenchClusterArgs),
    /// Writes random synthetic frames (0-3 walking figures of any size, varied backgrounds) as
    /// DIR/NNNNN.jpg and their boxes as DIR/boxes.json, to train and test the person detector.
    Synth(SynthArgs),
}

#[derive(Args)]
struct SynthArgs {
    /// Frames to write.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Seed of the set: the same seed writes the same frames; sets of different seeds share none.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = bench::parse_size)]
    size: (u32, u32),
    /// Several frame sizes, taken in turn (overrides --size), e.g. 1280x720,720x1280,640x480.
    #[arg(long, value_delimiter = ',', value_parser = bench::parse_size)]
    sizes: Vec<(u32, u32)>,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Frames of the synthetic clip to run: the first N of its 48 (the clip has a fixed length,
    /// 4 s at 12 fps; default all 48). Ignored when images are given: each image runs once.
    #[arg(long, value_name = "N")]
    frames: Option<usize>,
    /// Size of the synthetic clip's frames, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = bench::parse_size)]
    size: (u32, u32),
    /// Folder for the PNG overlays (and the clip's trajectory.png).
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    out: PathBuf,
    /// How many frames get an overlay: spread over the clip, one with an interpolated person
    /// among them (default 6), or the first images (default 4).
    #[arg(long, value_name = "N")]
    overlays: Option<usize>,
    /// Image files or folders of .jpg/.jpeg/.png (default: the synthetic clip, as a video).
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Jobs to run end to end.
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = bench::parse_size)]
    size: (u32, u32),
    /// Walking figures per frame whose boxes go with each job (0-3; 0 = no boxes, whole frame).
    #[arg(long, default_value_t = 0)]
    people: usize,
    /// Distinct frames drawn, encoded once and cycled through.
    #[arg(long, default_value_t = 8)]
    distinct: usize,
    /// Send the JPEG bytes in the `image` field instead of base64 in the job JSON.
    #[arg(long)]
    raw: bool,
    /// Where the JSON report goes.
    #[arg(long, value_name = "FILE", default_value = "bench-out/bench.json")]
    json: PathBuf,
    /// More batch sizes for the model-only measurement, e.g. 1,8,32,64.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Also write the distinct frames (JPEG) and their boxes here, for the Python baseline.
    #[arg(long, value_name = "DIR")]
    save_frames: Option<PathBuf>,
    /// Draw --people figures per frame but send no boxes: the person detector finds them
    /// (`detector.path`, default models/detector-tiny.pt); stage shares then include `detect`.
    #[arg(long)]
    detect: bool,
    /// Make the jobs frames of tracked videos of N frames each (DESIGN §13): every publish
    /// also records its frame, and videos are tracked in the worker as they complete.
    #[arg(long, value_name = "N")]
    video_frames: Option<usize>,
}

#[derive(Args)]
struct BenchClusterArgs {
    /// Jobs per run.
    #[arg(long, default_value_t = 6000)]
    jobs: usize,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "160x120", value_parser = bench::parse_size)]
    size: (u32, u32),
    /// Videos the jobs are frames of (a job's shard is its video's).
    #[arg(long, default_value_t = 64)]
    videos: usize,
    /// Shard counts to run on the cluster, one run each (the single node runs with one).
    #[arg(long, value_delimiter = ',', default_value = "1,3,6")]
    shards: Vec<usize>,
    /// Masters of the cluster (no replicas).
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// How many times the whole series runs, interleaved (the spread shows the noise).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Distinct frames drawn, encoded once and cycled through.
    #[arg(long, default_value_t = 8)]
    distinct: usize,
    /// Send the JPEG bytes in the `image` field instead of base64 in the job JSON.
    #[arg(long)]
    raw: bool,
    /// Leave out the control row: the single node with a PING at every pool checkout
    /// (`redis.pool_idle_check_ms = 0`).
    #[arg(long)]
    no_ping_control: bool,
    /// Where the JSON report goes.
    #[arg(long, value_name = "FILE", default_value = "bench-out/cluster.json")]
    json: PathBuf,
}

#[derive(Args)]
struct EnqueueArgs {
    /// Image files or folders.
    #[arg(required_unless_present = "synthetic")]
    paths: Vec<PathBuf>,
    /// Instead of files, enqueue N synthetic frames (textured JPEGs with a figure and its box),
    /// for load tests.
    #[arg(long, value_name = "N", conflicts_with = "paths")]
    synthetic: Option<usize>,
    /// Size of synthetic frames.
    #[arg(long, default_value = "1280x720", value_parser = bench::parse_size)]
    size: (u32, u32),
    /// Video id: jobs become `<video_id>:<frame_number>`, numbered in file order.
    #[arg(long)]
    video_id: Option<String>,
    /// With --video-id: the files are the frames of one tracked video at F frames per second,
    /// in name order (DESIGN §13): the workers collect them, track the people and write the
    /// video's output to `<results stream>:video:<video_id>` once the last frame is answered.
    #[arg(long, value_name = "F", requires = "video_id")]
    fps: Option<f64>,
    /// JSON file with boxes: `[[x1,y1,x2,y2], ...]` for every frame, or
    /// `{"<file name>": [[...]], ...}` per frame.
    #[arg(long, value_name = "FILE")]
    boxes: Option<PathBuf>,
    /// Send the image bytes in the `image` field instead of base64 in the JSON.
    #[arg(long)]
    raw: bool,
    /// Stream that receives the results (default `{prefix}:results`; must start with it).
    #[arg(long)]
    reply_to: Option<String>,
    /// Ask for the 6890 mesh vertices too.
    #[arg(long)]
    vertices: bool,
}

fn main() -> ExitCode {
    passive_openmp("hmr2");
    let cli = Cli::parse();
    let g = &cli.global;
    let mut flags = g.overrides();
    if matches!(
        cli.command,
        Command::Demo(_) | Command::Bench(_) | Command::BenchCluster(_)
    ) && std::env::var_os("HMR2_LOG__LEVEL").is_none()
    {
        // The worker's start-up lines would break the progress output; warnings still show,
        // except the worker's about its detector: these runs pick theirs on purpose (the demo
        // says so itself when the tiny detector meets a user's own images).
        flags.set(
            "log.level",
            Some("warn,hmr2_worker::worker::start=error,hmr2_worker::worker::decode=error"),
        );
    }
    let config = match Config::load(g.config.as_deref(), &flags, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hmr2: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let result = match cli.command {
        Command::Enqueue(a) => runtime().and_then(|rt| {
            rt.block_on(enqueue::run(
                &config,
                enqueue::EnqueueOptions {
                    paths: a.paths,
                    synthetic: a.synthetic,
                    size: a.size,
                    video_id: a.video_id,
                    fps: a.fps,
                    boxes: a.boxes,
                    raw: a.raw,
                    reply_to: a.reply_to,
                    vertices: a.vertices,
                },
            ))
        }),
        Command::Demo(a) => runtime().and_then(|rt| {
            rt.block_on(demo::run(
                config,
                demo::DemoOptions {
                    frames: a.frames,
                    size: a.size,
                    out: a.out,
                    overlays: a.overlays,
                    images: a.images,
                    redis_url: g.redis_url.clone(),
                },
            ))
        }),
        Command::Bench(a) => runtime().and_then(|rt| {
            rt.block_on(bench::run(
                config,
                bench::BenchOptions {
                    frames: a.frames,
                    size: a.size,
                    people: a.people,
                    distinct: a.distinct,
                    raw: a.raw,
                    redis_url: g.redis_url.clone(),
                    json: a.json,
                    sweep: a.sweep,
                    save_frames: a.save_frames,
                    detect: a.detect,
                    video_frames: a.video_frames,
                },
            ))
            .map(|_| ())
        }),
        Command::BenchCluster(a) => {
            if g.redis_url.is_some() {
                eprintln!(
                    "hmr2: bench-cluster starts its own redis-server and cluster; drop --redis-url"
                );
                return ExitCode::from(2);
            }
            runtime().and_then(|rt| {
                rt.block_on(bench::queue::run(
                    config,
                    bench::queue::QueueBenchOptions {
                        jobs: a.jobs,
                        size: a.size,
                        distinct: a.distinct,
                        videos: a.videos,
                        shards: a.shards,
                        masters: a.masters,
                        rounds: a.rounds,
                        raw: a.raw,
                        ping_control: !a.no_ping_control,
                        json: a.json,
                    },
                ))
                .map(|_| ())
            })
        }
        Command::Synth(a) => synth::run(&synth::SynthOptions {
            count: a.count,
            seed: a.seed,
            sizes: if a.sizes.is_empty() {
                vec![a.size]
            } else {
                a.sizes
            },
            out: a.out,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmr2: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
