//! Fetching: new entries (`read.lua`, one reader per shard) and orphaned ones (XPENDING +
//! XCLAIM, one claimer for all shards), bounded by in-flight permits shared by all shards, with
//! leases that keep this worker's own entries from looking orphaned.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::delivery::{Delivery, Leases};
use super::publish::too_many_deliveries;
use super::retry::Backoff;
use crate::health::Input;
use crate::metrics::{self as m, Outcome};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the fetching tasks share.
struct Fetch {
    ctx: Arc<Ctx>,
    /// In-flight permits, `inflight` in all, shared by every shard.
    permits: Arc<Semaphore>,
    inflight: usize,
    leases: Leases,
    out: mpsc::Sender<Delivery>,
    /// Cancelled on shutdown and when the worker is broken.
    intake: CancellationToken,
    /// Per shard, why its last Redis step failed: the streams count as readable (readiness
    /// input [`Input::RedisRead`], written only here once started) when no shard has failed.
    failing: Mutex<Vec<Option<String>>>,
}

impl Fetch {
    fn stopping(&self) -> bool {
        self.intake.is_cancelled()
    }

    /// Records shard `k`'s last Redis step and writes readiness from every shard's.
    fn outcome(&self, k: usize, error: Option<String>) {
        let first = {
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if failing[k] == error {
                return;
            }
            failing[k] = error;
            failing.iter().flatten().next().cloned()
        };
        let stream = &self.ctx.queue.shard(k).keys().jobs;
        self.ctx.health.set(
            Input::RedisRead,
            first.map_or(Ok(()), |e| Err(format!("reading {stream}: {e}"))),
        );
    }

    /// After a Redis step on shard `k` succeeded: ends its outage (logs, readiness).
    fn recovered(&self, k: usize, backoff: &mut Backoff) {
        if backoff.failures > 0 {
            backoff.recovered();
        }
        self.outcome(k, None);
    }

    /// After a failed Redis step on shard `k`: backs off. False when the worker is stopping
    /// meanwhile.
    async fn wait_out(&self, k: usize, backoff: &mut Backoff, e: crate::error::QueueError) -> bool {
        backoff.failed(&e);
        self.outcome(k, Some(format!("{}: {e}", e.meaning())));
        tokio::select! {
            _ = tokio::time::sleep(backoff.delay()) => true,
            _ = self.intake.cancelled() => false,
        }
    }
}

/// Reads new entries of every shard and reclaims orphaned ones, as many as there are free
/// permits (`inflight` in all, across shards). Stops when the intake stops (shutdown, or the
/// worker is broken); a read under way (it polls an empty shard for up to `block_ms`) is not cut off (its entries would be delivered to this
/// consumer and never seen): it ends within `block_ms`, and what it brought is released to
/// other workers at once.
///
/// Each shard has its own reader, because a waiting read holds its connection and Redis
/// Cluster refuses one read over several slots (CROSSSLOT). The readers take turns at
/// the permits (the semaphore is first come, first served), and each read takes at most
/// `max_batch` entries, so a hot shard cannot starve the others. With several shards, a
/// reader whose shard looks empty waits for it holding a single permit (a read of one entry
/// that polls), and reads without waiting while it has work: idle shards never pin the permits
/// that busy shards need.
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
) {
    let shards = ctx.queue.shards();
    let f = Arc::new(Fetch {
        intake: ctx.stops.intake.clone(),
        ctx,
        permits,
        inflight,
        leases,
        out,
        failing: Mutex::new(vec![None; shards]),
    });
    let mut tasks = JoinSet::new();
    for k in 0..shards {
        tasks.spawn(read_shard(f.clone(), k));
    }
    tasks.spawn(claim_orphans(f.clone()));
    drop(f);
    while tasks.join_next().await.is_some() {}
}

