//! A throwaway local `redis-server` (for `demo`, `bench` and the tests): a free port, a private
//! temporary folder, killed when dropped, restartable on the same port and data.
//!
//! [`RedisCluster`] does the same for a Redis Cluster on loopback ports (masters, their replicas,
//! `redis-cli --cluster create`), for integration tests that need slots, redirections and failover.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A free TCP port on 127.0.0.1, outside the kernel's ephemeral range (see [`free_ports`]).
pub fn free_port() -> std::io::Result<u16> {
    Ok(free_ports(1)?[0])
}

impl RedisServer {
    /// Starts `redis-server` with no persistence on a free port.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts `redis-server` with extra arguments (e.g. `["--appendonly", "yes"]`).
    ///
    /// A server that exits at once (its port taken by another process since it was chosen) is
    /// started again on a fresh port, up to [`RedisCluster::START_TRIES`] times in all.
    pub fn start_with(args: &[&str]) -> std::io::Result<Self> {
        retry_on_port_clash(|| {
            let mut s = RedisServer {
                port: free_port()?,
                dir: tempfile::Builder::new().prefix("hmr2-redis-").tempdir()?,
                child: None,
                extra: args.iter().map(|s| s.to_string()).collect(),
            };
            s.spawn()?;
            Ok(s)
        })
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut args: Vec<OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().into(),
            "--logfile".into(),
            self.dir.path().join("redis.log").into(),
        ];
        args.extend(self.extra.iter().map(OsString::from));
        self.child = Some(spawn_redis_server(&args)?);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(start_failed(
                    &log,
                    format!(
                        "redis-server on port {} exited ({status}):\n{}",
                        self.port,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                ));
            }
            // With timeouts: whatever holds the port may accept and never answer.
            if let Some(mut c) = connect(self.port) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other(format!(
            "redis-server on port {} did not answer within {timeout:?}",
            self.port
        )))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills it at once (SIGKILL): whatever was not persisted is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it cleanly (SHUTDOWN, which flushes the append-only file when enabled).
    pub fn shutdown(&mut self) {
        if let Ok(client) = redis::Client::open(self.url()) {
            if let Ok(mut c) = client.get_connection() {
                let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
            }
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data folder.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.spawn()
    }

    /// The files it wrote (for debugging a failed test).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the `redis-server` binary (`$HMR2_REDIS_SERVER`, else `redis-server` on `PATH`) with
/// these arguments, output discarded.
fn spawn_redis_server(args: &[OsString]) -> std::io::Result<Child> {
    let bin = std::env::var("HMR2_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {bin} (install it, or run `make setup`): {e}"),
            )
        })
}

/// The lowest port [`free_ports`] hands out.
const LOWEST_PORT: u16 = 10_000;

/// The kernel's ephemeral port range (`ip_local_port_range`), from which outgoing connections
/// take their local ports; Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(str::parse::<u16>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// The ports [`free_ports`] chooses from: from [`LOWEST_PORT`] up, less the ephemeral range.
fn candidate_ports() -> Vec<u16> {
    let (lo, hi) = ephemeral_range();
    (LOWEST_PORT..=u16::MAX)
        .filter(|p| *p < lo || *p > hi)
        .collect()
}

/// `n` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
///
/// They are chosen outside the kernel's ephemeral range. A port taken with `bind(0)` comes from
/// that range, and between its release and the server's `bind` any outgoing connection on the
/// machine (a client retrying against a node that is not up yet, say) can be given it as its
/// local port: the server then fails with "Address already in use". Outside the range only a
/// listener can take it. A process never hands out the same port twice (a test may hold its
/// ports unbound for a while, as for a worker started before its cluster), and each call starts
/// at another place in the candidates (process id, clock, a counter), so other processes rarely
/// even try the same ones. When no candidate is free (a range set to cover everything) it falls
/// back to `bind(0)`.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let candidates: Vec<u16> = candidate_ports()
        .into_iter()
        .filter(|p| !handed_out.contains(p))
        .collect();
    let mut listeners = Vec::with_capacity(n);
    if candidates.len() > 4 * n {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let start = (std::process::id() as usize)
            .wrapping_mul(7919)
            .wrapping_add(nanos)
            .wrapping_add(call.wrapping_mul(104_729))
            % candidates.len();
        for i in 0..candidates.len() {
            if listeners.len() == n {
                break;
            }
            let port = candidates[(start + i) % candidates.len()];
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                listeners.push(l);
            }
        }
    }
    while listeners.len() < n {
        listeners.push(TcpListener::bind("127.0.0.1:0")?);
    }
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<u16>>>()?;
    handed_out.extend(&ports);
    Ok(ports)
}

