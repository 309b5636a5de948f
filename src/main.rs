//! Command line of `hmr2-worker`: parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hmr2_worker::config::{Config, Overrides};
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

/// Settings that override the configuration file and the environment.
#[derive(Args)]
struct GlobalArgs {
    /// Configuration file (TOML), layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL (redis:// or rediss://).
    #[arg(long, global = true, value_name = "URL")]
    redis_url: Option<String>,
    /// Key prefix of the streams.
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// TorchScript model file.
    #[arg(long, global = true, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    device: Option<String>,
    /// Largest batch per forward pass.
    #[arg(long, global = true)]
    max_batch: Option<usize>,
    /// Address of the metrics/health listener.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
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
}

fn main() -> ExitCode {
    passive_openmp();
    let cli = Cli::parse();
    let g = &cli.global;
    let mut flags = Overrides::default();
    flags
        .set("redis.url", g.redis_url.clone())
        .set("queue.prefix", g.prefix.clone())
        .set("model.path", g.model.clone())
        .set("model.device", g.device.clone())
        .set("queue.max_batch", g.max_batch)
        .set("http.listen", g.listen.clone())
        .set("log.format", g.log_format.clone());
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
        Command::Run => runtime().and_then(|rt| rt.block_on(run_worker(config))),
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

/// Runs the worker; SIGTERM or SIGINT starts a graceful shutdown, a second one exits at once.
async fn run_worker(config: Config) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    tokio::spawn(hmr2_worker::signal::stop_on_signal(token.clone(), || {}));
    hmr2_worker::run(config, token).await?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// libgomp reads `OMP_WAIT_POLICY` once, when it is loaded: by default its threads spin after
/// every parallel region, burning the cores the decoders need. When the variable is unset, set
/// it and re-execute this binary so libtorch's CPU threads sleep when idle.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // exec only returns on failure: carry on with the default policy.
    eprintln!("hmr2-worker: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
}
