//! Logging set-up: text or JSON, `RUST_LOG`-style filter.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber once; later calls are ignored (tests call it often).
/// `RUST_LOG`, when set, wins over `log.level`.
pub fn init(log: &LogConfig) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&log.level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match log.format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
            LogFormat::Text => builder.compact().try_init(),
        };
    });
}
