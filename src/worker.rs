//! The pipeline (DESIGN §2): fetch → decode/crop → batch → infer → publish, stages overlapping,
//! every queue bounded.
//!
//! - The **fetcher** reads new entries (XREADGROUP) and reclaims orphaned ones (XAUTOCLAIM). It
//!   only asks for as many entries as it holds *in-flight permits*, so a worker never holds more
//!   jobs than `max_batch × (queue_depth + 2)`, whatever the backlog in Redis.
//! - **Decoders** (blocking threads, `pipeline.decode_threads` at once) parse, decode and crop.
//! - The **coordinator** owns all job state: it packs crops of many jobs into batches (a job's
//!   people may span batches), dispatches a batch when it is full or the device is idle, and
//!   collects per-frame outputs.
//! - The **inference thread** ([`infer`]) owns the model.
//! - **Publishers** postprocess finished jobs and publish result + XACK atomically, retrying while
//!   Redis is away; failed frames are left pending for a retry.
//!
//! Shutdown: the token stops the fetcher; dropping senders drains every stage in order; after
//! `shutdown.grace_seconds` whatever is left stays pending for other workers.

pub mod infer;
pub mod prepare;
pub mod result;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{ConfigError, InputError, ModelError, QueueError};
use crate::http::{self, Health};
use crate::image::CROP_BYTES;
use crate::job::{JobResult, Timings};
use crate::metrics::{self as m, outcome};
use crate::model::{self, FrameOutput, TorchModel};
use crate::queue::{DeadLetter, Entry, Queue, Written};
use infer::{Batch, BatchDone};
use prepare::{Prepared, Rejected};
use result::Origin;

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
}

/// A fetched entry, the permit that bounds the pipeline, and its lease.
struct Delivery {
    entry: Entry,
    fetched: Instant,
    queue_wait_ms: f64,
    _permit: OwnedSemaphorePermit,
    _lease: Lease,
}

/// The ids of the entries this worker holds; their idle time is reset periodically so other
/// workers do not reclaim jobs that are merely queued here.
#[derive(Clone, Default)]
struct Leases(Arc<Mutex<HashSet<String>>>);

/// Membership of one entry in [`Leases`], ended when the delivery is dropped (published,
/// dead-lettered, failed or abandoned).
struct Lease {
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

/// What the stages share.
struct Ctx {
    config: Config,
    queue: Queue,
    health: Arc<Health>,
    origin: Origin,
    /// Cancelled when the grace period is over: publishers stop retrying.
    hard_stop: CancellationToken,
}

/// Runs one worker until `shutdown` is cancelled, then drains within the grace period.
/// Loads the model (on its own thread), warms up, serves `/metrics`, `/healthz`, `/readyz`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    let handle = m::install();
    let health = Arc::new(Health::default());
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
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(config.pipeline.queue_depth);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<BatchDone>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let device = model::resolve_device(config.device())?;
    let path = config.model.path.clone();
    let infer_thread = infer::spawn(
        move || TorchModel::load(&path, device),
        config.queue.max_batch,
        config.gpu.clone(),
        health.clone(),
        batch_rx,
        done_tx,
        ready_tx,
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
        "torch" => crate::check::torch_version(),
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
        worker: crate::telemetry::worker_id(),
        device: loaded.device.clone(),
        model: loaded.meta.label(),
    };
    tracing::info!(
        redis = %crate::config::redact_url(&config.redis.url),
        stream = %queue.keys().jobs,
        consumer = %queue.consumer(),
        device = %origin.device,
        model = %origin.model,
        max_batch = config.queue.max_batch,
        "worker started"
    );
    let ctx = Arc::new(Ctx {
        config,
        queue,
        health: health.clone(),
        origin,
        hard_stop: CancellationToken::new(),
    });

