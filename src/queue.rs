//! The Redis Streams protocol (DESIGN §3): every key name, every command the worker sends, and
//! the atomic steps as Lua scripts beside this file.
//!
//! Delivery is at-least-once: a job is acknowledged only in the same atomic step that publishes
//! its result (`publish.lua`) or its dead letter (`dead_letter.lua`); both refuse to write when
//! the entry is no longer pending, so a job finished by another worker is not answered twice,
//! and both check every key they write before the first write, so neither stops half-way.
//! Entries are read through `read.lua`, which sends the worker at most its limits of each.
//!
//! Here: [`Queue`] and its connections (`conn`). Beside it: `entry` ([`Entry`], and what an
//! entry keeps of itself once decoded or dead-lettered) and `reply` (decoding each command's
//! reply, behind `FromRedisValue` types).

use std::time::Duration;

use redis::streams::StreamInfoGroupsReply;
use redis::{AsyncCommands, Script};

use crate::config::Config;
use crate::error::QueueError;

/// Selects rustls's crypto provider for `rediss://` connections (once per process). The system
/// trust store is used; `SSL_CERT_FILE` points it at a private CA.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

mod conn;
mod entry;
mod reply;
mod videos;

pub use conn::Conn;
use conn::{Pool, Target};
pub use entry::Entry;
/// Every key and name the worker uses, from the prefix (defined by the wire contract).
pub(crate) use hmr2_client::{Keys, Layout};
pub(crate) use reply::Written;
use reply::{Bounded, OldestPending};
pub(crate) use videos::{OutputWritten, RecordFrame, TrackJob, VideoOutput};

/// Queue gauges: backlog, in-flight, and not-yet-delivered entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub length: u64,
    pub pending: u64,
    pub lag: Option<u64>,
}

/// A dead letter to write.
pub struct DeadLetter<'a> {
    pub entry: &'a Entry,
    pub reply_to: &'a str,
    pub job_id: &'a str,
    pub result_json: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub worker: &'a str,
    /// The frame of a tracked video to record with the letter.
    pub video: Option<RecordFrame<'a>>,
}

/// A script that writes and frees: Redis runs it while over `maxmemory` only when it frees at
/// least what it adds (the entry it deletes against the result and letter it writes), so a
/// Redis that producers filled up drains by itself, and a step that would grow it waits.
#[derive(Clone)]
struct OomAware {
    /// `#!lua`: refused whole while Redis is out of memory.
    plain: Script,
    /// `#!lua flags=allow-oom`: runs while Redis is out of memory.
    freeing: Script,
}

impl OomAware {
    fn new(body: &str) -> Self {
        // Every step that answers a job may record a frame of a tracked video.
        let video = include_str!("queue/video.lua");
        OomAware {
            plain: Script::new(&format!("#!lua\n{video}{body}")),
            freeing: Script::new(&format!("#!lua flags=allow-oom\n{video}{body}")),
        }
    }

    /// The script for a step that deletes an entry of `frees` bytes and writes `adds`.
    fn for_sizes(&self, frees: u64, adds: u64) -> &Script {
        // Each written entry costs some bookkeeping beyond its bytes.
        const OVERHEAD: u64 = 256;
        if adds + OVERHEAD <= frees {
            &self.freeing
        } else {
            &self.plain
        }
    }
}

/// The first pause of a read that polls an empty shard ([`Shard::read_new`]).
const FIRST_POLL: Duration = Duration::from_millis(2);

/// The longest pause of a read that polls an empty shard: how late an idle worker may see a
/// new job, and what an idle worker costs Redis (one script call per shard each pause).
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(50);

/// What releasing this worker's entries leaves behind (see [`Shard::release`]).
pub(crate) const RELEASED_IDLE_MS: u64 = 365 * 24 * 3600 * 1000;

