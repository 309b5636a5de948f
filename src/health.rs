//! Liveness and readiness of one worker: flags the stages set, read by `/healthz`, `/readyz` and
//! the `hmr2_worker_ready` gauge.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::WORKER_READY;

/// Liveness and readiness, shared by the pipeline and the listener.
#[derive(Debug, Default)]
pub struct Health {
    /// The inference thread is running (false once it exits or panics).
    pub inference_alive: AtomicBool,
    /// Warm-up forward pass done.
    pub warm: AtomicBool,
    /// The last Redis command succeeded.
    pub redis_ok: AtomicBool,
    /// Too many consecutive failed batches.
    pub failing: AtomicBool,
}

impl Health {
    /// Alive: what `/healthz` reports.
    pub fn alive(&self) -> bool {
        self.inference_alive.load(Ordering::Relaxed)
    }

    /// Ready: what `/readyz` reports and `hmr2_worker_ready` shows.
    pub fn ready(&self) -> bool {
        self.alive()
            && self.warm.load(Ordering::Relaxed)
            && self.redis_ok.load(Ordering::Relaxed)
            && !self.failing.load(Ordering::Relaxed)
    }

    /// Sets one flag and refreshes the readiness gauge.
    pub fn set(&self, flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
        metrics::gauge!(WORKER_READY).set(if self.ready() { 1.0 } else { 0.0 });
    }

    /// Every flag as one JSON line, so an operator sees why a probe fails.
    pub(crate) fn report(&self) -> String {
        format!(
            "{{\"ready\":{},\"inference_alive\":{},\"warm\":{},\"redis_ok\":{},\"failing\":{}}}\n",
            self.ready(),
            self.alive(),
            self.warm.load(Ordering::Relaxed),
            self.redis_ok.load(Ordering::Relaxed),
            self.failing.load(Ordering::Relaxed)
        )
    }
}
