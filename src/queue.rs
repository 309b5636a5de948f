//! The Redis Streams protocol (DESIGN §3): every key name, every command the worker sends, and
//! the atomic steps as Lua scripts beside this file.
//!
//! Delivery is at-least-once: a job is acknowledged only in the same atomic step that publishes
//! its result (`publish.lua`) or its dead letter (`dead_letter.lua`); both refuse to write when
//! the entry is no longer pending, so a job finished by another worker is not answered twice.

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, AsyncConnectionConfig, Script, Value};

use crate::config::Config;
use crate::error::QueueError;

/// Selects rustls's crypto provider for `rediss://` connections (once per process). The system
/// trust store is used; `SSL_CERT_FILE` points it at a private CA.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every key and name the worker uses, from the prefix (defined by the wire contract).
pub use hmr2_client::Keys;

/// One delivered job entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// Every field of the entry, for the dead-letter stream.
    pub fields: Vec<(String, Vec<u8>)>,
    /// How many times the group delivered it (1 for a fresh read).
    pub deliveries: u64,
    /// Whether it was reclaimed from another (presumably dead) consumer.
    pub reclaimed: bool,
}

impl Entry {
    fn from_stream(s: StreamId, deliveries: u64, reclaimed: bool) -> Self {
        let fields = s
            .map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::BulkString(b) => Some((k, b)),
                Value::SimpleString(s) => Some((k, s.into_bytes())),
                _ => None,
            })
            .collect();
        Entry {
            id: s.id,
            fields,
            deliveries,
            reclaimed,
        }
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Milliseconds since the epoch at which the entry was added (from its id).
    pub fn enqueued_ms(&self) -> Option<u64> {
        self.id.split('-').next()?.parse().ok()
    }
}

/// Queue gauges: backlog, in-flight, and not-yet-delivered entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub length: u64,
    pub pending: u64,
    pub lag: Option<u64>,
}

/// What an atomic publish step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Result published, job acknowledged and deleted.
    Done,
    /// The job was no longer pending (another worker finished it): nothing written.
    NotPending,
    /// The reply key holds something other than a stream: nothing written.
    ReplyNotAStream,
}

impl Written {
    fn from_script(n: i64) -> Self {
        match n {
            1 => Written::Done,
            -1 => Written::ReplyNotAStream,
            _ => Written::NotPending,
        }
    }
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

/// The worker's handle on Redis: a pool for short commands, and a factory for the dedicated
/// connection that blocks in XREADGROUP.
#[derive(Clone)]
pub struct Queue {
    client: redis::Client,
    pool: Pool,
    keys: Keys,
    consumer: String,
    block_ms: u64,
    connect_timeout: Duration,
    claim_idle_ms: u64,
    results_maxlen: u64,
    dead_maxlen: u64,
    publish: Script,
    dead_letter: Script,
}

impl Queue {
    /// Prepares the pool (no connection is made yet).
    pub fn new(config: &Config) -> Result<Self, QueueError> {
        install_tls_provider();
        let client = redis::Client::open(config.redis.url.as_str())?;
        let mut pc = deadpool_redis::Config::from_url(config.redis.url.clone());
        let timeout = Duration::from_millis(config.redis.connect_timeout_ms);
        let mut pool_cfg = deadpool_redis::PoolConfig::new(config.redis.pool_size);
        pool_cfg.timeouts.wait = Some(timeout);
        pool_cfg.timeouts.create = Some(timeout);
        pool_cfg.timeouts.recycle = Some(timeout);
        pc.pool = Some(pool_cfg);
        let pool = pc
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| QueueError::Pool(e.to_string()))?;
        Ok(Queue {
            client,
            pool,
            keys: Keys::new(&config.queue.prefix),
            consumer: config.consumer_name(),
            block_ms: config.queue.block_ms,
            connect_timeout: timeout,
            claim_idle_ms: config.queue.claim_idle_ms,
            results_maxlen: config.queue.results_maxlen,
            dead_maxlen: config.queue.dead_maxlen,
            publish: Script::new(include_str!("queue/publish.lua")),
            dead_letter: Script::new(include_str!("queue/dead_letter.lua")),
        })
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, QueueError> {
        self.pool
            .get()
            .await
            .map_err(|e| QueueError::Pool(e.to_string()))
    }

