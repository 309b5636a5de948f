//! Fetching: new entries (XREADGROUP) and orphaned ones (XAUTOCLAIM), bounded by in-flight
//! permits, with leases that keep this worker's own entries from looking orphaned.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, histogram};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::delivery::{Delivery, Leases};
use super::publish::too_many_deliveries;
use super::retry::Backoff;
use super::Ctx;
use crate::metrics::{self as m, outcome};

fn now_ms() -> u64 {
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
                    entries.extend(claimed);
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
            let lease = leases.take(&entry.id);
            let delivery = Delivery::new(entry, queue_wait_ms, permit, lease);
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