    // Wait for Redis (the group must exist before the first read).
    let mut backoff = Backoff::default();
    loop {
        match ctx.queue.ensure_group().await {
            Ok(()) => break,
            Err(e) => {
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
    let fetcher = tokio::spawn(fetch(
        ctx.clone(),
        Arc::new(Semaphore::new(inflight)),
        leases.clone(),
        deliver_tx,
        shutdown.clone(),
    ));
    let renewer = tokio::spawn(renew_leases(ctx.clone(), leases, gauges_stop.clone()));
    let decoders = tokio::spawn(decode(ctx.clone(), deliver_rx, prepared_tx));
    let coordinator = tokio::spawn(coordinate(ctx.clone(), prepared_rx, batch_tx, done_rx));

    shutdown.cancelled().await;
    let grace = Duration::from_secs(ctx.config.shutdown.grace_seconds);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight jobs"
    );
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
    if drained.is_ok() {
        let _ = tokio::task::spawn_blocking(move || infer_thread.join()).await;
    }
    http_stop.cancel();
    let _ = http_task.await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Exponential backoff that logs once per outage.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn failed(&mut self, e: &QueueError) {
        if self.failures == 0 {
            tracing::warn!(error = %e, "redis unavailable; retrying with backoff");
        }
        self.failures += 1;
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "redis reachable again");
        }
        self.failures = 0;
    }

