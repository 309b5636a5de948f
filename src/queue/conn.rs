//! Connections to one Redis node or to a Redis Cluster, behind one type: every command of
//! [`super::Queue`] is written once and runs on either.
//!
//! On a cluster the `redis` crate's cluster client routes each command by its key (our Lua
//! steps and stream commands each touch one slot), follows `MOVED`/`ASK`, and re-reads the slot
//! map when a master fails over. The pool is a `deadpool` pool of cluster connections built
//! with our timeouts (`deadpool-redis`'s own cluster manager cannot be given any).

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::error::QueueError;

/// Makes the pool's cluster connections (each one multiplexes a connection per master).
pub struct ClusterManager {
    client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    /// A connection in steady use is handed out as it is: a cluster connection repairs itself
    /// (it reconnects to a node that went away and re-reads the slot map after a failover), and
    /// a `PING` on every checkout, as a one-node pool does, would add a round trip to every
    /// command. One idle for longer than [`IDLE_CHECK`] is checked first.
    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < IDLE_CHECK {
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

/// Pooled cluster connections idle this long are checked (`PING`) before they are handed out.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Where the worker's Redis is: one node, or a cluster given by its seed nodes.
#[derive(Clone)]
pub(super) enum Target {
    Node(Box<redis::Client>),
    Cluster(Vec<String>),
}

impl Target {
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
    Node(deadpool_redis::Pool),
    Cluster(managed::Pool<ClusterManager>),
}

impl Pool {
    /// A pool of `size` connections to `target`, each waiting up to `response` for a reply.
    pub(super) fn new(
        target: &Target,
        url: &str,
        size: usize,
        connect: Duration,
        response: Duration,
    ) -> Result<Pool, QueueError> {
        let mut cfg = deadpool_redis::PoolConfig::new(size);
        cfg.timeouts.wait = Some(connect);
        cfg.timeouts.create = Some(connect);
        cfg.timeouts.recycle = Some(connect);
        let built = match target {
            Target::Node(_) => {
                let conn_cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response));
                let manager = deadpool_redis::Manager::new_with_config(url, conn_cfg)?;
                deadpool_redis::Pool::builder(manager)
                    .config(cfg)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .map(Pool::Node)
                    .map_err(|e| e.to_string())
            }
            Target::Cluster(seeds) => {
                let client = Target::cluster_client(seeds, connect, response)?;
                managed::Pool::builder(ClusterManager { client })
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
        match self {
            Pool::Node(p) => p
                .get()
                .await
                .map(Conn::Node)
                .map_err(|e| QueueError::Pool(e.to_string())),
            Pool::Cluster(p) => p
                .get()
                .await
                .map(Conn::Cluster)
                .map_err(|e| QueueError::Pool(e.to_string())),
        }
    }
}

/// A dedicated connection (for a blocking read) to `target`.
pub(super) async fn dedicated(
    target: &Target,
    connect: Duration,
    response: Duration,
) -> Result<Conn, QueueError> {
    match target {
        Target::Node(client) => {
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(response));
            Ok(Conn::Dedicated(
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?,
            ))
        }
        Target::Cluster(seeds) => {
            let client = Target::cluster_client(seeds, connect, response)?;
            Ok(Conn::DedicatedCluster(client.get_async_connection().await?))
        }
    }
}

/// A connection to one node or to a cluster.
pub enum Conn {
    Node(deadpool_redis::Connection),
    Cluster(managed::Object<ClusterManager>),
    Dedicated(MultiplexedConnection),
    DedicatedCluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::DedicatedCluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(cmd, offset, count),
            Conn::DedicatedCluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::DedicatedCluster(c) => c.get_db(),
        }
    }
}
