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

/// Reads new entries and reclaims orphaned ones, as many as there are free permits (`inflight`
/// in all). Stops when `shutdown` is cancelled or the worker is broken; a blocking read under
/// way is not cut off (its entries would be delivered to this consumer and never seen): it
/// ends within `block_ms`, and what it brought is released to other workers at once.
///
/// An entry delivered twice or more (reclaimed from a worker that died holding it) may be what
/// killed that worker: it runs alone, once everything else in flight here is done and with
/// every permit held, so a job that crashes the process costs no neighbour a delivery.
pub(super) async fn fetch(
    ctx: Arc<Ctx>,
    permits: Arc<Semaphore>,
    inflight: usize,
    leases: Leases,
    out: mpsc::Sender<Delivery>,
    shutdown: CancellationToken,
) {
    let q = &ctx.config.queue;
    let broken = ctx.health.broken_token();
    let stopping = || shutdown.is_cancelled() || broken.is_cancelled();
    let mut conn = None;
    let mut cursor = "0-0".to_string();
    let claim_every = Duration::from_millis(q.claim_interval_ms);
    let mut next_claim = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = shutdown.cancelled() => return,
            _ = broken.cancelled() => return,
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
        if failed.is_none() && entries.is_empty() && !stopping() {
            if conn.is_none() {
                match ctx.queue.blocking_connection().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(c) = conn.as_mut() {
                // Not raced against shutdown: see above.
                match ctx.queue.read_new(c, held.len()).await {
                    Ok(new) => entries = new,
                    Err(e) => {
                        conn = None;
                        failed = Some(e);
                    }
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
                _ = broken.cancelled() => return,
            }
        }
        if backoff.failures > 0 || !ctx.health.redis_ok.load(Ordering::Relaxed) {
            backoff.recovered();
            ctx.health.set(&ctx.health.redis_ok, true);
        }
        if stopping() {
            release(&ctx, entries.iter().map(|e| e.id.clone()).collect()).await;
            return;
        }
        let now = now_ms();
        if !entries.is_empty() {
            tracing::debug!(entries = entries.len(), "fetched");
        }
        let mut suspects = Vec::new();
        for entry in entries {
            let queue_wait_ms = entry
                .enqueued_ms()
                .map_or(0.0, |t| now.saturating_sub(t) as f64);
            if !entry.reclaimed {
                histogram!(m::QUEUE_WAIT).record(queue_wait_ms / 1e3);
            } else {
                counter!(m::JOBS, "outcome" => outcome::RECLAIMED).increment(1);
            }
            let permit = held.pop().expect("never more entries than permits");
            let lease = leases.take(&entry.id);
            if entry.reclaimed && entry.deliveries > q.max_deliveries {
                let delivery = Delivery::new(entry, queue_wait_ms, permit, lease);
                tokio::spawn(too_many_deliveries(ctx.clone(), delivery));
                continue;
            }
            if entry.reclaimed && entry.deliveries >= 2 {
                drop(permit);
                suspects.push((entry, queue_wait_ms, lease));
                continue;
            }
            if out
                .send(Delivery::new(entry, queue_wait_ms, permit, lease))
                .await
                .is_err()
            {
                return;
            }
        }
        drop(held);
        let mut suspects = suspects.into_iter();
        while let Some((entry, queue_wait_ms, lease)) = suspects.next() {
            tracing::info!(
                entry = %entry.id,
                deliveries = entry.deliveries,
                "delivered before: running it alone once the pipeline is empty"
            );
            let all = tokio::select! {
                p = permits.clone().acquire_many_owned(inflight as u32) => {
                    Some(p.expect("semaphore never closes"))
                }
                _ = shutdown.cancelled() => None,
                _ = broken.cancelled() => None,
            };
            let Some(all) = all else {
                let mut ids = vec![entry.id.clone()];
                ids.extend(suspects.map(|(e, _, _)| e.id));
                drop(lease);
                release(&ctx, ids).await;
                return;
            };
            let delivery = Delivery::new(entry, queue_wait_ms, all, lease);
            if out.send(delivery).await.is_err() {
                return;
            }
        }
    }
}

/// Hands entries this worker will not run to the other workers at once (best effort: if Redis
/// is away they are reclaimed after `claim_idle_ms` as usual).
pub(super) async fn release(ctx: &Ctx, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    match ctx.queue.release(&ids).await {
        Ok(n) => tracing::info!(entries = n, "released entries read while stopping"),
        Err(e) => {
            tracing::warn!(error = %e, entries = ids.len(), "could not release entries; they are reclaimed after claim_idle_ms")
        }
    }
}

/// Keeps the entries this worker holds from looking orphaned: resets their idle time three
/// times per `claim_idle_ms`. Stops at once when the worker is broken, so live workers reclaim
/// what it holds. An entry another worker has reclaimed meanwhile is left to it.
pub(super) async fn renew_leases(ctx: Arc<Ctx>, leases: Leases, stop: CancellationToken) {
    let every = Duration::from_millis((ctx.config.queue.claim_idle_ms / 3).max(10));
    let broken = ctx.health.broken_token();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
            _ = broken.cancelled() => return,
        }
        if !ctx.health.alive() {
            // A hung device: let live workers take what this worker holds.
            continue;
        }
        match ctx.queue.extend_lease(&leases.ids()).await {
            Ok(lost) if !lost.is_empty() => tracing::info!(
                entries = lost.len(),
                "entries held here were reclaimed by another worker (or finished); their leases are not renewed"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not renew leases"),
        }
    }
}