    fn delay(&self) -> Duration {
        let ms = 50u64 << self.failures.min(7);
        Duration::from_millis(ms.min(5_000))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads new entries and reclaims orphaned ones, as many as there are free permits.
async fn fetch(
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
            let (d, prepared) = tokio::task::spawn_blocking(move || {
                let p = prepare::prepare(&d.entry, &limits);
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

/// A job inside the coordinator.
struct InFlight {
    delivery: Delivery,
    prepared: Prepared,
    outputs: Vec<Option<FrameOutput>>,
    remaining: usize,
    failure: Option<String>,
    inference_ms: f64,
}

/// Packs crops into batches, dispatches them, collects outputs, hands finished jobs to
/// publishers. Returns the publishers still running once its input is exhausted.
async fn coordinate(
    ctx: Arc<Ctx>,
    mut input: mpsc::Receiver<(Delivery, Prepared)>,
    batches: mpsc::Sender<Batch>,
    mut done: mpsc::UnboundedReceiver<BatchDone>,
) -> JoinSet<()> {
    let max_batch = ctx.config.queue.max_batch;
    let mut jobs: HashMap<u64, InFlight> = HashMap::new();
    let mut waiting: VecDeque<(u64, usize)> = VecDeque::new();
    let mut running: HashMap<u64, Vec<(u64, usize)>> = HashMap::new();
    let mut publishers = JoinSet::new();
    let (mut next_job, mut next_batch) = (0u64, 0u64);
    let mut input_open = true;
    loop {
        // Dispatch while there is a full batch, or anything at all and the device is idle.
        while !waiting.is_empty() && (waiting.len() >= max_batch || running.is_empty()) {
            let Ok(permit) = batches.try_reserve() else {
                break;
            };
            let items: Vec<(u64, usize)> = waiting.drain(..waiting.len().min(max_batch)).collect();
            let mut crops = Vec::with_capacity(items.len() * CROP_BYTES);
            let mut vertices = false;
            for (job, person) in &items {
                let j = &jobs[job];
                vertices |= j.prepared.job.include.vertices;
                crops.extend_from_slice(
                    &j.prepared.crops[person * CROP_BYTES..(person + 1) * CROP_BYTES],
                );
            }
            permit.send(Batch {
                id: next_batch,
                n: items.len(),
                crops,
                vertices,
            });
            running.insert(next_batch, items);
            next_batch += 1;
        }
        if !input_open && jobs.is_empty() {
            break;
        }
        tokio::select! {
            msg = input.recv(), if input_open => match msg {
                Some((delivery, prepared)) => {
                    let n = prepared.people.len();
                    waiting.extend((0..n).map(|p| (next_job, p)));
                    jobs.insert(next_job, InFlight {
                        delivery, prepared, outputs: vec![None; n], remaining: n,
                        failure: None, inference_ms: 0.0,
                    });
                    next_job += 1;
                }
                None => input_open = false,
            },
            msg = done.recv() => {
                let Some(b) = msg else { break };
                let items = running.remove(&b.id).unwrap_or_default();
                for ((job, person), frame) in items.into_iter().zip(b.frames) {
                    let Some(j) = jobs.get_mut(&job) else { continue };
                    match frame {
                        Ok(out) => j.outputs[person] = Some(out),
                        Err(e) => j.failure = Some(e),
                    }
                    j.inference_ms += b.seconds * 1e3 / j.outputs.len().max(1) as f64;
                    j.remaining -= 1;
                    if j.remaining == 0 {
                        let j = jobs.remove(&job).expect("present");
                        publishers.spawn(finish(ctx.clone(), j));
                    }
                }
                while publishers.try_join_next().is_some() {}
            }
        }
    }
    publishers
}

/// Publishes a finished job (or leaves a failed one pending for a retry).
async fn finish(ctx: Arc<Ctx>, j: InFlight) {
    let InFlight {
        delivery,
        prepared,
        outputs,
        failure,
        inference_ms,
        ..
    } = j;
    let span = tracing::info_span!("job", job_id = prepared.job.echo.job_id.as_deref().unwrap_or(""), entry = %delivery.entry.id);
    async move {
        if let Some(error) = failure {
            counter!(m::JOBS, "outcome" => outcome::FAILED).increment(1);
            tracing::warn!(%error, deliveries = delivery.entry.deliveries, "inference failed; the job stays pending for a retry");
            return;
        }
        let t = Instant::now();
        let echo = &prepared.job.echo;
        let vertices = prepared.job.include.vertices;
        let people = prepared
            .people
            .iter()
            .zip(outputs)
            .map(|(p, o)| result::person(p, o.expect("every frame has an output"), prepared.image_size, vertices))
            .collect();
        let timings = Timings {
            queue_wait: delivery.queue_wait_ms,
            decode: prepared.decode_ms,
            inference: inference_ms,
            total: delivery.fetched.elapsed().as_secs_f64() * 1e3,
        };
        let r = result::ok_result(&delivery.entry.id, echo, prepared.image_size, people, timings, &ctx.origin);
        let json = r.to_json();
        histogram!(m::STAGE_DURATION, "stage" => m::stage::POSTPROCESS).record(t.elapsed().as_secs_f64());
        let reply = ctx.queue.keys().reply_stream(echo.reply_to.as_deref()).to_string();
        let job_id = echo.job_id.clone().unwrap_or_default();
        let t = Instant::now();
        let published = retry(&ctx, || ctx.queue.publish(&delivery.entry.id, &reply, &job_id, &json)).await;
        histogram!(m::STAGE_DURATION, "stage" => m::stage::PUBLISH).record(t.elapsed().as_secs_f64());
        match published {
            Some(Written::Done) => {
                tracing::debug!(reply = %reply, people = prepared.people.len(), "published");
                counter!(m::JOBS, "outcome" => outcome::OK).increment(1);
                histogram!(m::JOB_DURATION).record(delivery.fetched.elapsed().as_secs_f64());
            }
            Some(Written::NotPending) => {
                tracing::debug!("another worker finished this job first; result dropped");
            }
            Some(Written::ReplyNotAStream) => {
                let error = InputError::InvalidJob(format!("reply_to {reply:?} names a key that is not a stream"));
                let rejected = Rejected { error, echo: echo.clone(), image_size: Some(prepared.image_size) };
                reject(ctx.clone(), delivery, Box::new(rejected)).await;
            }
            None => {}
        }
    }
    .instrument(span)
    .await
}

/// Bad input: error result + dead letter + ack, at once.
async fn reject(ctx: Arc<Ctx>, d: Delivery, r: Box<Rejected>) {
    let code = r.error.code();
    let message = r.error.to_string();
    tracing::info!(entry = %d.entry.id, job_id = r.echo.job_id.as_deref().unwrap_or(""), code, "rejected bad input");
    let mut result = JobResult::error(&d.entry.id, &r.echo, code, message.clone());
    result.image_size = r.image_size;
    fill_origin(&mut result, &ctx.origin);
    result.timings_ms.queue_wait = d.queue_wait_ms;
    result.timings_ms.total = d.fetched.elapsed().as_secs_f64() * 1e3;
    if dead_letter(&ctx, &d, &r.echo, &result, code, &message).await {
        counter!(m::JOBS, "outcome" => outcome::INVALID_INPUT).increment(1);
    }
}

/// Delivered too often: dead letter with `too_many_deliveries`.
async fn too_many_deliveries(ctx: Arc<Ctx>, d: Delivery) {
    let echo = d
        .entry
        .field("job")
        .map(
            |raw| match crate::job::parse(raw, true, &ctx.config.limits) {
                Ok(j) => j.echo,
                Err((_, echo)) => echo,
            },
        )
        .unwrap_or_default();
    let message = format!(
        "delivered {} times (max_deliveries = {}); giving up",
        d.entry.deliveries, ctx.config.queue.max_deliveries
    );
    tracing::warn!(entry = %d.entry.id, deliveries = d.entry.deliveries, "dead-lettering a job delivered too often");
    let mut result = JobResult::error(&d.entry.id, &echo, "too_many_deliveries", message.clone());
    fill_origin(&mut result, &ctx.origin);
    if dead_letter(&ctx, &d, &echo, &result, "too_many_deliveries", &message).await {
        counter!(m::JOBS, "outcome" => outcome::DEAD_LETTERED).increment(1);
    }
}

fn fill_origin(r: &mut JobResult, o: &Origin) {
    r.worker = o.worker.clone();
    r.device = o.device.clone();
    r.model = o.model.clone();
}

async fn dead_letter(
    ctx: &Ctx,
    d: &Delivery,
    echo: &crate::job::Echo,
    result: &JobResult,
    code: &str,
    message: &str,
) -> bool {
    let json = result.to_json();
    let job_id = echo.job_id.clone().unwrap_or_default();
    let mut reply = ctx
        .queue
        .keys()
        .reply_stream(echo.reply_to.as_deref())
        .to_string();
    loop {
        let letter = || {
            ctx.queue.dead_letter(DeadLetter {
                entry: &d.entry,
                reply_to: &reply,
                job_id: &job_id,
                result_json: &json,
                code,
                message,
                worker: &ctx.origin.worker,
            })
        };
        match retry(ctx, letter).await {
            Some(Written::Done) => return true,
            Some(Written::ReplyNotAStream) if reply != ctx.queue.keys().results => {
                // The job's reply_to is unusable: answer on the default stream instead.
                reply = ctx.queue.keys().results.clone();
            }
            _ => return false,
        }
    }
}

/// Runs a Redis step until it succeeds, backing off while Redis is away; gives up only when the
/// grace period is over (the job then stays pending: nothing was acknowledged).
async fn retry<T, F, Fut>(ctx: &Ctx, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match step().await {
            Ok(v) => {
                if backoff.failures > 0 {
                    backoff.recovered();
                    ctx.health.set(&ctx.health.redis_ok, true);
                }
                return Some(v);
            }
            Err(e) => {
                backoff.failed(&e);
                ctx.health.set(&ctx.health.redis_ok, false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = ctx.hard_stop.cancelled() => return None,
                }
            }
        }
    }
}

/// Keeps the entries this worker holds from looking orphaned: resets their idle time three
/// times per `claim_idle_ms`.
async fn renew_leases(ctx: Arc<Ctx>, leases: Leases, stop: CancellationToken) {
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

/// Queue gauges and idle GPU gauges, every `gauge_interval_ms`.
async fn sample_gauges(ctx: Arc<Ctx>, cuda: Option<usize>, stop: CancellationToken) {
    let every = Duration::from_millis(ctx.config.queue.gauge_interval_ms);
    let gpu = cuda.map(m::GpuGauges::new);
    let stream = ctx.queue.keys().jobs.clone();
    loop {
        match ctx.queue.stats().await {
            Ok(s) => {
                gauge!(m::QUEUE_LENGTH, "stream" => stream.clone()).set(s.length as f64);
                gauge!(m::QUEUE_PENDING, "stream" => stream.clone()).set(s.pending as f64);
                gauge!(m::QUEUE_LAG, "stream" => stream.clone()).set(s.lag.unwrap_or(0) as f64);
                if !ctx.health.redis_ok.load(Ordering::Relaxed) {
                    ctx.health.set(&ctx.health.redis_ok, true);
                }
            }
            Err(_) => ctx.health.set(&ctx.health.redis_ok, false),
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
