//! Start-up of one worker, in order: the HTTP listener (so probes answer while the model
//! loads), a first look at Redis (credentials Redis refuses end start-up at once; a Redis not
//! there yet is said at once, and waited for below), the inference thread (load + warm-up
//! before anything is fetched), the metrics that must exist from the start, the consumer groups
//! (waiting for Redis), the model hash.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ctx::{Ctx, Stops};
use super::delivery::PixelBudget;
use super::infer::{self, Done, Loaded, Models, Work};
use super::model_info;
use super::result::Origin;
use super::retry::Backoff;
use crate::config::{worker_id, Config};
use crate::detector::{self, Detector, DetectorMeta};
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
    /// Redis refused the credentials of `redis.url`: no retry fixes that.
    #[error("Redis at {seed} refused the credentials of redis.url (env HMR2_REDIS__URL): {reply}")]
    RedisRefused { seed: String, reply: String },
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

    // Redis first: a refused password ends start-up now, not after the model has loaded.
    let queue = Queue::new(&config)?;
    if let Err(e) = check_redis(&config).await {
        stops.all.cancel();
        return Err(e);
    }

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
    let mut config = config;
    let threshold = announce_detector(&mut config, loaded.detector.as_ref());

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
        score_threshold = threshold,
        max_batch = config.queue.max_batch,
        "worker started"
    );
    let pixels = PixelBudget::new(
        config.limits.decoded_bytes_in_flight(),
        config.limits.largest_frame_bytes(),
    );
    let ctx = Arc::new(Ctx {
        config,
        queue,
        health,
        origin,
        stops,
        jobs: TaskTracker::new(),
        detector_input: loaded.detector.as_ref().map(|d| d.input_size),
        whole_frames: Default::default(),
        pixels,
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

/// Looks at every seed of `redis.url` at once (within `redis.connect_timeout_ms`): connects,
/// sends the URL's credentials, pings. A reply that refuses them (WRONGPASS, NOAUTH, or any
/// error to AUTH) is [`RunError::RedisRefused`]; a seed that cannot be reached is logged as an
/// error naming the setting, and start-up goes on (the consumer groups wait for Redis).
pub(crate) async fn check_redis(config: &Config) -> Result<(), RunError> {
    let timeout = Duration::from_millis(config.redis.connect_timeout_ms);
    let mut seeds = tokio::task::JoinSet::new();
    for url in config.redis.urls() {
        let url = url.to_string();
        seeds.spawn(async move {
            let seen = look_at_redis(&url, timeout).await;
            (crate::config::redact_url(&url), seen)
        });
    }
    let mut refused = None;
    while let Some(joined) = seeds.join_next().await {
        let Ok((seed, seen)) = joined else { continue };
        match seen {
            Seen::Fine => {}
            Seen::Refused(reply) => refused = Some(RunError::RedisRefused { seed, reply }),
            Seen::Unreachable(error) => tracing::error!(
                redis = %seed,
                %error,
                "Redis is not reachable (setting redis.url, env HMR2_REDIS__URL): the model \
                 loads meanwhile, and the worker waits for Redis, not ready"
            ),
        }
    }
    refused.map_or(Ok(()), Err)
}

/// What one look at a Redis node saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Fine,
    /// The node refused the credentials: its reply.
    Refused(String),
    /// Not reachable, or not answering (yet): why.
    Unreachable(String),
}

/// Connects to `url` without its credentials, then sends them with `AUTH` (so the node's own
/// reply, such as WRONGPASS, is what the operator reads) and pings.
async fn look_at_redis(url: &str, timeout: Duration) -> Seen {
    let Ok(mut u) = url::Url::parse(url) else {
        return Seen::Unreachable("cannot parse the URL".into());
    };
    let user = percent_decoded(u.username());
    let password = u.password().map(percent_decoded);
    // The bare node: no credentials, no database (SELECT needs them), RESP2 (HELLO 3 does).
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_path("");
    let query: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "protocol")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.set_query(None);
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    let server_reply = |e: &redis::RedisError| {
        e.code().map(|code| match e.detail() {
            Some(detail) => format!("{code} {detail}"),
            None => code.to_string(),
        })
    };
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let conn = match redis::Client::open(u.as_str()) {
        Ok(client) => {
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
        }
        Err(e) => Err(e),
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => return Seen::Unreachable(crate::error::QueueError::from(e).to_string()),
    };
    if let Some(password) = password {
        let mut auth = redis::cmd("AUTH");
        if !user.is_empty() {
            auth.arg(&user);
        }
        auth.arg(&password);
        if let Err(e) = auth.query_async::<()>(&mut conn).await {
            return match server_reply(&e) {
                Some(reply) => Seen::Refused(reply),
                None => Seen::Unreachable(crate::error::QueueError::from(e).to_string()),
            };
        }
    }
    match redis::cmd("PING").query_async::<String>(&mut conn).await {
        Ok(_) => Seen::Fine,
        Err(e) => match server_reply(&e) {
            Some(reply) if e.code() == Some("NOAUTH") => Seen::Refused(reply),
            _ => Seen::Unreachable(crate::error::QueueError::from(e).to_string()),
        },
    }
}

/// `s` with its `%XX` escapes decoded (URL user names and passwords).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves `detector.score_threshold` (the configuration's, else the file's recommendation,
/// else the default) into `config`, and warns when jobs without boxes will not be answered with
/// real people: no detector (whole-frame crops give near-mean poses) or one that finds only the
/// demo's synthetic figures. Returns the threshold in use, if a detector is loaded.
fn announce_detector(config: &mut Config, detector: Option<&DetectorMeta>) -> Option<f32> {
    let Some(meta) = detector else {
        tracing::warn!(
            "no person detector (detector.path, env HMR2_DETECTOR__PATH, is empty): every job \
             without boxes is answered with one whole-frame person, a near-mean pose on real \
             footage; export one with `python -m models.export_detector` (docs/operations.md)"
        );
        return None;
    };
    let (threshold, source) = detector::score_threshold(&config.detector, meta);
    config.detector.score_threshold = Some(threshold);
    tracing::info!(
        detector = %meta.label(),
        score_threshold = threshold,
        from = source.describe(),
        nms_iou = ?meta.iou_threshold,
        "person detector loaded"
    );
    if meta.synthetic_only {
        tracing::warn!(
            detector = %meta.label(),
            "the person detector finds only the demo's synthetic figures, not people in real \
             footage (its meta() says synthetic_only): export a real one with `python -m \
             models.export_detector --arch rtdetr` (models/README.md)"
        );
    }
    Some(threshold)
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
    counter!(m::FRAMES_TRUNCATED).increment(0);
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
    let mut backoff = Backoff::new("create_group");
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
                ctx.health
                    .set(Input::RedisRead, Err(format!("{}: {e}", e.meaning())));
                backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = shutdown.cancelled() => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_percent_decoded() {
        assert_eq!(percent_decoded("p%40ss%3Aw0rd"), "p@ss:w0rd");
        assert_eq!(percent_decoded("plain"), "plain");
        assert_eq!(percent_decoded("50%"), "50%");
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
    }
}
