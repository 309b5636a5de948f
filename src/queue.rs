//! The Redis Streams protocol (DESIGN §3): every key name, every command the worker sends, and
//! the atomic steps as Lua scripts beside this file.
//!
//! Delivery is at-least-once: a job is acknowledged only in the same atomic step that publishes
//! its result (`publish.lua`) or its dead letter (`dead_letter.lua`); both refuse to write when
//! the entry is no longer pending, so a job finished by another worker is not answered twice.
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

pub use conn::Conn;
use conn::{Pool, Target};
pub use entry::Entry;
/// Every key and name the worker uses, from the prefix (defined by the wire contract).
pub(crate) use hmr2_client::{Keys, Layout};
pub(crate) use reply::Written;
use reply::{Claimed, Gone, OldestPending, ReadReply};

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
}

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
/// factory for the dedicated connections that block in XREADGROUP, one per shard. Every
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
    dead_keep_image: bool,
    publish: Script,
    dead_letter: Script,
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
            dead_keep_image: config.queue.dead_keep_image,
            publish: Script::new(include_str!("queue/publish.lua")),
            dead_letter: Script::new(include_str!("queue/dead_letter.lua")),
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

    async fn conn(&self) -> Result<Conn, QueueError> {
        self.pool.get().await
    }

    /// A dedicated connection whose response timeout outlasts `XREADGROUP ... BLOCK` plus the
    /// transfer of a full read (a blocked command holds its connection: one per shard).
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
        let mut c = self.conn().await?;
        let mut inv = self.dead_letter.prepare_invoke();
        inv.key(&keys.jobs)
            .key(d.reply_to)
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
            .arg(self.reply_ttl(keys, d.reply_to));
        for (k, v) in d.entry.dead_letter_fields(self.dead_keep_image) {
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

    /// Reads up to `count` new entries of the shard, waiting up to `block_ms` for the first
    /// one when `block` (else answering at once). Entries are decoded one by one: a malformed
    /// one cannot hide its neighbours.
    pub async fn read_new(
        self,
        conn: &mut Conn,
        count: usize,
        block: bool,
    ) -> Result<Vec<Entry>, QueueError> {
        let keys = self.keys();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&keys.group)
            .arg(&self.queue.consumer)
            .arg("COUNT")
            .arg(count);
        if block {
            cmd.arg("BLOCK").arg(self.queue.block_ms);
        }
        cmd.arg("STREAMS").arg(&keys.jobs).arg(">");
        let reply: Result<ReadReply, _> = cmd.query_async(conn).await;
        match reply {
            Ok(ReadReply(entries)) => Ok(on_shard(entries, self.k)),
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost the group (restart without persistence): recreate and read again.
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
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
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.queue.consumer)
            .arg(self.queue.claim_idle_ms)
            .arg(id);
        let Claimed(claimed) = cmd.query_async(&mut c).await?;
        if let Some(mut e) = on_shard(claimed, self.k).into_iter().next() {
            e.deliveries = delivered + 1;
            return Ok(Some(e));
        }
        let Gone(gone) = redis::cmd("XRANGE")
            .arg(&keys.jobs)
            .arg(id)
            .arg(id)
            .query_async(&mut c)
            .await?;
        if gone {
            let _: u64 = c.xack(&keys.jobs, &keys.group, &[id]).await?;
        }
        Ok(None)
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
        entry_id: &str,
        reply_to: &str,
        job_id: &str,
        result_json: &str,
    ) -> Result<Written, QueueError> {
        let keys = self.keys();
        let mut c = self.queue.conn().await?;
        let written = self
            .queue
            .publish
            .key(&keys.jobs)
            .key(reply_to)
            .arg(&keys.group)
            .arg(entry_id)
            .arg(self.queue.results_maxlen)
            .arg(job_id)
            .arg(result_json)
            .arg(self.queue.reply_ttl(keys, reply_to))
            .invoke_async(&mut c)
            .await?;
        Ok(written)
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
