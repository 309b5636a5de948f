//! Connections to one Redis node or to a Redis Cluster, behind one type: every command of
//! [`super::Queue`] is written once and runs on either.
//!
//! On a cluster the `redis` crate's cluster client routes each command by its key (our Lua
//! steps and stream commands each touch one slot), follows `MOVED`/`ASK`, and re-reads the slot
//! map when a master fails over.
//!
//! The pool for short commands is a `deadpool` pool (of `deadpool-redis`'s one-node manager, or
//! of cluster connections built with our timeouts, which `deadpool-redis`'s own cluster manager
//! cannot be given). A connection in steady use is handed out as it is; one idle for longer
//! than `redis.pool_idle_check_ms` (5 s) is checked with a `PING` first; and one whose command failed at the
//! connection level (I/O error, dropped, timed out) leaves the pool instead of going back, so
//! the next checkout makes a new one. That saves the `PING` round trip a pool otherwise makes
//! on every checkout, which is one per published result.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::error::QueueError;

/// Makes the pool's one-node connections: `deadpool-redis`'s manager, its check (`PING`) only
/// for connections idle at least `idle_check`.
pub(crate) struct NodeManager {
    inner: deadpool_redis::Manager,
    idle_check: Duration,
}

impl managed::Manager for NodeManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < self.idle_check {
            return Ok(());
        }
        self.inner.recycle(conn, metrics).await
    }
}

/// Makes the pool's cluster connections (each one multiplexes a connection per master).
pub(crate) struct ClusterManager {
    client: ClusterClient,
    /// Connections idle at least this long are checked (`PING`) before they are handed out.
    idle_check: Duration,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < self.idle_check {
            return Ok(());
        }
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RecycleError::message("unexpected PING reply"))
        }
    }
}

/// Where the worker's Redis is: one node, or a cluster given by its seed nodes.
#[derive(Clone)]
pub(super) enum Target {
    Node(Box<redis::Client>),
    Cluster(Vec<String>),
}

impl Target {
    /// The configured Redis: the cluster of `redis.url`'s seed nodes in cluster mode, else
    /// the one node of `redis.url`.
    pub(super) fn from_config(config: &crate::config::Config) -> Result<Target, QueueError> {
        Ok(if config.cluster() {
            Target::Cluster(config.redis.urls().map(str::to_string).collect())
        } else {
            Target::Node(Box::new(redis::Client::open(config.redis.url.as_str())?))
        })
    }

    /// A cluster client with these timeouts. The overall time of a request (its retries while
    /// the cluster fails over included) is bounded by the response timeout.
    fn cluster_client(
        seeds: &[String],
        connect: Duration,
        response: Duration,
    ) -> Result<ClusterClient, QueueError> {
        Ok(ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(connect)
            .response_timeout(response)
            .build()?)
    }
}

/// The pool for short commands.
#[derive(Clone)]
pub(super) enum Pool {
    Node(managed::Pool<NodeManager>),
    Cluster(managed::Pool<ClusterManager>),
}

impl Pool {
    /// A pool of `size` connections to `target`, each waiting up to `response` for a reply and
    /// checked with a `PING` at checkout once idle for `idle_check` (zero: at every checkout).
    pub(super) fn new(
        target: &Target,
        size: usize,
        connect: Duration,
        response: Duration,
        idle_check: Duration,
    ) -> Result<Pool, QueueError> {
        let mut cfg = managed::PoolConfig::new(size);
        cfg.timeouts.wait = Some(connect);
        cfg.timeouts.create = Some(connect);
        cfg.timeouts.recycle = Some(connect);
        let built = match target {
            Target::Node(client) => {
                let conn_cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response));
                let manager = deadpool_redis::Manager::new_with_config(
                    client.get_connection_info().clone(),
                    conn_cfg,
                )?;
                managed::Pool::builder(NodeManager {
                    inner: manager,
                    idle_check,
                })
                .config(cfg)
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .map(Pool::Node)
                .map_err(|e| e.to_string())
            }
            Target::Cluster(seeds) => {
                let client = Target::cluster_client(seeds, connect, response)?;
                managed::Pool::builder(ClusterManager { client, idle_check })
                    .config(cfg)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map(Pool::Cluster)
                    .map_err(|e| e.to_string())
            }
        };
        built.map_err(QueueError::Pool)
    }

    pub(super) async fn get(&self) -> Result<Conn, QueueError> {
        let inner = match self {
            Pool::Node(p) => p.get().await.map(Inner::Node),
            Pool::Cluster(p) => p.get().await.map(Inner::Cluster),
        };
        inner
            .map(Conn::new)
            .map_err(|e| QueueError::Pool(e.to_string()))
    }
}

/// A dedicated connection (for a blocking read) to `target`.
pub(super) async fn dedicated(
    target: &Target,
    connect: Duration,
    response: Duration,
) -> Result<Conn, QueueError> {
    let inner = match target {
        Target::Node(client) => {
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response));
            Inner::Dedicated(
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?,
            )
        }
        Target::Cluster(seeds) => {
            let client = Target::cluster_client(seeds, connect, response)?;
            Inner::DedicatedCluster(client.get_async_connection().await?)
        }
    };
    Ok(Conn::new(inner))
}

/// A connection to one node or to a cluster, pooled or dedicated. A pooled one whose command
/// failed at the connection level is dropped from the pool, not returned to it.
pub struct Conn {
    inner: Inner,
    broken: bool,
}

enum Inner {
    Node(managed::Object<NodeManager>),
    Cluster(managed::Object<ClusterManager>),
    Dedicated(MultiplexedConnection),
    DedicatedCluster(ClusterConnection),
    /// Taken out of the pool on drop.
    Gone,
}

impl Conn {
    fn new(inner: Inner) -> Self {
        Conn {
            inner,
            broken: false,
        }
    }

    /// Notes a connection-level failure: the connection is not reused.
    fn note<T>(&mut self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                self.broken = true;
            }
        }
        r
    }

    fn link(&mut self) -> &mut dyn ConnectionLike {
        match &mut self.inner {
            Inner::Node(c) => &mut **c,
            Inner::Cluster(c) => &mut **c,
            Inner::Dedicated(c) => c,
            Inner::DedicatedCluster(c) => c,
            Inner::Gone => unreachable!("only dropped connections are gone"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.broken {
            return;
        }
        match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Node(o) => drop(managed::Object::take(o)),
            Inner::Cluster(o) => drop(managed::Object::take(o)),
            _ => {}
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.link().req_packed_command(cmd).await;
            self.note(r)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.link().req_packed_commands(cmd, offset, count).await;
            self.note(r)
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Node(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
            Inner::Dedicated(c) => c.get_db(),
            Inner::DedicatedCluster(c) => c.get_db(),
            Inner::Gone => 0,
        }
    }
}
