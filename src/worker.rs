//! The pipeline (DESIGN §2): fetch → decode/crop → batch → infer → publish, stages overlapping,
//! every queue bounded.
//!
//! - The **fetcher** reads new entries (XREADGROUP, one reader per shard, taking turns) and
//!   reclaims orphaned ones (XPENDING + XCLAIM). It only asks for as many entries as it holds
//!   *in-flight permits*, shared by all shards, so a worker never holds more jobs than
//!   `max_batch × (queue_depth + 2)`, whatever the backlog in Redis.
//! - **Decoders** (blocking threads, `pipeline.decode_threads` at once) parse, decode and crop.
//! - The **coordinator** moves jobs through the `batcher` (the I/O-free core: crops of many
//!   jobs packed into batches, a job's people spanning batches, outputs folded back per job),
//!   dispatching a batch when one is full or the device is idle.
//! - The **inference thread** (`infer`) owns the model: OOM ladder and memory policy.
//! - **Publishers** (`publish`) postprocess finished jobs and publish result + XACK atomically,
//!   retrying transient Redis errors (`retry`); failed frames are left pending for a retry.
//!
//! Module edges point down: `fetch` → `publish` → `result`, `retry`, `delivery`; `infer` →
//! `batcher`; nothing here depends on the CLI or the HTTP listener.
//!
//! Shutdown: the token stops the fetcher; dropping senders drains every stage in order; after
//! `shutdown.grace_seconds` whatever is left stays pending for other workers.

mod batcher;
mod delivery;
mod fetch;
mod infer;
pub mod prepare;
mod publish;
mod result;
mod retry;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{worker_id, Config};
use crate::detector::{Detection, Detector, TorchDetector};
use crate::error::{ConfigError, ModelError, QueueError};
use crate::health::Health;
use crate::http;
use crate::image::CROP_BYTES;
use crate::metrics::{self as m, outcome};
use crate::model::{self, FrameOutput, Model, TorchModel};
use crate::queue::Queue;
use batcher::{Batcher, Finished};
use delivery::{Delivery, Leases};
pub use infer::Models;
use infer::{Done, Work};
use prepare::Prepared;
use publish::{finish, reject};
use result::Origin;
use retry::Backoff;

/// Why the worker could not start.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// The device or the model failed in a way no retry fixes; what this worker held was
    /// released to the other workers.
    #[error("worker broken: {0}")]
    Broken(String),
}

/// What the stages share.
struct Ctx {
    config: Config,
    queue: Queue,
    health: Arc<Health>,
    origin: Origin,
    /// Cancelled when the grace period is over: publishers stop retrying.
    hard_stop: CancellationToken,
    /// The detector's input side, when a detector is loaded.
    detector_input: Option<u32>,
}

