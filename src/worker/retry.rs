//! Retrying the worker's Redis steps: every error backs off and retries until the step's stop
//! token is cancelled (the job then stays pending: nothing was acknowledged). None ends a step
//! for good: what is a job's own fault (a `reply_to` that cannot take its result) comes back
//! from the scripts as an answer, not an error, and everything else (Redis away, out of
//! memory, an ACL denying a command, a dead-letter stream that cannot take a letter) is for an
//! operator to mend while the job waits. Each error is counted in `hmr2_redis_errors_total`
//! and logged with the server's own words, once per outage and again when its kind changes.
//! A gone consumer group (NOGROUP: Redis restarted without its data) is created again.
//! [`retry`] writes the readiness input [`Input::RedisPublish`].

use std::time::Duration;

use crate::error::QueueError;
use crate::health::{Health, Input};
use crate::metrics;

/// Exponential backoff for one Redis operation, which logs once per outage (and again when
/// the kind of error changes) and counts every failure.
pub(crate) struct Backoff {
    op: &'static str,
    pub(crate) failures: u32,
    /// The server code of the last failure logged.
    logged: Option<&'static str>,
}

impl Backoff {
    /// Backoff for operation `op` (the `op` label of `hmr2_redis_errors_total`).
    pub(crate) fn new(op: &'static str) -> Self {
        Backoff {
            op,
            failures: 0,
            logged: None,
        }
    }

    pub(crate) fn failed(&mut self, e: &QueueError) {
        metrics::redis_error(self.op, e);
        let code = e.server_code();
        if self.logged != Some(code) {
            tracing::warn!(op = self.op, code, error = %e, "{}; retrying with backoff", e.meaning());
            self.logged = Some(code);
        }
        self.failures += 1;
    }

    pub(crate) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                op = self.op,
                failures = self.failures,
                "redis answers again"
            );
        }
        self.failures = 0;
        self.logged = None;
    }

    pub(crate) fn delay(&self) -> Duration {
        let ms = 50u64 << self.failures.min(7);
        Duration::from_millis(ms.min(5_000))
    }
}

/// Runs a Redis step of operation `op` until it succeeds, backing off between failures.
/// `None` when `stop` is cancelled first (the job then stays pending: nothing was
/// acknowledged). On NOGROUP, `regroup` runs before the next attempt.
pub(crate) async fn retry<T, F, Fut, G, GFut>(
    health: &Health,
    stop: &tokio_util::sync::CancellationToken,
    op: &'static str,
    mut step: F,
    regroup: G,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
    G: Fn() -> GFut,
    GFut: std::future::Future<Output = Result<(), QueueError>>,
{
    let mut backoff = Backoff::new(op);
    loop {
        match step().await {
            Ok(v) => {
                backoff.recovered();
                if !health.is_up(Input::RedisPublish) {
                    health.set(Input::RedisPublish, Ok(()));
                }
                return Some(v);
            }
            Err(e) => {
                backoff.failed(&e);
                health.set(Input::RedisPublish, Err(format!("{}: {e}", e.meaning())));
                if e.server_code() == "NOGROUP" {
                    if let Err(e) = regroup().await {
                        backoff.failed(&e);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    }
}