/// A connection of its own to the configured Redis (one node, or the cluster of `redis.url`'s
/// seed nodes), for producers and tools: commands are routed by key on a cluster. Replies may
/// take [`response_timeout`]: keep a `BLOCK` below that.
pub async fn connect(config: &Config) -> Result<Conn, QueueError> {
    install_tls_provider();
    conn::dedicated(
        &Target::from_config(config)?,
        Duration::from_millis(config.redis.connect_timeout_ms),
        response_timeout(config),
    )
    .await
}

/// How long a reply may take: long enough for `max_batch` entries of `max_job_bytes` at a
/// slow 25 MB/s, plus 5 s; `redis.response_timeout_ms` overrides it.
pub(crate) fn response_timeout(config: &Config) -> Duration {
    if config.redis.response_timeout_ms > 0 {
        return Duration::from_millis(config.redis.response_timeout_ms);
    }
    let bytes = config.queue.max_batch as u64 * config.limits.max_job_bytes as u64;
    Duration::from_secs(5) + Duration::from_millis(bytes / 25_000)
}

/// The worker's handle on Redis (one node or a cluster): a pool for short commands, and a
/// factory for the dedicated connections of the readers, one per shard. Every
/// per-shard command goes through [`Queue::shard`]; each touches that shard's slot only.
#[derive(Clone)]
pub struct Queue {
    target: Target,
    pool: Pool,
    layout: Layout,
    consumer: String,
    block_ms: u64,
    connect_timeout: Duration,
    response_timeout: Duration,
    claim_idle_ms: u64,
    results_maxlen: u64,
    dead_maxlen: u64,
    reply_ttl_s: u64,
    video_ttl_s: u64,
    dead_keep_image: bool,
    publish: OomAware,
    videos: videos::VideoScripts,
    dead_letter: OomAware,
    read: Script,
    /// `read.lua`'s bounds: the `job` and `image` limits.
    max_job_bytes: usize,
    max_image_bytes: usize,
    renew: Script,
    release: Script,
    forget_consumer: Script,
    model_info: Script,
}

impl Queue {
    /// Prepares the pool (no connection is made yet). Pool connections wait up to
    /// [`response_timeout`] for a reply, so a reclaim of large entries is not cut short.
    pub fn new(config: &Config) -> Result<Self, QueueError> {
        install_tls_provider();
        let target = Target::from_config(config)?;
        let timeout = Duration::from_millis(config.redis.connect_timeout_ms);
        let response_timeout = response_timeout(config);
        let pool = Pool::new(
            &target,
            config.redis.pool_size,
            timeout,
            response_timeout,
            Duration::from_millis(config.redis.pool_idle_check_ms),
        )?;
        Ok(Queue {
            target,
            pool,
            layout: config.layout(),
            consumer: config.consumer_name(),
            block_ms: config.queue.block_ms,
            connect_timeout: timeout,
            response_timeout,
            claim_idle_ms: config.queue.claim_idle_ms,
            results_maxlen: config.queue.results_maxlen,
            dead_maxlen: config.queue.dead_maxlen,
            reply_ttl_s: config.queue.reply_ttl_s,
            video_ttl_s: config.video.ttl_s,
            videos: videos::VideoScripts::new(),
            dead_keep_image: config.queue.dead_keep_image,
            publish: OomAware::new(include_str!("queue/publish.lua")),
            dead_letter: OomAware::new(include_str!("queue/dead_letter.lua")),
            read: Script::new(include_str!("queue/read.lua")),
            max_job_bytes: config.limits.max_job_bytes,
            max_image_bytes: config.limits.max_image_bytes,
            renew: Script::new(include_str!("queue/renew.lua")),
            release: Script::new(include_str!("queue/release.lua")),
            forget_consumer: Script::new(include_str!("queue/forget_consumer.lua")),
            model_info: Script::new(include_str!("queue/model_info.lua")),
        })
    }