/// A short-lived synchronous connection to one node, or `None` when it does not answer.
fn connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let c = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(c)
}

/// The number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u32 = 16384;

/// One node of a Redis Cluster as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id (40 hex digits).
    pub id: String,
    /// The client port on 127.0.0.1.
    pub port: u16,
    /// The flags (`myself`, `master`, `slave`, `fail?`, `fail`, ...).
    pub flags: Vec<String>,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// The slot ranges it serves, inclusive (empty for a replica).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it serves this hash slot.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A master not flagged as failed (`fail`) by the node that was asked.
    pub fn is_live_master(&self) -> bool {
        self.has_flag("master") && !self.has_flag("fail")
    }
}

/// Parses the output of `CLUSTER NODES` (slot migration entries `[...]` are left out).
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // `ip:port@cport[,hostname]`
            let addr = f[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(ClusterNode {
                id: f[0].to_string(),
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// The error for a server that exited while starting: [`std::io::ErrorKind::AddrInUse`] when
/// its log says it could not bind a port (so [`retry_on_port_clash`] tries fresh ones).
fn start_failed(log: &str, message: String) -> std::io::Error {
    let kind = if log.contains("Address already in use") {
        std::io::ErrorKind::AddrInUse
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, message)
}

/// Runs `start` again while it fails with [`std::io::ErrorKind::AddrInUse`], up to
/// [`RedisCluster::START_TRIES`] times in all.
fn retry_on_port_clash<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 1;
    loop {
        match start() {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tries < RedisCluster::START_TRIES =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// One `redis-server` process of a [`RedisCluster`].
struct NodeProcess {
    port: u16,
    /// Its TLS port, when the cluster speaks TLS.
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// The certificate files of a cluster that speaks TLS (see [`RedisCluster::start_tls`]): the
/// server certificate and key every node presents, and the CA that signed them.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A throwaway Redis Cluster on loopback ports: `masters × (1 + replicas_per_master)`
/// `redis-server` processes without persistence sharing one temporary folder, joined by
/// `redis-cli --cluster create`. Every process is killed, and the folder removed, when dropped.
///
/// `redis-cli` is `$HMR2_REDIS_CLI`, else `redis-cli` on `PATH` (Debian's `redis-tools`, which
/// the `redis-server` package depends on).
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
    /// How many masters it was created with.
    masters: usize,
    /// Ids of the masters killed by [`RedisCluster::kill_master`] whose slots
    /// [`RedisCluster::wait_failover`] has not yet seen taken over.
    killed: Vec<String>,
}

impl RedisCluster {
    /// The node timeout given to every node (ms): failures are detected, and replicas promoted,
    /// a second or two after a master dies.
    pub const NODE_TIMEOUT_MS: u64 = 1000;

    /// Starts `masters × (1 + replicas_per_master)` nodes, creates the cluster and waits (at
    /// most 60 s) until every node reports `cluster_state:ok` with all slots covered, knows every
    /// other node, and every replica is in sync with its master.
    /// A node that cannot bind its ports (taken by another process since they were chosen) makes
    /// it start again on fresh ones, up to [`RedisCluster::START_TRIES`] times in all.
    pub fn start(masters: usize, replicas_per_master: usize) -> std::io::Result<Self> {
        retry_on_port_clash(|| {
            let ports = Self::free_ports_for(masters, replicas_per_master)?;
            Self::start_on(masters, replicas_per_master, &ports)
        })
    }

    /// How many times [`RedisCluster::start`] and [`RedisCluster::start_tls`] try fresh ports.
    pub const START_TRIES: usize = 3;

    /// Like [`RedisCluster::start`], every node also serving TLS on a port of its own (clients
    /// that connect over TLS are given the nodes' TLS ports in the slot map), the cluster bus
    /// and replication over TLS too. Clients need not present a certificate. The plain ports
    /// stay open for the harness and for tests that write as the admin user.
    pub fn start_tls(
        masters: usize,
        replicas_per_master: usize,
        tls: &ClusterTls,
    ) -> std::io::Result<Self> {
        let n = masters * (1 + replicas_per_master);
        retry_on_port_clash(|| {
            let mut ports = free_ports(3 * n)?;
            let tls_ports = ports.split_off(2 * n);
            Self::launch(
                masters,
                replicas_per_master,
                &ports,
                Some((tls, &tls_ports)),
            )
        })
    }

    /// Free loopback ports for a cluster of this shape, as [`RedisCluster::start_on`] takes
    /// them: client port then cluster bus port, node by node. A client can be pointed at
    /// `redis://127.0.0.1:<ports[2i]>` before the cluster exists.
    pub fn free_ports_for(masters: usize, replicas_per_master: usize) -> std::io::Result<Vec<u16>> {
        free_ports(2 * masters * (1 + replicas_per_master))
    }

    /// Like [`RedisCluster::start`], on the ports of [`RedisCluster::free_ports_for`].
    pub fn start_on(
        masters: usize,
        replicas_per_master: usize,
        ports: &[u16],
    ) -> std::io::Result<Self> {
        Self::launch(masters, replicas_per_master, ports, None)
    }

    fn launch(
        masters: usize,
        replicas_per_master: usize,
        ports: &[u16],
        tls: Option<(&ClusterTls, &[u16])>,
    ) -> std::io::Result<Self> {
        if masters < 3 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "Redis Cluster needs at least 3 masters",
            ));
        }
        let n = masters * (1 + replicas_per_master);
        // Two ports per node: the client port, and the cluster bus port (given explicitly
        // rather than the default client port + 10000, which may not be free or may not exist).
        if ports.len() != 2 * n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} ports for {n} nodes (two each)", ports.len()),
            ));
        }
        let mut cluster = RedisCluster {
            dir: tempfile::Builder::new()
                .prefix("hmr2-redis-cluster-")
                .tempdir()?,
            nodes: Vec::with_capacity(n),
            masters,
            killed: Vec::new(),
        };
        for (i, pair) in ports.chunks(2).enumerate() {
            let (port, bus_port) = (pair[0], pair[1]);
            let dir = cluster.dir.path();
            let mut args: Vec<OsString> = vec![
                "--port".into(),
                port.to_string().into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--dir".into(),
                dir.into(),
                "--logfile".into(),
                dir.join(format!("redis-{port}.log")).into(),
                "--dbfilename".into(),
                format!("dump-{port}.rdb").into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.join(format!("nodes-{port}.conf")).into(),
                "--cluster-node-timeout".into(),
                Self::NODE_TIMEOUT_MS.to_string().into(),
                "--cluster-port".into(),
                bus_port.to_string().into(),
                // Replicas sync at once, not after the default 5 s wait for more of them.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ];
            let tls_port = tls.map(|(files, tls_ports)| {
                args.extend([
                    "--tls-port".into(),
                    tls_ports[i].to_string().into(),
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                    "--tls-cert-file".into(),
                    files.cert.clone().into(),
                    "--tls-key-file".into(),
                    files.key.clone().into(),
                    "--tls-ca-cert-file".into(),
                    files.ca.clone().into(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
                tls_ports[i]
            });
            let child = spawn_redis_server(&args)?;
            cluster.nodes.push(NodeProcess {
                port,
                tls_port,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        cluster.wait_nodes_up(deadline)?;
        cluster.create(replicas_per_master)?;
        cluster.wait_until(deadline, "the cluster to form", || cluster.formed())?;
        Ok(cluster)
    }

    /// Waits until every node answers `PING`. A node that exits meanwhile fails it at once, with
    /// the logs, as [`std::io::ErrorKind::AddrInUse`] when it could not bind its ports.
    fn wait_nodes_up(&mut self, deadline: Instant) -> std::io::Result<()> {
        let mut up = vec![false; self.nodes.len()];
        loop {
            let exited = self.nodes.iter_mut().any(|node| {
                node.child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            });
            if exited {
                let logs = self.log_tails(5);
                return Err(start_failed(
                    &logs,
                    format!("a cluster node exited while starting\n{logs}"),
                ));
            }
            for (i, node) in self.nodes.iter().enumerate() {
                up[i] = up[i]
                    || connect(node.port)
                        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                        .is_some();
            }
            if up.iter().all(|u| *u) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "timed out waiting for every node to answer PING\n{}",
                        self.log_tails(5)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli --cluster create ... --cluster-replicas N --cluster-yes`.
    fn create(&self, replicas_per_master: usize) -> std::io::Result<()> {
        let bin = std::env::var("HMR2_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
        let out = Command::new(&bin)
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot run {bin} (install redis-tools, or run `make setup`): {e}"),
                )
            })?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "{bin} --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            )));
        }
        Ok(())
    }

    /// Polls `done` every 50 ms until it holds or `deadline` passes.
    fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) -> std::io::Result<()> {
        loop {
            if done() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("timed out waiting for {what}\n{}", self.log_tails(5)),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of every node's log, for an error message (the folder goes with it).
    fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let path = self.dir.path().join(format!("redis-{}.log", node.port));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- node {} ---\n", node.port);
            for line in &lines[lines.len().saturating_sub(n)..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// `CLUSTER INFO` of one node as `field -> value`, or `None` when it does not answer.
    fn cluster_info(port: u16) -> Option<std::collections::HashMap<String, String>> {
        let mut c = connect(port)?;
        let text: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Whether this node reports `cluster_state:ok` with every slot assigned and served.
    fn node_ok(port: u16) -> bool {
        let Some(info) = Self::cluster_info(port) else {
            return false;
        };
        let all = CLUSTER_SLOTS.to_string();
        info.get("cluster_state").map(String::as_str) == Some("ok")
            && info.get("cluster_slots_assigned") == Some(&all)
            && info.get("cluster_slots_ok") == Some(&all)
    }

    /// `CLUSTER NODES` as one node sees it.
    fn nodes_seen_by(port: u16) -> Option<Vec<ClusterNode>> {
        let mut c = connect(port)?;
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok()?;
        Some(parse_cluster_nodes(&text))
    }

    /// Every node ok, knowing every other node in its role (as many masters serving slots, and
    /// replicas of a master, as created), and every replica's link to its master up.
    fn formed(&self) -> bool {
        self.nodes.iter().all(|node| {
            if !Self::node_ok(node.port) {
                return false;
            }
            let Some(seen) = Self::nodes_seen_by(node.port) else {
                return false;
            };
            if seen.len() != self.nodes.len() || seen.iter().any(|n| n.has_flag("handshake")) {
                return false;
            }
            let serving = seen
                .iter()
                .filter(|n| n.is_live_master() && !n.slots.is_empty())
                .count();
            let replicas = seen
                .iter()
                .filter(|n| n.has_flag("slave") && n.master_id.is_some())
                .count();
            if serving != self.masters || replicas != self.nodes.len() - self.masters {
                return false;
            }
            let me = seen.iter().find(|n| n.has_flag("myself"));
            if me.is_some_and(|m| m.has_flag("slave")) {
                let Some(mut c) = connect(node.port) else {
                    return false;
                };
                let info: String = match redis::cmd("INFO").arg("replication").query(&mut c) {
                    Ok(s) => s,
                    Err(_) => return false,
                };
                return info.lines().any(|l| l.trim() == "master_link_status:up");
            }
            true
        })
    }

    /// Ports of the nodes whose process has not been killed.
    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// Every node's `redis://127.0.0.1:<port>` URL (killed ones included), in start order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Every node's `rediss://127.0.0.1:<tls port>` URL, when it speaks TLS.
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.tls_port)
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    /// The URL of a node still running, to seed a cluster client with.
    pub fn seed_url(&self) -> String {
        let port = self
            .live_ports()
            .next()
            .unwrap_or_else(|| self.nodes[0].port);
        format!("redis://127.0.0.1:{port}")
    }

    /// The URLs of the nodes still running.
    pub fn live_urls(&self) -> Vec<String> {
        self.live_ports()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The ports of every node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Its temporary folder (`nodes-<port>.conf`, `redis-<port>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The whole cluster as the first running node that answers sees it (`CLUSTER NODES`).
    pub fn nodes(&self) -> std::io::Result<Vec<ClusterNode>> {
        self.live_ports()
            .find_map(Self::nodes_seen_by)
            .ok_or_else(|| std::io::Error::other("no node of the cluster answers CLUSTER NODES"))
    }

    /// The current masters serving slots, not flagged as failed, ordered by their first slot
    /// (so index 0 serves slot 0).
    pub fn masters(&self) -> std::io::Result<Vec<ClusterNode>> {
        let mut masters: Vec<ClusterNode> = self
            .nodes()?
            .into_iter()
            .filter(|n| n.is_live_master() && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots.iter().map(|s| s.0).min());
        Ok(masters)
    }

    /// The current master serving this hash slot.
    pub fn master_for_slot(&self, slot: u16) -> std::io::Result<ClusterNode> {
        self.masters()?
            .into_iter()
            .find(|m| m.serves(slot))
            .ok_or_else(|| std::io::Error::other(format!("no live master serves slot {slot}")))
    }

    /// Kills `masters()[index]` at once (SIGKILL) and returns it as it was. Its replica takes
    /// over after the node timeout; see [`RedisCluster::wait_failover`].
    pub fn kill_master(&mut self, index: usize) -> std::io::Result<ClusterNode> {
        let masters = self.masters()?;
        let master = masters.get(index).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no master {index} (there are {})", masters.len()),
            )
        })?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == master.port)
            .ok_or_else(|| std::io::Error::other(format!("port {} is not ours", master.port)))?;
        if let Some(mut c) = node.child.take() {
            c.kill()?;
            let _ = c.wait();
        }
        self.killed.push(master.id.clone());
        Ok(master)
    }

    /// Waits (at most `timeout`, polling) until the slots of every master killed by
    /// [`RedisCluster::kill_master`] are served by another master, as every running node sees
    /// it, and every running node reports `cluster_state:ok` with all slots covered.
    pub fn wait_failover(&mut self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        let killed = self.killed.clone();
        let live: Vec<u16> = self.live_ports().collect();
        self.wait_until(deadline, "a replica to take over the killed master", || {
            live.iter().all(|&port| {
                Self::node_ok(port)
                    && Self::nodes_seen_by(port).is_some_and(|seen| {
                        seen.iter()
                            .filter(|n| killed.contains(&n.id))
                            .all(|n| n.slots.is_empty() && !n.is_live_master())
                    })
            })
        })?;
        self.killed.clear();
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        let ports = free_ports(40).unwrap();
        let again = free_ports(40).unwrap();
        assert!(
            ports.iter().all(|p| !again.contains(p)),
            "a port was handed out twice: {ports:?} {again:?}"
        );
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 40, "{ports:?}");
        for p in &ports {
            assert!(
                *p >= LOWEST_PORT && (*p < lo || *p > hi),
                "port {p} is in the ephemeral range {lo}-{hi}, where an outgoing connection can take it"
            );
        }
        // Released again: a server can bind every one of them.
        let held: Vec<TcpListener> = ports
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        assert_eq!(held.len(), 40);
    }

    #[test]
    fn a_server_whose_port_is_taken_fails_fast_and_says_so() {
        let taken = TcpListener::bind(("127.0.0.1", free_port().unwrap())).unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut s = RedisServer {
            port,
            dir: tempfile::Builder::new()
                .prefix("hmr2-redis-")
                .tempdir()
                .unwrap(),
            child: None,
            extra: vec!["--save".into(), "".into()],
        };
        let started = Instant::now();
        let err = s.spawn().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "waited out the ready timeout instead of seeing the exit"
        );
    }
}