    /// A dedicated connection whose response timeout outlasts `XREADGROUP ... BLOCK`
    /// (redis-rs otherwise gives up after 500 ms).
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(
                Duration::from_millis(self.block_ms) + Duration::from_secs(10),
            ));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    /// Creates the consumer group (and the stream) when missing; an existing group is fine.
    /// The group starts at `0` so jobs enqueued before any worker existed are processed.
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        // Look first: creating needs a write, which Redis refuses when it is out of memory.
        let groups: Result<StreamInfoGroupsReply, _> = c.xinfo_groups(&self.keys.jobs).await;
        if let Ok(g) = groups {
            if g.groups.iter().any(|g| g.name == self.keys.group) {
                return Ok(());
            }
        }
        let r: Result<String, _> = c
            .xgroup_create_mkstream(&self.keys.jobs, &self.keys.group, "0")
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads up to `count` new entries, waiting up to `block_ms` for the first one.
    pub async fn read_new(
        &self,
        conn: &mut MultiplexedConnection,
        count: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        let opts = StreamReadOptions::default()
            .group(&self.keys.group, &self.consumer)
            .count(count)
            .block(self.block_ms as usize);
        let reply: Result<Option<StreamReadReply>, _> =
            conn.xread_options(&[&self.keys.jobs], &[">"], &opts).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost the group (restart without persistence): recreate and read again.
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|s| Entry::from_stream(s, 1, false))
            .collect())
    }

    /// Claims up to `count` entries idle longer than `claim_idle_ms` (their consumer presumably
    /// died), with their delivery counts. `cursor` carries XAUTOCLAIM's position between calls.
    pub async fn claim_stale(
        &self,
        count: usize,
        cursor: &mut String,
    ) -> Result<Vec<Entry>, QueueError> {
        let mut c = self.conn().await?;
        let reply: StreamAutoClaimReply = match c
            .xautoclaim_options(
                &self.keys.jobs,
                &self.keys.group,
                &self.consumer,
                self.claim_idle_ms,
                cursor.as_str(),
                StreamAutoClaimOptions::default().count(count),
            )
            .await
        {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        *cursor = reply.next_stream_id;
        // Ids pending but gone from the stream (trimmed or deleted): nothing to run, acknowledge.
        if !reply.deleted_ids.is_empty() {
            let _: u64 = c
                .xack(&self.keys.jobs, &self.keys.group, &reply.deleted_ids)
                .await?;
        }
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for s in &reply.claimed {
            pipe.xpending_count(&self.keys.jobs, &self.keys.group, &s.id, &s.id, 1);
        }
        let counts: Vec<StreamPendingCountReply> = pipe.query_async(&mut *c).await?;
        let claimed = reply
            .claimed
            .into_iter()
            .zip(counts)
            .map(|(s, p)| {
                let deliveries = p.ids.first().map_or(1, |p| p.times_delivered as u64);
                Entry::from_stream(s, deliveries, true)
            })
            .collect();
        Ok(claimed)
    }

    /// Resets the idle time of entries this worker is still working on (`XCLAIM ... JUSTID`,
    /// which does not count as a delivery), so no other worker reclaims them while they are
    /// merely waiting in this worker's pipeline.
    pub async fn extend_lease(&self, ids: &[String]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.keys.jobs)
            .arg(&self.keys.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID");
        let _: Value = cmd.query_async(&mut *c).await?;
        Ok(())
    }

    /// Publishes a result and acknowledges (and deletes) its job in one atomic step.
    pub async fn publish(
        &self,
        entry_id: &str,
        reply_to: &str,
        job_id: &str,
        result_json: &str,
    ) -> Result<Written, QueueError> {
        let mut c = self.conn().await?;
        let n: i64 = self
            .publish
            .key(&self.keys.jobs)
            .key(reply_to)
            .arg(&self.keys.group)
            .arg(entry_id)
            .arg(self.results_maxlen)
            .arg(job_id)
            .arg(result_json)
            .invoke_async(&mut *c)
            .await?;
        Ok(Written::from_script(n))
    }

    /// Error result + dead-letter entry + acknowledgement, in one atomic step.
    pub async fn dead_letter(&self, d: DeadLetter<'_>) -> Result<Written, QueueError> {
        let mut c = self.conn().await?;
        let mut inv = self.dead_letter.prepare_invoke();
        inv.key(&self.keys.jobs)
            .key(d.reply_to)
            .key(&self.keys.dead)
            .arg(&self.keys.group)
            .arg(&d.entry.id)
            .arg(self.results_maxlen)
            .arg(self.dead_maxlen)
            .arg(d.job_id)
            .arg(d.result_json)
            .arg(d.code)
            .arg(d.message)
            .arg(d.entry.deliveries)
            .arg(d.worker);
        for (k, v) in &d.entry.fields {
            inv.arg(k).arg(v.as_slice());
        }
        let n: i64 = inv.invoke_async(&mut *c).await?;
        Ok(Written::from_script(n))
    }

    /// Replaces the model hash (`{prefix}:model`) with `fields` in one step.
    pub async fn publish_model_info(&self, fields: &[(&str, String)]) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(&self.keys.model).ignore();
        pipe.hset_multiple(&self.keys.model, fields).ignore();
        let () = pipe.query_async(&mut *c).await?;
        Ok(())
    }

    /// Length, pending count and group lag of the job stream.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut c = self.conn().await?;
        let length: u64 = c.xlen(&self.keys.jobs).await?;
        let groups: Result<StreamInfoGroupsReply, _> = c.xinfo_groups(&self.keys.jobs).await;
        let mut stats = QueueStats {
            length,
            ..Default::default()
        };
        if let Ok(groups) = groups {
            if let Some(g) = groups
                .groups
                .into_iter()
                .find(|g| g.name == self.keys.group)
            {
                stats.pending = g.pending as u64;
                stats.lag = g.lag.map(|l| l as u64);
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_carry_the_enqueue_time() {
        let e = Entry {
            id: "1700000000123-4".into(),
            fields: vec![("job".into(), b"{}".to_vec())],
            deliveries: 1,
            reclaimed: false,
        };
        assert_eq!(e.enqueued_ms(), Some(1_700_000_000_123));
        assert_eq!(e.field("job"), Some(&b"{}"[..]));
        assert_eq!(e.field("image"), None);
    }
}
