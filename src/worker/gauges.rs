//! The gauge task: queue gauges of every shard and the GPU's gauges (NVML and allocator, the
//! one [`GpuSampler`] of the device, shared with the inference thread) every
//! `queue.gauge_interval_ms`, and the pruning of consumers idle and empty for too long. It
//! observes only: readiness is written by the stages that read and publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;

use super::ctx::Ctx;
use crate::gpu::GpuSampler;
use crate::metrics as m;

/// Samples until `ctx.stops.background` is cancelled.
pub(crate) async fn sample(ctx: Arc<Ctx>, gpu: Option<Arc<GpuSampler>>) {
    let every = Duration::from_millis(ctx.config.queue.gauge_interval_ms);
    let prune_after = Duration::from_secs(ctx.config.queue.prune_consumers_after_s);
    let mut next_prune = Instant::now();
    let stop = &ctx.stops.background;
    loop {
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
