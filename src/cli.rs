//! What both command lines (`hmr2-worker` and the `hmr2` tool) share: the global flags that
//! override the configuration, and the OpenMP set-up done before anything loads libtorch.

use std::path::PathBuf;

use clap::Args;

use crate::config::Overrides;

/// Settings that override the configuration file and the environment.
#[derive(Args, Debug, Default)]
pub struct GlobalArgs {
    /// Configuration file (TOML), layered over the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis URL (redis:// or rediss://).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Key prefix of the streams.
    #[arg(long, global = true)]
    pub prefix: Option<String>,
    /// TorchScript model file.
    #[arg(long, global = true, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// Largest batch per forward pass.
    #[arg(long, global = true)]
    pub max_batch: Option<usize>,
    /// Address of the metrics/health listener.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    pub log_format: Option<String>,
}

impl GlobalArgs {
    /// The flags given, as configuration overrides (the last layer).
    pub fn overrides(&self) -> Overrides {
        let mut flags = Overrides::default();
        flags
            .set("redis.url", self.redis_url.clone())
            .set("queue.prefix", self.prefix.clone())
            .set("model.path", self.model.clone())
            .set("model.device", self.device.clone())
            .set("queue.max_batch", self.max_batch)
            .set("http.listen", self.listen.clone())
            .set("log.format", self.log_format.clone());
        flags
    }
}

/// libgomp reads `OMP_WAIT_POLICY` once, when it is loaded: by default its threads spin after
/// every parallel region, burning the cores the decoders need. When the variable is unset, set
/// it and re-execute this binary (`name` is for the error line) so libtorch's CPU threads sleep
/// when idle.
pub fn passive_openmp(name: &str) {
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
    eprintln!("{name}: could not re-execute with OMP_WAIT_POLICY=PASSIVE: {err}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_overrides_of_their_settings() {
        let g = GlobalArgs {
            prefix: Some("p".into()),
            max_batch: Some(4),
            ..Default::default()
        };
        let c = crate::config::Config::load(None, &g.overrides(), false).unwrap();
        assert_eq!(c.queue.prefix, "p");
        assert_eq!(c.queue.max_batch, 4);
    }
}