    /// The keys of every shard.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Shard `k` (below [`Queue::shards`]), the handle of every per-shard command.
    pub fn shard(&self, k: usize) -> Shard<'_> {
        Shard { queue: self, k }
    }

    /// How many shards the queue has.
    pub fn shards(&self) -> usize {
        self.layout.len()
    }

    /// Whether Redis is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// A pooled connection (routed by key on a cluster), for short commands.
    pub(crate) async fn conn(&self) -> Result<Conn, QueueError> {
        self.pool.get().await
    }

    /// A dedicated connection for one shard's reader, whose response timeout outlasts the
    /// transfer of a full read.
    pub async fn blocking_connection(&self) -> Result<Conn, QueueError> {
        conn::dedicated(
            &self.target,
            self.connect_timeout,
            Duration::from_millis(self.block_ms) + self.response_timeout,
        )
        .await
    }

    /// Creates every shard's consumer group (and stream) when missing.
    pub async fn ensure_groups(&self) -> Result<(), QueueError> {
        for k in 0..self.shards() {
            self.shard(k).ensure_group().await?;
        }
        Ok(())
    }

    /// The reply stream's expiry for a result going to `reply_to`: `queue.reply_ttl_s` for a
    /// per-job stream, none for a shard's default results stream (capped by MAXLEN instead).
    fn reply_ttl(&self, keys: &Keys, reply_to: &str) -> u64 {
        if reply_to == keys.results {
            0
        } else {
            self.reply_ttl_s
        }
    }

    /// Error result + dead-letter entry + acknowledgement, in one atomic step on the entry's
    /// shard. The dead letter carries the entry's fields (at most [`DEAD_LETTER_FIELDS`])
    /// without the frame, unless `queue.dead_keep_image`.
    pub async fn dead_letter(&self, d: DeadLetter<'_>) -> Result<Written, QueueError> {
        let keys = self.shard(d.entry.shard).keys();
        let fields = d.entry.dead_letter_fields(self.dead_keep_image);
        let adds = [d.result_json, d.job_id, d.message, d.worker, &d.entry.id]
            .iter()
            .map(|s| s.len())
            .chain(fields.iter().map(|(k, v)| k.len() + v.len()))
            .sum::<usize>() as u64
            + d.video.as_ref().map_or(0, RecordFrame::adds);
        let mut c = self.conn().await?;
        let mut inv = self
            .dead_letter
            .for_sizes(d.entry.size, adds)
            .prepare_invoke();
        inv.key(&keys.jobs)
            .key(&keys.dead)
            .arg(&keys.group)
            .arg(&d.entry.id)
            .arg(self.results_maxlen)
            .arg(self.dead_maxlen)
            .arg(d.job_id)
            .arg(d.result_json)
            .arg(d.code)
            .arg(d.message)
            .arg(d.entry.deliveries)
            .arg(d.worker)
            .arg(self.reply_ttl(keys, d.reply_to))
            .arg(d.reply_to);
        videos::video_block(&mut inv, keys, d.video.as_ref(), self.video_ttl_s);
        for (k, v) in fields {
            inv.arg(k).arg(v.as_ref());
        }
        Ok(inv.invoke_async(&mut c).await?)
    }

    /// Replaces the model hash (`{prefix}:model`) with `fields` in one atomic step.
    pub async fn publish_model_info(&self, fields: &[(&str, String)]) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut inv = self.model_info.prepare_invoke();
        inv.key(&self.shard(0).keys().model);
        for (k, v) in fields {
            inv.arg(*k).arg(v.as_str());
        }
        let () = inv.invoke_async(&mut c).await?;
        Ok(())
    }
}

/// One shard of the queue: every command for one shard's keys goes through it (and touches
/// that shard's slot only). Cheap to make and to copy: a reference and an index.
#[derive(Clone, Copy)]
pub struct Shard<'q> {
    queue: &'q Queue,
    k: usize,
}

impl<'q> Shard<'q> {
    /// Which shard this is.
    pub fn index(self) -> usize {
        self.k
    }

