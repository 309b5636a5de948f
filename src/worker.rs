//! The pipeline (DESIGN §2): fetch → decode/crop → batch → infer → publish, stages overlapping,
//! every queue bounded.
//!
//! - `fetch`: reads new entries (XREADGROUP, one reader per shard, taking turns) and reclaims
//!   orphaned ones (XPENDING + XCLAIM), asking only for as many entries as it holds *in-flight
//!   permits*, shared by all shards: a worker never holds more than
//!   `max_batch × (queue_depth + 2)` jobs, whatever the backlog in Redis. Each entry travels
//!   as a `delivery`: its permit, its lease (renewed while held) and its tracing span.
//! - `decode`: blocking threads (`pipeline.decode_threads` at once) parse, decode and crop
//!   ([`prepare`]); bad input is rejected there. Every decoded frame is charged to the
//!   decoded-pixel budget of `delivery` (`limits.max_decoded_bytes_in_flight`) until its crops
//!   are cut, detector frames included; the fetcher reads nothing while it is spent.
//! - `coordinator`: a thin loop around the `scheduler` (the I/O-free dispatch policy over the
//!   `batcher`s: detector batches first, a batch when full or when the device is idle, the
//!   detect → crop hand-off).
//! - `infer`: the inference thread owns the models (OOM ladder); `memory` is the GPU memory
//!   policy it applies around every batch.
//! - `publish`: result + XACK atomically (`result` builds it), retrying transient Redis errors
//!   (`retry`); failed frames stay pending for a retry; dead letters.
//! - `gauges`: queue and GPU gauges, consumer pruning. `start`: everything up to the first
//!   fetch (`model_info` publishes the model hash). `ctx`: what the stages share, the
//!   cancellation tree, the job in flight.
//!
//! No module here imports from this one (`layout` checks it): they share `ctx`. Nothing here depends on the CLI
//! or the HTTP listener's routes.
//!
//! Shutdown: `shutdown` (or a broken device) stops the intake; the stages drain in order as
//! their inputs close; after `shutdown.grace_seconds` what is left stays pending for other
//! workers, released to them at once.

mod batcher;
mod coordinator;
mod ctx;
mod decode;
mod delivery;
mod fetch;
mod gauges;
mod infer;
mod memory;
mod model_info;
pub mod prepare;
mod publish;
mod result;
mod retry;
mod scheduler;
mod start;

#[cfg(test)]
mod layout;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::detector::{Detector, TorchDetector};
use crate::error::ModelError;
use crate::model::{naming_the_file, Model, TorchModel};
use crate::video;
use delivery::{Delivery, Leases};
pub use infer::Models;
use prepare::Prepared;
pub(crate) use start::check_redis;
pub use start::RunError;

/// Runs one worker with the TorchScript model of `config.model` (and the detector of
/// `config.detector`, when set) until `shutdown` is cancelled, then drains within the grace
/// period. See [`run_with`]. A file that cannot be loaded is named with its setting.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let path = config.model.path.clone();
    let detector = config.detector.path.clone();
    run_with(config, shutdown, move |device| {
        let detector = if detector.as_os_str().is_empty() {
            None
        } else {
            Some(TorchDetector::load(&detector, device).map_err(|e| {
                naming_the_file(e, "detector", "detector.path", "HMR2_DETECTOR__PATH")
            })?)
        };
        let hmr = TorchModel::load(&path, device)
            .map_err(|e| naming_the_file(e, "model", "model.path", "HMR2_MODEL__PATH"))?;
        Ok(Models { hmr, detector })
    })
    .await
}

/// Runs one worker with the models `load` makes for the configured device (on the inference
/// thread, which owns them from then on): warms up, serves `/metrics`, `/healthz`, `/readyz`,
/// works until `shutdown` is cancelled, then drains within the grace period.
pub async fn run_with<M, D, F>(
    config: Config,
    shutdown: CancellationToken,
    load: F,
) -> Result<(), RunError>
where
    M: Model,
    D: Detector,
    F: FnOnce(tch::Device) -> Result<Models<M, D>, ModelError> + Send + 'static,
{
    let Some(started) = start::start(config, &shutdown, load).await? else {
        return Ok(());
    };
    let start::Started {
        ctx,
        loaded,
        infer,
        work,
        done,
        http,
    } = started;
    let stops = &ctx.stops;
    let gauges = tokio::spawn(gauges::sample(ctx.clone(), loaded.gpu.clone()));
    let whole_frames = tokio::spawn(decode::warn_whole_frames(
        ctx.clone(),
        Duration::from_secs(60),
    ));
    // Videos: expiry everywhere; tracking here unless CPU-only pods do it (DESIGN §13).
    let config = Arc::new(ctx.config.clone());
    let sweeper = tokio::spawn(video::sweep_videos(
        ctx.queue.clone(),
        config.clone(),
        stops.background.clone(),
    ));
    let tracker = config.track.in_worker.then(|| {
        tokio::spawn(video::run_tracker(
            ctx.queue.clone(),
            config.clone(),
            ctx.origin.worker.clone(),
            stops.intake.clone(),
        ))
    });

    // The stages, each ending when its input closes; every one that holds jobs is tracked.
    let inflight = ctx.config.queue.max_batch * (ctx.config.pipeline.queue_depth + 2);
    let (deliver_tx, deliver_rx) = mpsc::channel::<Delivery>(ctx.config.queue.max_batch);
    let (prepared_tx, prepared_rx) =
        mpsc::channel::<(Delivery, Prepared)>(ctx.config.queue.max_batch);
    let leases = Leases::default();
    let permits = Arc::new(Semaphore::new(inflight));
    ctx.jobs.spawn(fetch::fetch(
        ctx.clone(),
        permits,
        inflight,
        leases.clone(),
        deliver_tx,
    ));
    let renewer = tokio::spawn(fetch::renew_leases(ctx.clone(), leases));
    ctx.jobs
        .spawn(decode::decode(ctx.clone(), deliver_rx, prepared_tx));
    ctx.jobs.spawn(coordinator::coordinate(
        ctx.clone(),
        prepared_rx,
        work,
        done,
    ));
    ctx.jobs.close();

    // Wait: shutdown asked, or the device broke.
    let broken = ctx.health.broken_token();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = broken.cancelled() => {}
    }
    stops.intake.cancel();
    let grace = Duration::from_secs(ctx.config.shutdown.grace_seconds);
    if broken.is_cancelled() {
        tracing::error!("worker broken: no more jobs taken; releasing what it holds");
    } else {
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: finishing in-flight jobs"
        );
    }

    // Drain: every job finished within the grace period, or left pending and released.
    let drained = tokio::time::timeout(grace, ctx.jobs.wait()).await.is_ok();
    if let Some(tracker) = tracker {
        // It gives its videos the grace period itself.
        let _ = tracker.await;
    }
    if !drained {
        tracing::warn!("grace period over: jobs still in flight stay pending for other workers");
        stops.hard.cancel();
    }
    stops.background.cancel();
    let _ = gauges.await;
    let _ = whole_frames.await;
    let _ = sweeper.await;
    let _ = renewer.await;
    fetch::retire(&ctx).await;
    if drained {
        let _ = tokio::task::spawn_blocking(move || infer.join()).await;
    }
    stops.all.cancel();
    let _ = http.await;
    if broken.is_cancelled() {
        let reason = ctx.health.broken_reason().unwrap_or_default().to_string();
        tracing::error!(%reason, "worker stopped: broken");
        return Err(RunError::Broken(reason));
    }
    tracing::info!("worker stopped");
    Ok(())
}
