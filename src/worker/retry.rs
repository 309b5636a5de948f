//! Retrying the publishers' Redis steps: transient errors back off and retry until the grace
//! period is over; permanent ones (see [`QueueError::is_permanent`]) end the step at once.
//! Each attempt writes the readiness input [`Input::RedisPublish`].

use std::time::Duration;

use crate::error::QueueError;
use crate::health::{Health, Input};

/// Exponential backoff that logs once per outage.
#[derive(Default)]
pub(crate) struct Backoff {
    pub(crate) failures: u32,
}

impl Backoff {
    pub(crate) fn failed(&mut self, e: &QueueError) {
        if self.failures == 0 {
            tracing::warn!(error = %e, code = e.code(), "redis unavailable; retrying with backoff");
        }
        self.failures += 1;
    }

    pub(crate) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "redis reachable again");
        }
        self.failures = 0;
    }

    pub(crate) fn delay(&self) -> Duration {
        let ms = 50u64 << self.failures.min(7);
        Duration::from_millis(ms.min(5_000))
    }
}

/// Why a Redis step was given up.
#[derive(Debug)]
pub(crate) enum GaveUp {
    /// Redis refused the step for good (permissions, key type, script error, ...).
    Permanent(QueueError),
    /// The grace period ended while Redis was away.
    Stopped,
}

/// Runs a Redis step until it succeeds, backing off while Redis is away. Gives up at once on a
/// permanent error, and when `stop` is cancelled (the job then stays pending: nothing was
/// acknowledged).
pub(crate) async fn retry<T, F, Fut>(
    health: &Health,
    stop: &tokio_util::sync::CancellationToken,
    mut step: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match step().await {
            Ok(v) => {
                if backoff.failures > 0 {
                    backoff.recovered();
                }
                if !health.is_up(Input::RedisPublish) {
                    health.set(Input::RedisPublish, Ok(()));
                }
                return Ok(v);
            }
            Err(e) if e.is_permanent() => return Err(GaveUp::Permanent(e)),
            Err(e) => {
                backoff.failed(&e);
                health.set(Input::RedisPublish, Err(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = stop.cancelled() => return Err(GaveUp::Stopped),
                }
            }
        }
    }
}
