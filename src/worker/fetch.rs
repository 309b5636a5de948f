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
/// A reclaimed entry was delivered before, to a worker that died holding it: it may be what
/// killed that worker. So orphans are claimed one at a time, only once everything else in
/// flight here is done, and each runs alone with every permit held: a job that crashes the
/// process costs no neighbour a delivery (only the neighbours of its first, fresh delivery).
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
    let claim_every = Duration::from_millis(q.claim_interval_ms);
    let mut next_claim = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        if Instant::now() >= next_claim {
            let orphan = match ctx.queue.find_orphan().await {
                Ok(o) => o,
                Err(e) => {
                    if !wait_out(&ctx, &mut backoff, e, &shutdown, &broken).await {
                        return;
                    }
                    continue;
                }
            };
            recovered(&ctx, &mut backoff);
            let Some((id, delivered)) = orphan else {
                next_claim = Instant::now() + claim_every;
                continue;
            };
            // Wait for the pipeline to empty, then claim the orphan and run it alone.
            let all = tokio::select! {
                p = permits.clone().acquire_many_owned(inflight as u32) => {
                    p.expect("semaphore never closes")
                }
                _ = shutdown.cancelled() => return,
                _ = broken.cancelled() => return,
            };
            let entry = match ctx.queue.claim_orphan(&id, delivered).await {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    drop(all);
                    if !wait_out(&ctx, &mut backoff, e, &shutdown, &broken).await {
                        return;
                    }
                    continue;
                }
            };
            if stopping() {
                release(&ctx, vec![entry.id]).await;
                return;
            }
            let lease = leases.take(&entry.id);
            let wait = queue_wait_ms(&entry);
            counter!(m::JOBS, "outcome" => outcome::RECLAIMED).increment(1);
            let delivery = Delivery::new(entry, wait, all, lease);
            if delivery.entry.deliveries > q.max_deliveries {
                tokio::spawn(too_many_deliveries(ctx.clone(), delivery));
                continue;
            }
            tracing::info!(
                entry = %delivery.entry.id,
                deliveries = delivery.entry.deliveries,
                "reclaimed an orphaned entry; running it alone"
            );
            if out.send(delivery).await.is_err() {
                return;
            }
            continue;
        }
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = shutdown.cancelled() => return,
            _ = broken.cancelled() => return,
            _ = tokio::time::sleep_until(next_claim.into()) => continue,
        };
        let mut held = vec![first];
        while held.len() < q.max_batch {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match ctx.queue.blocking_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    drop(held);
                    if !wait_out(&ctx, &mut backoff, e, &shutdown, &broken).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        // Not raced against shutdown: see above.
        let entries = match ctx.queue.read_new(c, held.len()).await {
            Ok(new) => new,
            Err(e) => {
                conn = None;
                drop(held);
                if !wait_out(&ctx, &mut backoff, e, &shutdown, &broken).await {
                    return;
                }
                continue;
            }
        };
        recovered(&ctx, &mut backoff);
        if stopping() {
            release(&ctx, entries.iter().map(|e| e.id.clone()).collect()).await;
            return;
        }
        if !entries.is_empty() {
            tracing::debug!(entries = entries.len(), "fetched");
        }
        for entry in entries {
            let wait = queue_wait_ms(&entry);
            histogram!(m::QUEUE_WAIT).record(wait / 1e3);
            let permit = held.pop().expect("never more entries than permits");
            let lease = leases.take(&entry.id);
            if out
                .send(Delivery::new(entry, wait, permit, lease))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Milliseconds since the entry was added (from its id).
fn queue_wait_ms(entry: &crate::queue::Entry) -> f64 {
    entry
        .enqueued_ms()
        .map_or(0.0, |t| now_ms().saturating_sub(t) as f64)
}

/// After a Redis step succeeded: ends an outage (logs, readiness).
fn recovered(ctx: &Ctx, backoff: &mut Backoff) {
    if backoff.failures > 0 || !ctx.health.redis_ok.load(Ordering::Relaxed) {
        backoff.recovered();
        ctx.health.set(&ctx.health.redis_ok, true);
    }
}

/// After a failed Redis step: backs off. False when the worker is stopping meanwhile.
async fn wait_out(
    ctx: &Ctx,
    backoff: &mut Backoff,
    e: crate::error::QueueError,
    shutdown: &CancellationToken,
    broken: &CancellationToken,
) -> bool {
    backoff.failed(&e);
    ctx.health.set(&ctx.health.redis_ok, false);
    tokio::select! {
        _ = tokio::time::sleep(backoff.delay()) => true,
        _ = shutdown.cancelled() => false,
        _ = broken.cancelled() => false,
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