    /// The shard's keys.
    pub fn keys(self) -> &'q Keys {
        self.queue.layout.shard(self.k)
    }

    /// Creates the shard's consumer group (and the stream) when missing; an existing group is
    /// fine. The group starts at `0` so jobs enqueued before any worker existed are processed.
    pub async fn ensure_group(self) -> Result<(), QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        // Look first: creating needs a write, which Redis refuses when it is out of memory.
        let groups: Result<StreamInfoGroupsReply, _> = c.xinfo_groups(&keys.jobs).await;
        if let Ok(g) = groups {
            if g.groups.iter().any(|g| g.name == keys.group) {
                return Ok(());
            }
        }
        let r: Result<String, _> = c.xgroup_create_mkstream(&keys.jobs, &keys.group, "0").await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads up to `count` new entries of the shard, each bounded before it leaves Redis
    /// (`read.lua`: what an entry may cost the worker is its limits, see [`Entry::bounded`]).
    /// When `block` and the shard has nothing, polls for up to `block_ms` (a script cannot
    /// block): every [`FIRST_POLL`], doubling to [`IDLE_POLL`] while it stays empty.
    pub async fn read_new(
        self,
        conn: &mut Conn,
        count: usize,
        block: bool,
    ) -> Result<Vec<Entry>, QueueError> {
        let until = std::time::Instant::now() + Duration::from_millis(self.queue.block_ms);
        let mut pause = FIRST_POLL;
        loop {
            let entries = match self.read(conn, "new", count, "").await {
                Ok(Bounded::Entries(entries)) => entries,
                Ok(Bounded::Gone) => Vec::new(),
                Err(e) if e.server_code() == "NOGROUP" => {
                    // Redis lost the group (restart without persistence): recreate and read again.
                    self.ensure_group().await?;
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let now = std::time::Instant::now();
            if !entries.is_empty() || !block || now >= until {
                return Ok(on_shard(entries, self.k));
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(IDLE_POLL);
        }
    }

    /// One call of `read.lua` (see its header): `mode` `new` reads up to `n` entries, `claim`
    /// claims entry `id` when idle longer than `n` ms.
    async fn read(
        self,
        conn: &mut Conn,
        mode: &str,
        n: impl redis::ToRedisArgs,
        id: &str,
    ) -> Result<Bounded, QueueError> {
        let keys = self.keys();
        let q = self.queue;
        Ok(q.read
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(&q.consumer)
            .arg(mode)
            .arg(n)
            .arg(id)
            .arg(q.max_job_bytes)
            .arg(q.max_image_bytes)
            .arg(entry::KEPT_FIELD_BYTES)
            .arg(entry::KEPT_NAME_BYTES)
            .arg(entry::DEAD_LETTER_FIELDS)
            .invoke_async(conn)
            .await?)
    }

    /// The oldest entry of the shard idle longer than `claim_idle_ms` (its consumer
    /// presumably died), if any: its id and how often it was delivered. Claims nothing.
    pub async fn find_orphan(self) -> Result<Option<(String, u64)>, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&keys.jobs)
            .arg(&keys.group)
            .arg("IDLE")
            .arg(self.queue.claim_idle_ms)
            .arg("-")
            .arg("+")
            .arg(1);
        match cmd.query_async(&mut c).await {
            Ok(OldestPending(head)) => Ok(head),
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Claims one orphan of the shard found by [`Shard::find_orphan`] (only if it is still
    /// idle longer than `claim_idle_ms`: another worker may have taken it meanwhile). `None`
    /// when it was taken, or when it is gone from the stream (trimmed or deleted: then it is
    /// acknowledged).
    pub async fn claim_orphan(self, id: &str, delivered: u64) -> Result<Option<Entry>, QueueError> {
        let mut c = self.queue.conn().await?;
        match self
            .read(&mut c, "claim", self.queue.claim_idle_ms, id)
            .await?
        {
            Bounded::Entries(claimed) => {
                Ok(on_shard(claimed, self.k).into_iter().next().map(|mut e| {
                    e.deliveries = delivered + 1;
                    e
                }))
            }
            Bounded::Gone => Ok(None),
        }
    }

    /// Renews this worker's leases on the shard: resets the idle time of the entries it still
    /// holds, so no other worker reclaims jobs merely waiting in this worker's pipeline. An
    /// entry another worker has reclaimed meanwhile stays with it. Returns the ids no longer
    /// this worker's.
    pub async fn extend_lease(self, ids: &[String]) -> Result<Vec<String>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let lost: Vec<String> = self
            .queue
            .renew
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.queue.consumer)
            .arg(ids)
            .invoke_async(&mut c)
            .await?;
        Ok(lost)
    }

    /// Releases entries of the shard this worker will not run: any live worker's next claim
    /// takes them at once (they look idle for a year), and their delivery count is not
    /// raised. No ids = every entry pending on this consumer. Returns how many were released.
    pub async fn release(self, ids: &[String]) -> Result<u64, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let n: u64 = self
            .queue
            .release
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.queue.consumer)
            .arg(RELEASED_IDLE_MS)
            .arg(ids)
            .invoke_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Removes `consumer` from the shard's group when it holds no pending entry there; true
    /// when removed.
    pub async fn forget_consumer(self, consumer: &str) -> Result<bool, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let n: i64 = self
            .queue
            .forget_consumer
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(consumer)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Removes the shard's consumers that hold nothing and have been idle longer than
    /// `max_idle` (workers long gone); returns their names.
    pub async fn prune_consumers(self, max_idle: Duration) -> Result<Vec<String>, QueueError> {
        let keys = self.keys();
        let consumers: redis::streams::StreamInfoConsumersReply = {
            let mut c = self.queue.conn().await?;
            c.xinfo_consumers(&keys.jobs, &keys.group).await?
        };
        let mut removed = Vec::new();
        for c in consumers.consumers {
            if c.pending == 0
                && c.idle as u128 > max_idle.as_millis()
                && c.name != self.queue.consumer
                && self.forget_consumer(&c.name).await?
            {
                removed.push(c.name);
            }
        }
        Ok(removed)
    }

    /// Publishes a result and acknowledges (and deletes) its job on the shard in one atomic
    /// step. `reply_to` is in the shard's slot ([`Keys::accepts_reply_to`]).
    pub async fn publish(
        self,
        entry: &Entry,
        reply_to: &str,
        job_id: &str,
        result_json: &str,
        video: Option<&RecordFrame<'_>>,
    ) -> Result<Written, QueueError> {
        let keys = self.keys();
        let q = self.queue;
        let adds = (result_json.len() + job_id.len()) as u64 + video.map_or(0, RecordFrame::adds);
        let mut c = q.conn().await?;
        let mut inv = q.publish.for_sizes(entry.size, adds).prepare_invoke();
        inv.key(&keys.jobs)
            .arg(&keys.group)
            .arg(&entry.id)
            .arg(q.results_maxlen)
            .arg(job_id)
            .arg(result_json)
            .arg(q.reply_ttl(keys, reply_to))
            .arg(reply_to);
        videos::video_block(&mut inv, keys, video, q.video_ttl_s);
        Ok(inv.invoke_async(&mut c).await?)
    }

    /// Length, pending count and lag of the shard's job stream.
    pub async fn stats(self) -> Result<QueueStats, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let length: u64 = c.xlen(&keys.jobs).await?;
        let groups: Result<StreamInfoGroupsReply, _> = c.xinfo_groups(&keys.jobs).await;
        let mut stats = QueueStats {
            length,
            ..Default::default()
        };
        if let Ok(groups) = groups {
            if let Some(g) = groups.groups.into_iter().find(|g| g.name == keys.group) {
                stats.pending = g.pending as u64;
                // Acked entries are deleted, so what the stream holds beyond the pending ones
                // has not been delivered yet: exact, and never blind (XINFO's own `lag` is nil
                // whenever the last delivered entry is gone and older ones remain).
                stats.lag = Some(length.saturating_sub(stats.pending));
            }
        }
        Ok(stats)
    }
}

/// Marks entries as read from shard `k`.
fn on_shard(mut entries: Vec<Entry>, k: usize) -> Vec<Entry> {
    for e in &mut entries {
        e.shard = k;
    }
    entries
}
