//! The Redis Streams protocol (DESIGN §3): every key name, every command the worker sends, and
//! the atomic steps as Lua scripts beside this file.
//!
//! Delivery is at-least-once: a job is acknowledged only in the same atomic step that publishes
//! its result (`publish.lua`) or its dead letter (`dead_letter.lua`); both refuse to write when
//! the entry is no longer pending, so a job finished by another worker is not answered twice.

use std::borrow::Cow;
use std::time::Duration;

use redis::streams::StreamInfoGroupsReply;
use redis::{AsyncCommands, Script, Value};

use crate::config::Config;
use crate::error::QueueError;

/// Selects rustls's crypto provider for `rediss://` connections (once per process). The system
/// trust store is used; `SSL_CERT_FILE` points it at a private CA.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

mod conn;

pub use conn::Conn;
use conn::{Pool, Target};
/// Every key and name the worker uses, from the prefix (defined by the wire contract).
pub use hmr2_client::{Keys, Layout};

/// One delivered job entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// The shard it was read from (0 when the queue is not sharded).
    pub shard: usize,
    /// Every field of the entry, names and values as Redis holds them (binary-safe: a field
    /// name that is not UTF-8 spoils nothing but its own entry), for the dead-letter stream.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many times the group delivered it (1 for a fresh read).
    pub deliveries: u64,
    /// Whether it was reclaimed from another (presumably dead) consumer.
    pub reclaimed: bool,
}

/// Most field pairs of an entry copied to its dead letter (Lua's `unpack` has a limit, and a
/// dead letter is for reading, not for keeping a hostile entry whole).
pub const DEAD_LETTER_FIELDS: usize = 64;

/// The most bytes an entry keeps of one field once its frame is dropped (an unreadable `job`
/// is cut to this, any other field longer than this is replaced by a note).
pub const KEPT_FIELD_BYTES: usize = 64 * 1024;

/// Values of unknown `job` keys longer than this (as JSON) are replaced by a note.
const KEPT_UNKNOWN_VALUE_BYTES: usize = 1024;

/// The `job` keys of the wire contract (DESIGN §3), kept whole.
const JOB_KEYS: &[&str] = &[
    "v",
    "job_id",
    "video_id",
    "frame_number",
    "boxes",
    "reply_to",
    "include",
];

impl Entry {
    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Drops the frame and anything else large: the `image` field, `image_base64` from the
    /// `job` JSON, values of unknown `job` keys over 1 KiB, and any other field over
    /// [`KEPT_FIELD_BYTES`] (both replaced by a note of their size); an unreadable `job` is cut
    /// to [`KEPT_FIELD_BYTES`]. What stays is what a dead letter needs to explain the job, at
    /// most tens of kilobytes: called once the frame is decoded, so an in-flight job holds its
    /// crops, not what its entry carried.
    pub fn strip_frame(&mut self) {
        self.fields = std::mem::take(&mut self.fields)
            .into_iter()
            .filter_map(|(k, v)| {
                let replaced = match kept(&k, &v)? {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(n) => Some(n),
                };
                Some((k, replaced.unwrap_or(v)))
            })
            .collect();
    }

    /// The field pairs a dead letter carries: without the frame (as [`Entry::strip_frame`]
    /// leaves them) unless `keep_image`, at most [`DEAD_LETTER_FIELDS`], plus `fields_dropped`
    /// when there were more. Borrowed where nothing is dropped.
    pub fn dead_letter_fields(&self, keep_image: bool) -> Vec<(&[u8], Cow<'_, [u8]>)> {
        let mut all = self.fields.iter().filter_map(|(k, v)| {
            let v = if keep_image {
                Cow::Borrowed(v.as_slice())
            } else {
                kept(k, v)?
            };
            Some((k.as_slice(), v))
        });
        let mut out: Vec<_> = all.by_ref().take(DEAD_LETTER_FIELDS).collect();
        let dropped = all.count();
        if dropped > 0 {
            out.push((
                &b"fields_dropped"[..],
                dropped.to_string().into_bytes().into(),
            ));
        }
        out
    }

