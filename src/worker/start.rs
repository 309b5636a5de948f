//! Start-up of one worker, in order: the HTTP listener (so probes answer while the model
//! loads), the inference thread (load + warm-up before anything is fetched), the metrics that
//! must exist from the start, the queue, the consumer groups (waiting for Redis), the model
//! hash.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ctx::{Ctx, Stops};
use super::infer::{self, Done, Loaded, Models, Work};
use super::model_info;
use super::result::Origin;
use super::retry::Backoff;
use crate::config::{worker_id, Config};
use crate::detector::Detector;
use crate::error::{ConfigError, ModelError, QueueError};
use crate::health::{Health, Input};
use crate::http;
use crate::metrics::{self as m, Outcome};
use crate::model::{self, Model};
use crate::queue::Queue;

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

/// A worker whose model is warm and whose queue is ready to read.
pub(crate) struct Started {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) loaded: Loaded,
    /// The inference thread and its channels.
    pub(crate) infer: std::thread::JoinHandle<()>,
    pub(crate) work: mpsc::Sender<Work>,
    pub(crate) done: mpsc::UnboundedReceiver<Done>,
    pub(crate) http: JoinHandle<std::io::Result<()>>,
}

/// Starts everything up to the first fetch. `Ok(None)` when `shutdown` came while waiting
/// for Redis (everything started is stopped again).
pub(crate) async fn start<M, D, F>(
    config: Config,
    shutdown: &CancellationToken,
    load: F,
) -> Result<Option<Started>, RunError>
where
    M: Model,
    D: Detector,
    F: FnOnce(tch::Device) -> Result<Models<M, D>, ModelError> + Send + 'static,
{
    config.validate()?;
    let handle = m::install();
    let health = Arc::new(Health::new(Duration::from_secs(config.gpu.stall_timeout_s)));
    let stops = Stops::new();
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .map_err(|e| RunError::Listen(config.http.listen.clone(), e))?;
    let http = tokio::spawn(http::serve(
        listener,
        handle,
        health.clone(),
        stops.all.clone(),
    ));

    let (work, batch_rx) = mpsc::channel::<Work>(config.pipeline.queue_depth);
    let (done_tx, done) = mpsc::unbounded_channel::<Done>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let device = model::resolve_device(config.device())?;
    let infer = infer::spawn(
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
            stops.all.cancel();
            return Err(e.into());
        }
        Err(_) => {
            stops.all.cancel();
            return Err(ModelError::Stopped.into());
        }
    };
    export_start_metrics(&loaded);
    health.set(Input::Warm, Ok(()));

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
        health,
        origin,
        stops,
        jobs: TaskTracker::new(),
        detector_input: loaded.detector.as_ref().map(|d| d.input_size),
    });
    if !create_groups(&ctx, shutdown).await {
        drop(work);
        let _ = tokio::task::spawn_blocking(move || infer.join()).await;
        ctx.stops.all.cancel();
        return Ok(None);
    }
    // The model hash is in place before the worker reports ready.
    model_info::publish(&ctx, &loaded).await;
    ctx.health.set(Input::RedisRead, Ok(()));
    Ok(Some(Started {
        ctx,
        loaded,
        infer,
        work,
        done,
        http,
    }))
}

/// Build information, and every counter at zero, so `rate()` and alerts see a zero, not a gap.
fn export_start_metrics(loaded: &Loaded) {
    gauge!(m::BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "torch" => model::torch_version(),
        "device" => loaded.device.clone(),
        "model" => loaded.meta.label())
    .set(1.0);
    for o in Outcome::ALL {
        counter!(m::JOBS, "outcome" => o.as_str()).increment(0);
    }
    counter!(m::PEOPLE_DROPPED, "reason" => m::dropped::NON_FINITE).increment(0);
    if let Some(n) = loaded.cuda_index {
        for name in [m::OOM, m::CACHE_RELEASES, m::DRIFT] {
            counter!(name, "gpu" => n.to_string()).increment(0);
        }
    } else {
        tracing::info!("no GPU in use: GPU memory gauges are not exported");
    }
}

/// Creates the consumer groups (they must exist before the first read), waiting for Redis
/// with backoff. False when `shutdown` came first.
async fn create_groups(ctx: &Ctx, shutdown: &CancellationToken) -> bool {
    let mut backoff = Backoff::default();
    loop {
        match ctx.queue.ensure_groups().await {
            Ok(()) => return true,
            Err(e) => {
                if !ctx.queue.is_cluster() && e.to_string().contains("MOVED") {
                    tracing::error!(
                        "Redis answered MOVED: it is a Redis Cluster; set redis.cluster = true \
                         (HMR2_REDIS__CLUSTER=true) or give several seed URLs"
                    );
                }
                ctx.health.set(Input::RedisRead, Err(e.to_string()));
                backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = shutdown.cancelled() => return false,
                }
            }
        }
    }
}