/// Reads shard `k`'s new entries until the worker stops.
async fn read_shard(f: Arc<Fetch>, k: usize) {
    let q = &f.ctx.config.queue;
    // One shard: every read may wait, holding as many permits as are free (nothing else
    // needs them). Several: see `fetch`.
    let alone = f.ctx.queue.shards() == 1;
    let mut busy = false;
    let mut conn = None;
    let mut backoff = Backoff::new("read");
    loop {
        // No read while the decoded pixels in flight leave no room for a frame.
        tokio::select! {
            _ = f.ctx.pixels.room() => {}
            _ = f.intake.cancelled() => return,
        }
        let first = tokio::select! {
            p = f.permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = f.intake.cancelled() => return,
        };
        let mut held = vec![first];
        while (alone || busy) && held.len() < q.max_batch {
            match f.permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match f.ctx.queue.blocking_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    drop(held);
                    if !f.wait_out(k, &mut backoff, e).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let block = alone || !busy;
        // Not raced against shutdown: see `fetch`.
        let entries = match f.ctx.queue.shard(k).read_new(c, held.len(), block).await {
            Ok(new) => new,
            Err(e) => {
                conn = None;
                drop(held);
                if !f.wait_out(k, &mut backoff, e).await {
                    return;
                }
                continue;
            }
        };
        f.recovered(k, &mut backoff);
        if f.stopping() {
            release(&f.ctx, k, entries.iter().map(|e| e.id.clone()).collect()).await;
            return;
        }
        busy = !entries.is_empty();
        if busy {
            tracing::debug!(entries = entries.len(), shard = k, "fetched");
        }
        for entry in entries {
            let wait = queue_wait_ms(&entry);
            histogram!(m::QUEUE_WAIT).record(wait / 1e3);
            let permit = held.pop().expect("never more entries than permits");
            let lease = f.leases.take(k, &entry.id);
            if f.out
                .send(Delivery::new(entry, wait, permit, lease))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Looks for orphans on every shard in turn, every `claim_interval_ms` (at once again after
/// one was found), and runs each alone (see `fetch`).
async fn claim_orphans(f: Arc<Fetch>) {
    let q = &f.ctx.config.queue;
    let shards = f.ctx.queue.shards();
    let claim_every = Duration::from_millis(q.claim_interval_ms);
    let mut next_claim = Instant::now();
    let mut backoff = Backoff::new("claim");
    let mut start = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_claim.into()) => {}
            _ = f.intake.cancelled() => return,
        }
        let mut found = None;
        let mut failed = None;
        for j in 0..shards {
            let k = (start + j) % shards;
            match f.ctx.queue.shard(k).find_orphan().await {
                Ok(None) => f.recovered(k, &mut backoff),
                Ok(Some(o)) => {
                    f.recovered(k, &mut backoff);
                    found = Some((k, o));
                    break;
                }
                Err(e) => {
                    failed = Some((k, e));
                    break;
                }
            }
        }
        start = (start + 1) % shards;
        if let Some((k, e)) = failed {
            if !f.wait_out(k, &mut backoff, e).await {
                return;
            }
            continue;
        }
        let Some((k, (id, delivered))) = found else {
            next_claim = Instant::now() + claim_every;
            continue;
        };
        // Wait for the pipeline to empty, then claim the orphan and run it alone.
        let all = tokio::select! {
            p = f.permits.clone().acquire_many_owned(f.inflight as u32) => {
                p.expect("semaphore never closes")
            }
            _ = f.intake.cancelled() => return,
        };
        let entry = match f.ctx.queue.shard(k).claim_orphan(&id, delivered).await {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                drop(all);
                if !f.wait_out(k, &mut backoff, e).await {
                    return;
                }
                continue;
            }
        };
        if f.stopping() {
            release(&f.ctx, k, vec![entry.id]).await;
            return;
        }
        let lease = f.leases.take(k, &entry.id);
        let wait = queue_wait_ms(&entry);
        Outcome::Reclaimed.count();
        let delivery = Delivery::new(entry, wait, all, lease);
        if delivery.entry.deliveries > q.max_deliveries {
            f.ctx
                .jobs
                .spawn(too_many_deliveries(f.ctx.clone(), delivery));
            continue;
        }
        tracing::info!(
            entry = %delivery.entry.id,
            stream = %f.ctx.queue.shard(k).keys().jobs,
            deliveries = delivery.entry.deliveries,
            "reclaimed an orphaned entry; running it alone"
        );
        if f.out.send(delivery).await.is_err() {
            return;
        }
    }
}

/// Milliseconds since the entry was added (from its id).
fn queue_wait_ms(entry: &crate::queue::Entry) -> f64 {
    entry
        .enqueued_ms()
        .map_or(0.0, |t| now_ms().saturating_sub(t) as f64)
}

/// Hands entries this worker will not run to the other workers at once (best effort: if Redis
/// is away they are reclaimed after `claim_idle_ms` as usual).
pub(super) async fn release(ctx: &Ctx, k: usize, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    match ctx.queue.shard(k).release(&ids).await {
        Ok(n) => tracing::info!(entries = n, "released entries read while stopping"),
        Err(e) => {
            m::redis_error("release", &e);
            tracing::warn!(error = %e, entries = ids.len(), "could not release entries ({}); they are reclaimed after claim_idle_ms", e.meaning())
        }
    }
}

/// Keeps the entries this worker holds from looking orphaned: resets their idle time three
/// times per `claim_idle_ms`. Stops at once when the worker is broken, so live workers reclaim
/// what it holds. An entry another worker has reclaimed meanwhile is left to it.
pub(super) async fn renew_leases(ctx: Arc<Ctx>, leases: Leases) {
    let every = Duration::from_millis((ctx.config.queue.claim_idle_ms / 3).max(10));
    let broken = ctx.health.broken_token();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = ctx.stops.background.cancelled() => return,
            _ = broken.cancelled() => return,
        }
        if !ctx.health.alive() {
            // A hung device: let live workers take what this worker holds.
            continue;
        }
        for k in 0..ctx.queue.shards() {
            match ctx.queue.shard(k).extend_lease(&leases.ids(k)).await {
                Ok(lost) if !lost.is_empty() => tracing::info!(
                    entries = lost.len(),
                    stream = %ctx.queue.shard(k).keys().jobs,
                    "entries held here were reclaimed by another worker (or finished); their leases are not renewed"
                ),
                Ok(_) => {}
                Err(e) => {
                    m::redis_error("renew", &e);
                    tracing::warn!(error = %e, "could not renew leases ({}); other workers may reclaim this worker's jobs", e.meaning())
                }
            }
        }
    }
}

/// Leaves the group tidy: every entry still pending on this consumer (left at the end of the
/// grace period, or by a broken pipeline) is released to the other workers at once, and the
/// consumer itself is removed when it holds nothing. Best effort: Redis may be away.
pub(super) async fn retire(ctx: &Ctx) {
    for k in 0..ctx.queue.shards() {
        let stream = &ctx.queue.shard(k).keys().jobs;
        match ctx.queue.shard(k).release(&[]).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                entries = n,
                %stream,
                "released unfinished entries to the other workers"
            ),
            Err(e) => {
                m::redis_error("release", &e);
                tracing::warn!(error = %e, %stream, "could not release unfinished entries ({}); they are reclaimed after claim_idle_ms", e.meaning())
            }
        }
        match ctx
            .queue
            .shard(k)
            .forget_consumer(ctx.queue.consumer())
            .await
        {
            Ok(true) => {
                tracing::debug!(consumer = %ctx.queue.consumer(), %stream, "consumer removed from the group")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, %stream, "could not remove the consumer from the group")
            }
        }
    }
}