/// Runs one worker with the TorchScript model of `config.model` (and the detector of
/// `config.detector`, when set) until `shutdown` is cancelled, then drains within the grace
/// period. See [`run_with`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let path = config.model.path.clone();
    let detector = config.detector.path.clone();
    run_with(config, shutdown, move |device| {
        let detector = if detector.as_os_str().is_empty() {
            None
        } else {
            Some(TorchDetector::load(&detector, device)?)
        };
        Ok(Models {
            hmr: TorchModel::load(&path, device)?,
            detector,
        })
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
    config.validate()?;
    let handle = m::install();
    let health = Arc::new(Health::new(Duration::from_secs(config.gpu.stall_timeout_s)));
    health.set(&health.redis_ok, false);

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .map_err(|e| RunError::Listen(config.http.listen.clone(), e))?;
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        handle,
        health.clone(),
        http_stop.clone(),
    ));

    // Inference thread: load + warm up before anything is fetched.
    let (batch_tx, batch_rx) = mpsc::channel::<Work>(config.pipeline.queue_depth);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let device = model::resolve_device(config.device())?;
    let infer_thread = infer::spawn(
        move || load(device),
        config.queue.max_batch,
        config.gpu.clone(),
        health.clone(),
        infer::Channels {
            batches: batch_rx,
            done: done_tx,
            ready: ready_tx,
        },
    )
    .map_err(|e| ModelError::Forward(format!("cannot start the inference thread: {e}")))?;
    let loaded = match ready_rx.await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            http_stop.cancel();
            return Err(e.into());
        }
        Err(_) => {
            http_stop.cancel();
            return Err(ModelError::Stopped.into());
        }
    };
    gauge!(m::BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "torch" => model::torch_version(),
        "device" => loaded.device.clone(),
        "model" => loaded.meta.label())
    .set(1.0);
    // Every counter exists from the start, so rate() and alerts see a zero, not a gap.
    for o in [
        outcome::OK,
        outcome::INVALID_INPUT,
        outcome::FAILED,
        outcome::DEAD_LETTERED,
        outcome::RECLAIMED,
    ] {
        counter!(m::JOBS, "outcome" => o).increment(0);
    }
    if let Some(n) = loaded.cuda_index {
        for name in [m::OOM, m::CACHE_RELEASES, m::DRIFT] {
            counter!(name, "gpu" => n.to_string()).increment(0);
        }
    } else {
        tracing::info!("no GPU in use: GPU memory gauges are not exported");
    }
    health.set(&health.warm, true);

    let queue = Queue::new(&config)?;
    let origin = Origin {
        worker: worker_id(),
        device: loaded.device.clone(),
        model: loaded.meta.label(),
    };
    tracing::info!(
        redis = %crate::config::redact_url(&config.redis.url),
        stream = %queue.shard(0).keys().jobs,
        shards = queue.shards(),
        cluster = queue.is_cluster(),
        consumer = %queue.consumer(),
        device = %origin.device,
        model = %origin.model,
        detector = %loaded.detector.as_ref().map_or_else(|| "none".into(), |d| d.label()),
        max_batch = config.queue.max_batch,
        "worker started"
    );
    let ctx = Arc::new(Ctx {
        config,
        queue,
        health: health.clone(),
        origin,
        hard_stop: CancellationToken::new(),
        detector_input: loaded.detector.as_ref().map(|d| d.input_size),
    });

    // Wait for Redis (the group must exist before the first read).
    let mut backoff = Backoff::default();
    loop {
        match ctx.queue.ensure_groups().await {
            Ok(()) => break,
            Err(e) => {
                if !ctx.queue.is_cluster() && e.to_string().contains("MOVED") {
                    tracing::error!(
                        "Redis answered MOVED: it is a Redis Cluster; set redis.cluster = true \
                         (HMR2_REDIS__CLUSTER=true) or give several seed URLs"
                    );
                }
                backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = shutdown.cancelled() => {
                        drop(batch_tx);
                        let _ = tokio::task::spawn_blocking(move || infer_thread.join()).await;
                        http_stop.cancel();
                        return Ok(());
                    }
                }
            }
        }
    }
    // The model hash is in place before the worker reports ready.
    publish_model_info(&ctx, &loaded).await;
    ctx.health.set(&ctx.health.redis_ok, true);

    let gauges_stop = CancellationToken::new();
    let gauges = tokio::spawn(sample_gauges(
        ctx.clone(),
        loaded.cuda_index,
        gauges_stop.clone(),
    ));

    let inflight = ctx.config.queue.max_batch * (ctx.config.pipeline.queue_depth + 2);
    let (deliver_tx, deliver_rx) = mpsc::channel::<Delivery>(ctx.config.queue.max_batch);
    let (prepared_tx, prepared_rx) =
        mpsc::channel::<(Delivery, Prepared)>(ctx.config.queue.max_batch);
    let leases = Leases::default();
    let fetcher = tokio::spawn(fetch::fetch(
        ctx.clone(),
        Arc::new(Semaphore::new(inflight)),
        inflight,
        leases.clone(),
        deliver_tx,
        shutdown.clone(),
    ));
    let renewer = tokio::spawn(fetch::renew_leases(
        ctx.clone(),
        leases,
        gauges_stop.clone(),
    ));
    let decoders = tokio::spawn(decode(ctx.clone(), deliver_rx, prepared_tx));
    let coordinator = tokio::spawn(coordinate(ctx.clone(), prepared_rx, batch_tx, done_rx));

    let broken = ctx.health.broken_token();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = broken.cancelled() => {}
    }
    let grace = Duration::from_secs(ctx.config.shutdown.grace_seconds);
    if broken.is_cancelled() {
        tracing::error!("worker broken: no more jobs taken; releasing what it holds");
    } else {
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: finishing in-flight jobs"
        );
    }
    let drained = tokio::time::timeout(grace, async {
        let _ = fetcher.await;
        let _ = decoders.await;
        if let Ok(mut publishers) = coordinator.await {
            while publishers.join_next().await.is_some() {}
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over: jobs still in flight stay pending for other workers");
        ctx.hard_stop.cancel();
    }
    gauges_stop.cancel();
    let _ = gauges.await;
    let _ = renewer.await;
    retire(&ctx).await;
    if drained.is_ok() {
        let _ = tokio::task::spawn_blocking(move || infer_thread.join()).await;
    }
    http_stop.cancel();
    let _ = http_task.await;
    if broken.is_cancelled() {
        let reason = ctx.health.broken_reason().unwrap_or_default().to_string();
        tracing::error!(%reason, "worker stopped: broken");
        return Err(RunError::Broken(reason));
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Leaves the group tidy: every entry still pending on this consumer (left at the end of the
/// grace period, or by a broken pipeline) is released to the other workers at once, and the
/// consumer itself is removed when it holds nothing. Best effort: Redis may be away.
async fn retire(ctx: &Ctx) {
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
                tracing::warn!(error = %e, %stream, "could not release unfinished entries; they are reclaimed after claim_idle_ms")
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

/// The model hash's fields: `meta` (and `detector`), plus the mesh topology the exporter wrote
/// beside the model file (`<model>.mesh.json`), when it is there.
fn model_info(config: &Config, loaded: &infer::Loaded) -> Vec<(&'static str, String)> {
    let mut fields = vec![("meta", loaded.meta.raw.clone())];
    if let Some(d) = &loaded.detector {
        fields.push(("detector", d.raw.clone()));
    }
    let mesh = config.model.path.with_extension("mesh.json");
    let parsed = std::fs::read(&mesh)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v) => {
            for key in [
                "faces",
                "parents",
                "joint_names",
                "keypoint_names",
                "topology",
            ] {
                if let Some(x) = v.get(key) {
                    fields.push((key, x.to_string()));
                }
            }
        }
        Err(e) => tracing::warn!(
            file = %mesh.display(),
            error = %e,
            "no mesh topology beside the model; the model hash holds its meta only"
        ),
    }
    fields
}

/// Publishes [`model_info`] to `{prefix}:model` once; a failure is logged, not fatal.
async fn publish_model_info(ctx: &Ctx, loaded: &infer::Loaded) {
    let fields = model_info(&ctx.config, loaded);
    match ctx.queue.publish_model_info(&fields).await {
        Ok(()) => tracing::info!(
            key = %ctx.queue.shard(0).keys().model,
            fields = fields.len(),
            "model information published"
        ),
        Err(e) => tracing::warn!(error = %e, "could not publish the model information"),
    }
}

/// Decodes deliveries on blocking threads, `decode_threads` at a time.
async fn decode(
    ctx: Arc<Ctx>,
    mut input: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<(Delivery, Prepared)>,
) {
    let slots = Arc::new(Semaphore::new(ctx.config.decode_threads()));
    let mut tasks = JoinSet::new();
    while let Some(d) = input.recv().await {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let (ctx, out) = (ctx.clone(), out.clone());
        tasks.spawn(async move {
            let limits = ctx.config.limits.clone();
            let detector = ctx.detector_input;
            let ctx2 = ctx.clone();
            let (d, prepared) = tokio::task::spawn_blocking(move || {
                let mut d = d;
                let keys = ctx2.queue.shard(d.entry.shard).keys();
                let p = prepare::prepare(&d.entry, keys, &limits, detector);
                if p.is_ok() && !ctx2.config.queue.dead_keep_image {
                    // Decoded: the frame's bytes are not needed any more (host memory stays
                    // bounded by what the crops take, not by what the entries took).
                    d.entry.strip_frame();
                }
                (d, p)
            })
            .await
            .expect("prepare never panics");
            drop(slot);
            match prepared {
                Ok(p) => {
                    let _ = out.send((d, p)).await;
                }
                Err(r) => reject(ctx, d, r).await,
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// A job between decoding and publishing: its delivery (permit and lease) and what the
/// result needs. Its crops (or its letterbox) live in a [`Batcher`] meanwhile.
pub(crate) struct Held {
    delivery: Delivery,
    prepared: Prepared,
    /// Its share of the detector's forward passes, milliseconds.
    detect_ms: f64,
}

/// Moves prepared jobs through the detector's and HMR2's [`Batcher`]s, dispatches their
/// batches to the inference thread while the channel has room (detector batches first: they
/// feed HMR2), crops detected people on blocking threads, and hands finished jobs to
/// publishers. Returns the publishers still running once its input is exhausted.
async fn coordinate(
    ctx: Arc<Ctx>,
    mut input: mpsc::Receiver<(Delivery, Prepared)>,
    work: mpsc::Sender<Work>,
    mut done: mpsc::UnboundedReceiver<Done>,
) -> JoinSet<()> {
    let max = ctx.config.queue.max_batch;
    let mut hmr: Batcher<Held, FrameOutput> = Batcher::new(max, CROP_BYTES);
    let letterbox_bytes = ctx
        .detector_input
        .map_or(1, |s| s as usize * s as usize * 3);
    let mut det: Batcher<Held, Vec<Detection>> = Batcher::new(max, letterbox_bytes);
    let (cropped_tx, mut cropped_rx) = mpsc::unbounded_channel::<Held>();
    let mut cropping = 0usize;
    let mut publishers = JoinSet::new();
    let mut input_open = true;
    let to_hmr = |held: Held, hmr: &mut Batcher<Held, FrameOutput>, p: &mut JoinSet<()>| {
        let mut held = held;
        let crops = std::mem::take(&mut held.prepared.crops);
        let vertices = held.prepared.include.vertices;
        if let Some(f) = hmr.add(held, crops, vertices) {
            p.spawn(finish(ctx.clone(), f));
        }
    };
    loop {
        loop {
            let idle = hmr.in_flight() == 0 && det.in_flight() == 0;
            let detect = det.should_dispatch(idle);
            if !detect && !hmr.should_dispatch(idle) {
                break;
            }
            let Ok(permit) = work.try_reserve() else {
                break;
            };
            permit.send(if detect {
                Work::Detect(det.take_batch().expect("a batch is due"))
            } else {
                Work::Hmr(hmr.take_batch().expect("a batch is due"))
            });
        }
        if !input_open && hmr.is_empty() && det.is_empty() && cropping == 0 {
            break;
        }
        tokio::select! {
            msg = input.recv(), if input_open => match msg {
                Some((delivery, mut prepared)) => {
                    let letterbox = prepared
                        .detect
                        .as_mut()
                        .map(|p| std::mem::take(&mut p.letterbox.pixels));
                    let held = Held { delivery, prepared, detect_ms: 0.0 };
                    match letterbox {
                        Some(image) => {
                            det.add(held, image, false);
                        }
                        None => to_hmr(held, &mut hmr, &mut publishers),
                    }
                }
                None => input_open = false,
            },
            Some(held) = cropped_rx.recv(), if cropping > 0 => {
                cropping -= 1;
                to_hmr(held, &mut hmr, &mut publishers);
            }
            msg = done.recv() => {
                let Some(d) = msg else { break };
                match d {
                    Done::Hmr(b) => {
                        for f in hmr.complete(b) {
                            publishers.spawn(finish(ctx.clone(), f));
                        }
                    }
                    Done::Detect(b) => {
                        for f in det.complete(b) {
                            let mut held = f.job;
                            held.detect_ms = f.inference_ms;
                            let dets = match f.outputs {
                                Ok(mut per_frame) => per_frame.pop().unwrap_or_default(),
                                Err(e) => {
                                    let failed = Finished { job: held, outputs: Err(e), inference_ms: 0.0 };
                                    publishers.spawn(finish(ctx.clone(), failed));
                                    continue;
                                }
                            };
                            cropping += 1;
                            let (tx, cfg) = (cropped_tx.clone(), ctx.config.detector.clone());
                            let max_boxes = ctx.config.limits.max_boxes;
                            tokio::task::spawn_blocking(move || {
                                prepare::crop_detected(&mut held.prepared, &dets, &cfg, max_boxes);
                                let _ = tx.send(held);
                            });
                        }
                    }
                }
                while publishers.try_join_next().is_some() {}
            }
        }
    }
    publishers
}

/// Queue gauges and idle GPU gauges, every `gauge_interval_ms`.
async fn sample_gauges(ctx: Arc<Ctx>, cuda: Option<usize>, stop: CancellationToken) {
    let every = Duration::from_millis(ctx.config.queue.gauge_interval_ms);
    let gpu = cuda.map(m::GpuGauges::new);
    let prune_after = Duration::from_secs(ctx.config.queue.prune_consumers_after_s);
    let mut next_prune = std::time::Instant::now();
    loop {
        if !prune_after.is_zero() && std::time::Instant::now() >= next_prune {
            next_prune = std::time::Instant::now() + prune_after.min(Duration::from_secs(600));
            for k in 0..ctx.queue.shards() {
                match ctx.queue.shard(k).prune_consumers(prune_after).await {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(consumers = ?gone, stream = %ctx.queue.shard(k).keys().jobs, "removed consumers idle and empty for too long")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "could not prune idle consumers"),
                }
            }
        }
        // Every shard's gauges; Redis counts as reachable when every shard answered.
        let mut all_ok = true;
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
                Err(_) => all_ok = false,
            }
        }
        if all_ok != ctx.health.redis_ok.load(Ordering::Relaxed) {
            ctx.health.set(&ctx.health.redis_ok, all_ok);
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
