//! Command line of `hmr2-worker`: parses flags and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hmr2_worker::cli::{passive_openmp, GlobalArgs};
use hmr2_worker::config::Config;
use hmr2_worker::{check, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hmr2-worker",
    version,
    about = "HMR2.0 human-mesh workers on Redis Streams",
    after_help = "Enqueueing, the demo and the benchmark are in the `hmr2` tool (crate hmr2-tools)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the worker until SIGTERM/SIGINT: in-flight jobs finish within the grace period.
    Run,
    /// Prints versions, the chosen device, CUDA/cuDNN availability and memory figures; exits
    /// non-zero when the configured device or model is unusable.
    Check,
    /// Prints the effective configuration (password redacted).
    Config,
    /// Runs only the tracking stage (DESIGN §13) until SIGTERM/SIGINT: tracks complete videos
    /// and expires stale ones on every shard. No GPU and no model needed (the SMPL layer
    /// `<model>.smpl.pt` only for videos that ask for vertices). For CPU-only pods; set
    /// `track.in_worker = false` on the GPU workers then.
    Track,
}

fn main() -> ExitCode {
    passive_openmp("hmr2-worker");
    let cli = Cli::parse();
    let g = &cli.global;
    let flags = g.overrides();
    let config = match Config::load(g.config.as_deref(), &flags, true) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hmr2-worker: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let result = match cli.command {
        Command::Check => check::run(&config),
        Command::Run => {
            let result = runtime().and_then(|rt| rt.block_on(run_worker(config)));
            leave(result)
        }
        Command::Track => {
            let result = runtime().and_then(|rt| rt.block_on(run_tracker(config)));
            leave(result)
        }
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hmr2-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ends the process after `run`, through `_exit` as the second signal does. When the grace
/// period ran out, the inference thread may still be inside libtorch (a forward pass that
/// outlasted it); a normal exit would run libtorch's static destructors under its feet and
/// end in SIGSEGV. What the worker held was released before `run` returned, and the log goes
/// to stderr unbuffered, so nothing is lost by skipping the destructors.
fn leave(result: anyhow::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hmr2-worker: {e:#}");
            1
        }
    };
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Runs the worker; SIGTERM or SIGINT starts a graceful shutdown, a second one exits at once.
async fn run_worker(config: Config) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    tokio::spawn(hmr2_worker::signal::stop_on_signal(token.clone(), || {}));
    hmr2_worker::run(config, token).await?;
    Ok(())
}

/// Runs the tracking stage alone; signals as for the worker.
async fn run_tracker(config: Config) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    tokio::spawn(hmr2_worker::signal::stop_on_signal(token.clone(), || {}));
    hmr2_worker::video::run_standalone(config, token).await?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
