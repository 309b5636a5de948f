//! The gauge task: queue gauges of every shard and the GPU's gauges (NVML and allocator, the
//! one [`GpuSampler`] of the device, shared with the inference thread) every
//! `queue.gauge_interval_ms`, the pruning of consumers idle and empty for too long, and, at
//! start and every [`UNREAD_EVERY`]th sample, the look for job streams nobody reads
//! ([`Unread`]). It observes only: readiness is written by the stages that read and publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmr2_client::{Keys, Layout};
use metrics::gauge;
use redis::aio::ConnectionLike;

use super::ctx::Ctx;
use crate::config::Config;
use crate::error::QueueError;
use crate::gpu::GpuSampler;
use crate::metrics as m;
use crate::queue::Queue;

/// How many shard numbers past `queue.shards` the look for unread job streams covers: a
/// producer configured with up to `queue.shards + 64` shards is caught.
pub(crate) const UNREAD_PAST: usize = 64;

/// The look for unread job streams runs at start and then every this many gauge samples
/// (every 60 s at the default `queue.gauge_interval_ms` of 5 s).
pub(crate) const UNREAD_EVERY: u64 = 12;

/// Samples until `ctx.stops.background` is cancelled.
pub(crate) async fn sample(ctx: Arc<Ctx>, gpu: Option<Arc<GpuSampler>>) {
    let every = Duration::from_millis(ctx.config.queue.gauge_interval_ms);
    let prune_after = Duration::from_secs(ctx.config.queue.prune_consumers_after_s);
    let mut next_prune = Instant::now();
    let stop = &ctx.stops.background;
    let mut unread = Unread::new(&ctx.config);
    let mut samples: u64 = 0;
    loop {
        if samples % UNREAD_EVERY == 0 {
            tokio::select! {
                _ = unread.check(&ctx.queue, ctx.config.queue.shards) => {}
                _ = stop.cancelled() => return,
            }
        }
        samples += 1;
        if !prune_after.is_zero() && Instant::now() >= next_prune {
            next_prune = Instant::now() + prune_after.min(Duration::from_secs(600));
            prune(&ctx, prune_after).await;
        }
        for k in 0..ctx.queue.shards() {
            let stream = ctx.queue.shard(k).keys().jobs.clone();
            match ctx.queue.shard(k).stats().await {
                Ok(s) => {
                    gauge!(m::QUEUE_LENGTH, "stream" => stream.clone()).set(s.length as f64);
                    gauge!(m::QUEUE_PENDING, "stream" => stream.clone()).set(s.pending as f64);
                    if let Some(lag) = s.lag {
                        gauge!(m::QUEUE_LAG, "stream" => stream).set(lag as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, %stream, "could not sample the queue gauges"),
            }
        }
        if let Some(g) = &gpu {
            g.sample();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// A family of job-stream names: the unsharded `{prefix}:jobs`, or the sharded
/// `{<prefix>:<k>}:jobs`. An ACL rule admits or refuses a family as a whole (`~hmr2:*` admits
/// only the first, `~{hmr2:*}*` only the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Unsharded,
    Sharded,
}

/// The look for job streams of this prefix that no worker of this configuration reads:
/// those of shard numbers from `queue.shards` to `queue.shards + 63`, the sharded names of
/// shards below it when the queue is not sharded (`{<prefix>:0}:jobs`, ...), and the unsharded
/// `{prefix}:jobs` when it is. Producers with more shards than the workers, or sharding a queue
/// the workers read unsharded (or the reverse), fill such streams, and their jobs wait for ever. Each stream is probed with its own
/// `XLEN` on the exact key name (no `SCAN`/`KEYS`; on a cluster each key is routed to its own
/// slot), over one of the queue's pooled connections.
pub(crate) struct Unread {
    /// The streams to probe, with their family.
    streams: Vec<(Family, String)>,
    /// Families the ACL user may not read: probed once (one refusal), then no more.
    refused: Vec<Family>,
    /// The streams that held entries at the last complete look (none before the first).
    last: Option<Vec<String>>,
}

impl Unread {
    pub(crate) fn new(config: &Config) -> Self {
        Unread {
            streams: unread_candidates(&config.queue.prefix, &config.layout()),
            refused: Vec::new(),
            last: None,
        }
    }

    /// Probes every stream over one of the queue's pooled connections, sets
    /// [`m::UNREAD_SHARDS`] and logs a change. A look cut short (Redis unreachable) changes
    /// nothing.
    async fn check(&mut self, queue: &Queue, shards: usize) {
        let found = match queue.conn().await {
            Ok(mut conn) => self.probe(&mut conn).await.map_err(QueueError::from),
            Err(e) => Err(e),
        };
        match found {
            Ok(found) => self.record(found, shards),
            Err(e) => tracing::debug!(error = %e, "could not look for unread job streams"),
        }
    }

    /// The probed streams that hold entries, in probe order.
    async fn probe(&mut self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Vec<String>> {
        let mut found = Vec::new();
        for (family, stream) in &self.streams {
            if self.refused.contains(family) {
                continue;
            }
            let len: redis::RedisResult<u64> =
                redis::cmd("XLEN").arg(stream).query_async(conn).await;
            match len {
                Ok(0) => {}
                Ok(_) => found.push(stream.clone()),
                Err(e) if e.code() == Some("NOPERM") => {
                    tracing::info!(
                        %stream,
                        "the Redis user may not read this job stream: streams named like it are \
                         not looked for again"
                    );
                    self.refused.push(*family);
                }
                // A key of another type is no job stream.
                Err(e) if e.code() == Some("WRONGTYPE") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Sets the gauge to the number of streams `found`, and logs when the set has changed.
    fn record(&mut self, found: Vec<String>, shards: usize) {
        gauge!(m::UNREAD_SHARDS).set(found.len() as f64);
        if self.last.as_ref() == Some(&found) {
            return;
        }
        if !found.is_empty() {
            tracing::error!(
                "{} job stream(s) hold entries that no worker with queue.shards = {shards} \
                 reads: {}. Their producers use another shard count; give producers and \
                 workers the same queue.shards",
                found.len(),
                found.join(", ")
            );
        } else if self.last.is_some() {
            tracing::info!("no unread job streams any more (queue.shards = {shards})");
        }
        self.last = Some(found);
    }
}

/// The job streams of `prefix` that a queue of `layout` does not read and a producer with
/// another shard count (up to `layout.len() + UNREAD_PAST`) would fill.
fn unread_candidates(prefix: &str, layout: &Layout) -> Vec<(Family, String)> {
    let read: Vec<&str> = layout.shards().iter().map(|k| k.jobs.as_str()).collect();
    std::iter::once((Family::Unsharded, Keys::new(prefix).jobs))
        .chain(
            (0..layout.len() + UNREAD_PAST).map(|k| (Family::Sharded, Keys::shard(prefix, k).jobs)),
        )
        .filter(|(_, s)| !read.contains(&s.as_str()))
        .collect()
}

/// Removes consumers of every shard that have been idle and empty for `after`.
async fn prune(ctx: &Ctx, after: Duration) {
    for k in 0..ctx.queue.shards() {
        match ctx.queue.shard(k).prune_consumers(after).await {
            Ok(gone) if !gone.is_empty() => tracing::info!(
                consumers = ?gone,
                stream = %ctx.queue.shard(k).keys().jobs,
                "removed consumers idle and empty for too long"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not prune idle consumers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_probed_are_those_this_layout_does_not_read() {
        // Not sharded: every sharded name, shard 0 included.
        let one = unread_candidates("hmr2", &Layout::new("hmr2", 1, false));
        assert_eq!(one.len(), 1 + UNREAD_PAST);
        assert_eq!(one[0], (Family::Sharded, "{hmr2:0}:jobs".to_string()));
        assert_eq!(one[UNREAD_PAST].1, format!("{{hmr2:{UNREAD_PAST}}}:jobs"));
        assert!(one.iter().all(|(f, _)| *f == Family::Sharded));
        // Four shards: the unsharded name, then shards 4 to 4 + 63.
        let four = unread_candidates("hmr2", &Layout::new("hmr2", 4, false));
        assert_eq!(four.len(), 1 + UNREAD_PAST);
        assert_eq!(four[0], (Family::Unsharded, "hmr2:jobs".to_string()));
        assert_eq!(four[1].1, "{hmr2:4}:jobs");
        assert_eq!(
            four[UNREAD_PAST].1,
            format!("{{hmr2:{}}}:jobs", 3 + UNREAD_PAST)
        );
        // One shard on a cluster reads {hmr2:0}: the unsharded name and shards 1 to 64.
        let cluster = unread_candidates("hmr2", &Layout::new("hmr2", 1, true));
        assert_eq!(cluster[0].1, "hmr2:jobs");
        assert_eq!(cluster[1].1, "{hmr2:1}:jobs");
        assert!(!cluster.iter().any(|(_, s)| s == "{hmr2:0}:jobs"));
    }
}