    /// Milliseconds since the epoch at which the entry was added (from its id).
    pub fn enqueued_ms(&self) -> Option<u64> {
        self.id.split('-').next()?.parse().ok()
    }
}

/// What an entry keeps of field `k` once its frame is dropped (see [`Entry::strip_frame`]):
/// `None` drops the field, a borrowed value is kept as it is.
fn kept<'a>(k: &[u8], v: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    match k {
        b"image" => None,
        b"job" => Some(slim_job(v).map_or(Cow::Borrowed(v), Cow::Owned)),
        _ if v.len() > KEPT_FIELD_BYTES => Some(Cow::Owned(
            format!("<{} bytes dropped>", v.len()).into_bytes(),
        )),
        _ => Some(Cow::Borrowed(v)),
    }
}

/// The `job` JSON without its frame and without large unknown values (see
/// [`Entry::strip_frame`]); when still over [`KEPT_FIELD_BYTES`], its contract keys only plus
/// `dropped_keys`. `None` when there is nothing to drop.
fn slim_job(job: &[u8]) -> Option<Vec<u8>> {
    use serde_json::{Map, Value};
    let Ok(mut map) = serde_json::from_slice::<Map<String, Value>>(job) else {
        return (job.len() > KEPT_FIELD_BYTES).then(|| job[..KEPT_FIELD_BYTES].to_vec());
    };
    let mut changed = map.remove("image_base64").is_some();
    for (k, v) in map.iter_mut() {
        if JOB_KEYS.contains(&k.as_str()) {
            continue;
        }
        let n = serde_json::to_vec(v).map_or(0, |s| s.len());
        if n > KEPT_UNKNOWN_VALUE_BYTES {
            *v = Value::String(format!("<{n} bytes dropped>"));
            changed = true;
        }
    }
    let mut out = serde_json::to_vec(&map).ok()?;
    if out.len() > KEPT_FIELD_BYTES {
        let before = map.len();
        map.retain(|k, _| JOB_KEYS.contains(&k.as_str()));
        let dropped = before - map.len();
        map.insert("dropped_keys".into(), Value::from(dropped));
        out = serde_json::to_vec(&map).ok()?;
        changed = true;
    }
    changed.then_some(out)
}

/// A value of a reply as bytes (bulk, simple or verbatim string).
fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// The items of an array-like reply (RESP2 array, RESP3 set or push); a map's pairs are
/// flattened. `Nil` is empty.
fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Map(m) => Some(m.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// One stream entry (`[id, [field, value, ...]]`) of a reply, decoded on its own: nothing in
/// one entry can spoil its neighbours. An entry that is not shaped like one is an error, with
/// its id when it has one.
fn decode_entry(v: Value, reclaimed: bool) -> Result<Entry, Option<String>> {
    let mut parts = items(v).ok_or(None)?.into_iter();
    let id = parts.next().and_then(bytes_of).ok_or(None)?;
    let id = String::from_utf8(id).map_err(|_| None)?;
    let flat = parts
        .next()
        .and_then(items)
        .ok_or_else(|| Some(id.clone()))?;
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match (bytes_of(k), bytes_of(v)) {
            (Some(k), Some(v)) => fields.push((k, v)),
            _ => return Err(Some(id)),
        }
    }
    Ok(Entry {
        id,
        shard: 0,
        fields,
        deliveries: 1,
        reclaimed,
    })
}

