//! Fetching: new entries (XREADGROUP) and orphaned ones (XAUTOCLAIM), bounded by in-flight
//! permits, with leases that keep this worker's own entries from looking orphaned.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, histogram};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::publish::too_many_deliveries;
use super::Ctx;
use crate::error::QueueError;
use crate::metrics::{self as m, outcome};
use crate::queue::Entry;

/// A fetched entry, the permit that bounds the pipeline, and its lease.
pub(super) struct Delivery {
    pub(super) entry: Entry,
    pub(super) fetched: Instant,
    pub(super) queue_wait_ms: f64,
    _permit: OwnedSemaphorePermit,
    _lease: Lease,
}

/// The ids of the entries this worker holds; their idle time is reset periodically so other
/// workers do not reclaim jobs that are merely queued here.
#[derive(Clone, Default)]
pub(super) struct Leases(Arc<Mutex<HashSet<String>>>);

/// Membership of one entry in [`Leases`], ended when the delivery is dropped (published,
/// dead-lettered, failed or abandoned).
pub(super) struct Lease {
    leases: Leases,
    id: String,
}

impl Leases {
    fn take(&self, id: &str) -> Lease {
        self.0.lock().expect("lease set").insert(id.to_string());
        Lease {
            leases: self.clone(),
            id: id.to_string(),
        }
    }

    fn ids(&self) -> Vec<String> {
        self.0.lock().expect("lease set").iter().cloned().collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.0.lock().expect("lease set").remove(&self.id);
    }
}

/// Exponential backoff that logs once per outage.
#[derive(Default)]
pub(super) struct Backoff {
    pub(super) failures: u32,
}

impl Backoff {
    pub(super) fn failed(&mut self, e: &QueueError) {
        if self.failures == 0 {
            tracing::warn!(error = %e, "redis unavailable; retrying with backoff");
        }
        self.failures += 1;
    }

    pub(super) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "redis reachable again");
        }
        self.failures = 0;
    }

    pub(super) fn delay(&self) -> Duration {
        let ms = 50u64 << self.failures.min(7);
        Duration::from_millis(ms.min(5_000))
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads new entries and reclaims orphaned ones, as many as there are free permits.
pub(super) async fn fetch(
    ctx: Arc<Ctx>,
    permits: Arc<Semaphore>,
    leases: Leases,
    out: mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
) {
    let q = &ctx.config.queue;
    let mut conn = None;
    let mut cursor = "0-0".to_string();
    let claim_every = Duration::from_millis(q.claim_interval_ms);
    let mut next_claim = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = shutdown.cancelled() => return,
        };
        let mut held = vec![first];
        while held.len() < q.max_batch {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let mut entries = Vec::new();
        let mut failed = None;
        if Instant::now() >= next_claim {
            match ctx.queue.claim_stale(held.len(), &mut cursor).await {
                Ok(claimed) => {
                    if cursor == "0-0" {
                        next_claim = Instant::now() + claim_every;
                    }
                    entries.extend(claimed.entries);
                }
                Err(e) => failed = Some(e),
            }
        }
        if failed.is_none() && entries.is_empty() {
            if conn.is_none() {
                match ctx.queue.blocking_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(c) = conn.as_mut() {
                tokio::select! {
                    r = ctx.queue.read_new(c, held.len()) => match r {
                        Ok(new) => entries = new,
                        Err(e) => { conn = None; failed = Some(e); }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        if let Some(e) = failed {
            backoff.failed(&e);
            ctx.health.set(&ctx.health.redis_ok, false);
            drop(held);
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay()) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        if backoff.failures > 0 || !ctx.health.redis_ok.load(Ordering::Relaxed) {
            backoff.recovered();
            ctx.health.set(&ctx.health.redis_ok, true);
        }
        let now = now_ms();
        if !entries.is_empty() {
            tracing::debug!(entries = entries.len(), "fetched");
        }
        for entry in entries {
            let permit = held.pop().expect("never more entries than permits");
            let queue_wait_ms = entry
                .enqueued_ms()
                .map_or(0.0, |t| now.saturating_sub(t) as f64);
            if !entry.reclaimed {
                histogram!(m::QUEUE_WAIT).record(queue_wait_ms / 1e3);
            }
            let delivery = Delivery {
                _lease: leases.take(&entry.id),
                entry,
                fetched: Instant::now(),
                queue_wait_ms,
                _permit: permit,
            };
            if delivery.entry.reclaimed {
                counter!(m::JOBS, "outcome" => outcome::RECLAIMED).increment(1);
                if delivery.entry.deliveries > q.max_deliveries {
                    tokio::spawn(too_many_deliveries(ctx.clone(), delivery));
                    continue;
                }
            }
            if out.send(delivery).await.is_err() {
                return;
            }
        }
    }
}

/// Keeps the entries this worker holds from looking orphaned: resets their idle time three
/// times per `claim_idle_ms`.
pub(super) async fn renew_leases(ctx: Arc<Ctx>, leases: Leases, stop: CancellationToken) {
    let every = Duration::from_millis((ctx.config.queue.claim_idle_ms / 3).max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = ctx.queue.extend_lease(&leases.ids()).await {
            tracing::debug!(error = %e, "could not renew leases");
        }
    }
}
