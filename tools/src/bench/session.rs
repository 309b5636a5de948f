//! One worker in this process against a Redis of its own, as `demo` and `bench` drive it: a
//! throwaway `redis-server` (or a given URL), a unique key prefix, a free metrics port, jobs in,
//! results out, `/metrics` scraped over real HTTP, and nothing left running afterwards (also on
//! Ctrl-C: the first signal stops the session, a second one kills redis-server and exits).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use hmr2_client::{producer, Frame, JobResult, Keys};
use hmr2_worker::config::{redact_url, Config};
use hmr2_worker::RunError;

use crate::redis_server::{free_port, RedisServer};

/// The redis-server of a session, shared with the signal watcher so a second Ctrl-C can kill it.
pub type RedisHandle = Arc<Mutex<Option<RedisServer>>>;

/// A worker, its Redis and the connections to drive them.
pub struct Session {
    config: Config,
    redis: RedisHandle,
    redis_label: String,
    keys: Keys,
    conn: MultiplexedConnection,
    reader: MultiplexedConnection,
    last_result: String,
    token: CancellationToken,
    worker: Option<JoinHandle<Result<(), RunError>>>,
    metrics_addr: SocketAddr,
}

impl Session {
    /// Starts a throwaway `redis-server` (unless `redis_url` is given) and prepares `config` for
    /// an in-process worker: that Redis, the key prefix `<label>-<pid>-<ms>`, metrics on a free
    /// local port. The worker is not started yet.
    pub async fn open(
        mut config: Config,
        redis_url: Option<&str>,
        label: &str,
    ) -> anyhow::Result<Self> {
        let (redis, url, redis_label) = match redis_url {
            Some(u) => (None, u.to_string(), redact_url(u)),
            None => {
                let server = tokio::task::spawn_blocking(RedisServer::start).await??;
                let label = format!("throwaway redis-server on port {}", server.port());
                let url = server.url();
                (Some(server), url, label)
            }
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        config.redis.url = url;
        config.queue.prefix = format!("{label}-{}-{stamp}", std::process::id());
        let port = free_port()?;
        config.http.listen = format!("127.0.0.1:{port}");
        config.validate()?;
        hmr2_worker::install_tls_provider();
        let client = redis::Client::open(config.redis.url.as_str())?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {redis_label}"))?;
        let cfg = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let reader = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        Ok(Session {
            keys: Keys::new(&config.queue.prefix),
            metrics_addr: config.http.listen.parse()?,
            config,
            redis: Arc::new(Mutex::new(redis)),
            redis_label,
            conn,
            reader,
            last_result: "0-0".into(),
            token: CancellationToken::new(),
            worker: None,
        })
    }

    /// The worker's effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where Redis is, for people (password redacted).
    pub fn redis_label(&self) -> &str {
        &self.redis_label
    }

    /// The session's redis-server, for [`watch_signals`].
    pub fn redis_handle(&self) -> RedisHandle {
        self.redis.clone()
    }

    /// A handle that adds jobs to the session's job stream (on a task of its own, if need be).
    pub fn producer(&self) -> Producer {
        Producer {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
        }
    }

    /// Starts the worker (`hmr2_worker::run`) on a task and waits until `/readyz` answers 200:
    /// model loaded, warmed up, Redis reachable; it is fetching from that moment on.
    pub async fn start_worker(&mut self) -> anyhow::Result<()> {
        let worker = tokio::spawn(hmr2_worker::run(self.config.clone(), self.token.clone()));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if worker.is_finished() {
                return match worker.await? {
                    Ok(()) => Err(anyhow::anyhow!("the worker stopped before it was ready")),
                    Err(e) => Err(e).context("the worker did not start"),
                };
            }
            if let Ok((200, _)) = http_get(self.metrics_addr, "/readyz").await {
                self.worker = Some(worker);
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the worker was not ready within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// [`Session::start_worker`], unless `stop` (Ctrl-C) comes first: the warm-up still
    /// finishes (a second Ctrl-C exits at once), then the worker is stopped and this is an
    /// `interrupted` error; a worker dropped while it loads the model would be left running as
    /// the process ends. `on_interrupt` runs when the Ctrl-C is seen (to say what happens).
    pub async fn start_worker_or_stop(
        &mut self,
        stop: &CancellationToken,
        on_interrupt: impl FnOnce(),
    ) -> anyhow::Result<()> {
        let (started, interrupted) = {
            let warm_up = self.start_worker();
            tokio::pin!(warm_up);
            tokio::select! {
                r = &mut warm_up => (r, false),
                _ = stop.cancelled() => {
                    on_interrupt();
                    (warm_up.await, true)
                }
            }
        };
        if let Err(e) = started {
            let _ = self.stop().await;
            return Err(e);
        }
        if interrupted {
            self.stop().await?;
            anyhow::bail!("interrupted");
        }
        Ok(())
    }

    /// Waits up to `block_ms` for results, returns those that came, oldest first. A result that
    /// does not follow the wire contract is an error.
    pub async fn read_results(&mut self, block_ms: usize) -> anyhow::Result<Vec<JobResult>> {
        let opts = StreamReadOptions::default().count(512).block(block_ms);
        let reply: Option<StreamReadReply> = self
            .reader
            .xread_options(&[&self.keys.results], &[&self.last_result], &opts)
            .await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for id in key.ids {
                if let Some(redis::Value::BulkString(b)) = id.map.get("result") {
                    let text = String::from_utf8_lossy(b);
                    let result = JobResult::from_json(&text).with_context(|| {
                        format!(
                            "result {} in {} is not a v1 result",
                            id.id, self.keys.results
                        )
                    })?;
                    out.push(result);
                }
                self.last_result = id.id;
            }
        }
        Ok(out)
    }

    /// For each tracked video: how long after its last frame's result its `done` entry was
    /// written, and its tracking time (milliseconds), from the stream ids (Redis's clock, so no
    /// clock of this process is involved). Waits up to `within` for every `done`.
    pub async fn video_latencies(
        &mut self,
        videos: &[String],
        within: Duration,
    ) -> anyhow::Result<Vec<(f64, f64)>> {
        let ms = |id: &str| {
            id.split('-')
                .next()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let results: redis::streams::StreamRangeReply =
            self.conn.xrange_all(&self.keys.results).await?;
        let mut last_result: std::collections::HashMap<String, f64> = Default::default();
        for e in &results.ids {
            let job: String = e.get("job_id").unwrap_or_default();
            if let Some((video, _)) = job.rsplit_once(':') {
                let t = last_result.entry(video.to_string()).or_default();
                *t = t.max(ms(&e.id));
            }
        }
        let deadline = Instant::now() + within;
        let mut out = Vec::with_capacity(videos.len());
        for v in videos {
            let stream = self
                .keys
                .video_output(v, None)
                .context("a default video stream")?;
            let done = loop {
                let last: redis::streams::StreamRangeReply =
                    self.conn.xrevrange_count(&stream, "+", "-", 1).await?;
                if let Some(e) = last.ids.into_iter().next() {
                    if let Some(d) = e.get::<String>("done") {
                        break (e.id, d);
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no done entry for video {v} within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let body: hmr2_client::VideoDone = serde_json::from_str(&done.1)?;
            let after = ms(&done.0) - last_result.get(v).copied().unwrap_or(0.0);
            out.push((after, body.timings_ms.tracking));
        }
        Ok(out)
    }

    /// The worker's `/metrics`, fetched over HTTP.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        match http_get(self.metrics_addr, "/metrics").await? {
            (200, body) => Ok(body),
            (code, _) => Err(anyhow::anyhow!("/metrics answered {code}")),
        }
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Stops the worker (jobs in flight finish within `shutdown.grace_seconds`), deletes the
    /// session's keys from a shared Redis, and stops a throwaway redis-server.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.token.cancel();
        let result = match self.worker.take() {
            Some(w) => w.await?.map_err(anyhow::Error::from),
            None => Ok(()),
        };
        let server = self.redis.lock().expect("not poisoned").take();
        match server {
            Some(mut s) => tokio::task::spawn_blocking(move || s.kill()).await?,
            None => {
                let k = &self.keys;
                let _: redis::RedisResult<()> =
                    self.conn.del(&[&k.jobs, &k.results, &k.dead]).await;
            }
        }
        result
    }
}

/// Adds jobs to a session's job stream.
#[derive(Clone)]
pub struct Producer {
    conn: MultiplexedConnection,
    keys: Keys,
}

impl Producer {
    /// Adds `frames` to the job stream, pipelined.
    pub async fn enqueue(&mut self, frames: &[Frame], raw: bool) -> anyhow::Result<()> {
        producer::add_all(&mut self.conn, &self.keys, frames, raw, |_| {}).await?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // An early return (an error) must not leave the worker fetching; the redis-server is
        // killed when the last handle on it drops.
        self.token.cancel();
    }
}

/// Cancels `stop` on the first SIGINT/SIGTERM; on the second, kills the redis-server and exits
/// at once (status 130).
pub fn watch_signals(redis: RedisHandle) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(hmr2_worker::signal::stop_on_signal(
        stop.clone(),
        move || {
            if let Some(mut s) = redis.lock().ok().and_then(|mut r| r.take()) {
                s.kill();
            }
        },
    ));
    stop
}

/// A plain HTTP/1.1 GET on the loopback (status, body); enough for `/metrics` and `/readyz`.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP GET timed out"))??;
    parse_response(&buf)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

fn parse_response(buf: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((code, body.to_string()));
    }
    let (mut rest, mut out) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some((code, out));
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain), Some((200, "hello".into())));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((503, "abcde".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }
}