/// The entries of a list of entries, each decoded on its own. One whose fields cannot be
/// decoded is kept with no fields (it is then dead-lettered as `invalid_job`, not stranded);
/// one without even an id is logged and left out.
fn decode_entries(list: Value, reclaimed: bool) -> Vec<Entry> {
    let Some(list) = items(list) else {
        tracing::warn!("a stream reply without a list of entries; ignored");
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|v| match decode_entry(v, reclaimed) {
            Ok(e) => Some(e),
            Err(Some(id)) => {
                tracing::warn!(entry = %id, "a stream entry whose fields cannot be decoded");
                Some(Entry {
                    id,
                    shard: 0,
                    fields: Vec::new(),
                    deliveries: 1,
                    reclaimed,
                })
            }
            Err(None) => {
                tracing::warn!("a stream entry without an id in a reply; skipped");
                None
            }
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply (`nil`, or one `[stream, entries]` per stream; a map in
/// RESP3).
fn decode_read_reply(v: Value) -> Vec<Entry> {
    let Some(streams) = items(v) else {
        return Vec::new();
    };
    // RESP2: [[name, entries], ...]; RESP3 maps were flattened to name, entries, ...
    let mut out = Vec::new();
    let mut flat = Vec::new();
    for s in streams {
        match s {
            Value::Array(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    let mut it = flat.into_iter();
    while let (Some(_name), Some(entries)) = (it.next(), it.next()) {
        out.extend(decode_entries(entries, false));
    }
    out
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

/// What releasing this worker's entries leaves behind (see [`Queue::release`]).
pub const RELEASED_IDLE_MS: u64 = 365 * 24 * 3600 * 1000;

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
pub fn response_timeout(config: &Config) -> Duration {
    if config.redis.response_timeout_ms > 0 {
        return Duration::from_millis(config.redis.response_timeout_ms);
    }
    let bytes = config.queue.max_batch as u64 * config.limits.max_job_bytes as u64;
    Duration::from_secs(5) + Duration::from_millis(bytes / 25_000)
}

/// The worker's handle on Redis (one node or a cluster): a pool for short commands, and a
/// factory for the dedicated connections that block in XREADGROUP, one per shard. Every
/// command names the shard it is for; each touches that shard's slot only.
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

    /// The keys of shard `k`.
    pub fn keys(&self, k: usize) -> &Keys {
        self.layout.shard(k)
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
            self.ensure_group(k).await?;
        }
        Ok(())
    }

    /// Creates shard `k`'s consumer group (and the stream) when missing; an existing group is
    /// fine. The group starts at `0` so jobs enqueued before any worker existed are processed.
    pub async fn ensure_group(&self, k: usize) -> Result<(), QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
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

    /// Reads up to `count` new entries of shard `k`, waiting up to `block_ms` for the first
    /// one when `block` (else answering at once). Entries are decoded one by one: a malformed
    /// one cannot hide its neighbours.
    pub async fn read_new(
        &self,
        conn: &mut Conn,
        k: usize,
        count: usize,
        block: bool,
    ) -> Result<Vec<Entry>, QueueError> {
        let keys = self.keys(k);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&keys.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if block {
            cmd.arg("BLOCK").arg(self.block_ms);
        }
        cmd.arg("STREAMS").arg(&keys.jobs).arg(">");
        let reply: Result<Value, _> = cmd.query_async(conn).await;
        match reply {
            Ok(v) => Ok(on_shard(decode_read_reply(v), k)),
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost the group (restart without persistence): recreate and read again.
                self.ensure_group(k).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The oldest entry of shard `k` idle longer than `claim_idle_ms` (its consumer
    /// presumably died), if any: its id and how often it was delivered. Claims nothing.
    pub async fn find_orphan(&self, k: usize) -> Result<Option<(String, u64)>, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&keys.jobs)
            .arg(&keys.group)
            .arg("IDLE")
            .arg(self.claim_idle_ms)
            .arg("-")
            .arg("+")
            .arg(1);
        let reply: Value = match cmd.query_async(&mut c).await {
            Ok(r) => r,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(k).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // [[id, consumer, idle ms, deliveries]]
        let first = items(reply)
            .and_then(|v| v.into_iter().next())
            .and_then(items);
        let Some(mut f) = first.map(Vec::into_iter) else {
            return Ok(None);
        };
        let id = f
            .next()
            .and_then(bytes_of)
            .and_then(|b| String::from_utf8(b).ok());
        let deliveries = f.nth(2).and_then(|v| match v {
            Value::Int(n) => Some(n.max(0) as u64),
            _ => None,
        });
        Ok(id.map(|id| (id, deliveries.unwrap_or(1))))
    }

    /// Claims one orphan of shard `k` found by [`Queue::find_orphan`] (only if it is still
    /// idle longer than `claim_idle_ms`: another worker may have taken it meanwhile). `None`
    /// when it was taken, or when it is gone from the stream (trimmed or deleted: then it is
    /// acknowledged).
    pub async fn claim_orphan(
        &self,
        k: usize,
        id: &str,
        delivered: u64,
    ) -> Result<Option<Entry>, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.consumer)
            .arg(self.claim_idle_ms)
            .arg(id);
        let reply: Value = cmd.query_async(&mut c).await?;
        if let Some(mut e) = on_shard(decode_entries(reply, true), k).into_iter().next() {
            e.deliveries = delivered + 1;
            return Ok(Some(e));
        }
        let exists: Value = redis::cmd("XRANGE")
            .arg(&keys.jobs)
            .arg(id)
            .arg(id)
            .query_async(&mut c)
            .await?;
        if items(exists).is_some_and(|v| v.is_empty()) {
            let _: u64 = c.xack(&keys.jobs, &keys.group, &[id]).await?;
        }
        Ok(None)
    }

    /// Renews this worker's leases on shard `k`: resets the idle time of the entries it still
    /// holds, so no other worker reclaims jobs merely waiting in this worker's pipeline. An
    /// entry another worker has reclaimed meanwhile stays with it. Returns the ids no longer
    /// this worker's.
    pub async fn extend_lease(&self, k: usize, ids: &[String]) -> Result<Vec<String>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let lost: Vec<String> = self
            .renew
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.consumer)
            .arg(ids)
            .invoke_async(&mut c)
            .await?;
        Ok(lost)
    }

    /// Releases entries of shard `k` this worker will not run: any live worker's next claim
    /// takes them at once (they look idle for a year), and their delivery count is not
    /// raised. No ids = every entry pending on this consumer. Returns how many were released.
    pub async fn release(&self, k: usize, ids: &[String]) -> Result<u64, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let n: u64 = self
            .release
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(&self.consumer)
            .arg(RELEASED_IDLE_MS)
            .arg(ids)
            .invoke_async(&mut c)
            .await?;
        Ok(n)
    }

    /// Removes `consumer` from shard `k`'s group when it holds no pending entry there; true
    /// when removed.
    pub async fn forget_consumer(&self, k: usize, consumer: &str) -> Result<bool, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let n: i64 = self
            .forget_consumer
            .key(&keys.jobs)
            .arg(&keys.group)
            .arg(consumer)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Removes shard `k`'s consumers that hold nothing and have been idle longer than
    /// `max_idle` (workers long gone); returns their names.
    pub async fn prune_consumers(
        &self,
        k: usize,
        max_idle: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let keys = self.keys(k);
        let consumers: redis::streams::StreamInfoConsumersReply = {
            let mut c = self.conn().await?;
            c.xinfo_consumers(&keys.jobs, &keys.group).await?
        };
        let mut removed = Vec::new();
        for c in consumers.consumers {
            if c.pending == 0
                && c.idle as u128 > max_idle.as_millis()
                && c.name != self.consumer
                && self.forget_consumer(k, &c.name).await?
            {
                removed.push(c.name);
            }
        }
        Ok(removed)
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

    /// Publishes a result and acknowledges (and deletes) its job on shard `k` in one atomic
    /// step. `reply_to` is in the shard's slot ([`Keys::accepts_reply_to`]).
    pub async fn publish(
        &self,
        k: usize,
        entry_id: &str,
        reply_to: &str,
        job_id: &str,
        result_json: &str,
    ) -> Result<Written, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
        let n: i64 = self
            .publish
            .key(&keys.jobs)
            .key(reply_to)
            .arg(&keys.group)
            .arg(entry_id)
            .arg(self.results_maxlen)
            .arg(job_id)
            .arg(result_json)
            .arg(self.reply_ttl(keys, reply_to))
            .invoke_async(&mut c)
            .await?;
        Ok(Written::from_script(n))
    }

    /// Error result + dead-letter entry + acknowledgement, in one atomic step on the entry's
    /// shard. The dead letter carries the entry's fields (at most [`DEAD_LETTER_FIELDS`])
    /// without the frame, unless `queue.dead_keep_image`.
    pub async fn dead_letter(&self, d: DeadLetter<'_>) -> Result<Written, QueueError> {
        let keys = self.keys(d.entry.shard);
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
        let n: i64 = inv.invoke_async(&mut c).await?;
        Ok(Written::from_script(n))
    }

    /// Replaces the model hash (`{prefix}:model`) with `fields` in one atomic step.
    pub async fn publish_model_info(&self, fields: &[(&str, String)]) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut inv = self.model_info.prepare_invoke();
        inv.key(&self.keys(0).model);
        for (k, v) in fields {
            inv.arg(*k).arg(v.as_str());
        }
        let () = inv.invoke_async(&mut c).await?;
        Ok(())
    }

    /// Length, pending count and lag of shard `k`'s job stream.
    pub async fn stats(&self, k: usize) -> Result<QueueStats, QueueError> {
        let keys = self.keys(k);
        let mut c = self.conn().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes held by the entry's field names and values.
    fn size(e: &Entry) -> usize {
        e.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn job_of(e: &Entry) -> serde_json::Value {
        serde_json::from_slice(e.field("job").unwrap()).unwrap()
    }

    #[test]
    fn an_entry_keeps_tens_of_kilobytes_once_its_frame_is_dropped() {
        let filler = "x".repeat(5 << 20);
        let job = serde_json::json!({
            "job_id": "j", "boxes": [[0, 0, 10, 10]], "reply_to": "p:results:v",
            "image_base64": filler, "note": "small", "blob": filler,
        });
        let mut e = Entry {
            id: "1-0".into(),
            shard: 0,
            fields: vec![
                (b"job".to_vec(), job.to_string().into_bytes()),
                (b"image".to_vec(), vec![0; 1 << 20]),
                (b"pad".to_vec(), vec![b'p'; 1 << 20]),
            ],
            deliveries: 1,
            reclaimed: false,
        };
        e.strip_frame();
        assert!(size(&e) < 2 * KEPT_FIELD_BYTES, "{} bytes kept", size(&e));
        assert_eq!(e.field("image"), None);
        let j = job_of(&e);
        assert_eq!(j["job_id"], "j");
        assert_eq!(j["reply_to"], "p:results:v");
        assert_eq!(j["note"], "small");
        assert!(j.get("image_base64").is_none());
        assert!(j["blob"].as_str().unwrap().contains("bytes dropped"));
        assert!(String::from_utf8_lossy(e.field("pad").unwrap()).contains("bytes dropped"));

        // Many small unknown keys: only the contract's keys stay.
        let mut many = serde_json::Map::new();
        many.insert("job_id".into(), "k".into());
        for i in 0..20_000 {
            many.insert(format!("k{i}"), "0123456789".into());
        }
        let mut e = Entry {
            id: "2-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), serde_json::to_vec(&many).unwrap())],
            deliveries: 1,
            reclaimed: false,
        };
        e.strip_frame();
        let j = job_of(&e);
        assert_eq!(j["job_id"], "k");
        assert_eq!(j["dropped_keys"], 20_000);

        // Unreadable JSON is cut, small readable JSON is left as it is.
        let mut e = Entry {
            id: "3-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), vec![b'{'; 1 << 20])],
            deliveries: 1,
            reclaimed: false,
        };
        e.strip_frame();
        assert_eq!(size(&e), 3 + KEPT_FIELD_BYTES);
        let small = br#"{"job_id":"s"}"#.to_vec();
        let mut e = Entry {
            id: "4-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), small.clone())],
            deliveries: 1,
            reclaimed: false,
        };
        e.strip_frame();
        assert_eq!(e.field("job"), Some(&small[..]));
    }

    #[test]
    fn entry_ids_carry_the_enqueue_time() {
        let e = Entry {
            id: "1700000000123-4".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), b"{}".to_vec())],
            deliveries: 1,
            reclaimed: false,
        };
        assert_eq!(e.enqueued_ms(), Some(1_700_000_000_123));
        assert_eq!(e.field("job"), Some(&b"{}"[..]));
        assert_eq!(e.field("image"), None);
    }
}
