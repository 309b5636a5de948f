//! `RedisCluster`: a 3-master, 1-replica cluster on loopback ports forms, spreads the queue's hash
//! tags over the masters, takes stream writes through a cluster-aware client, and survives losing
//! a master (its replica is promoted and the data it had replicated stays readable).

use std::future::Future;
use std::time::{Duration, Instant};

use hmr2_tools::redis_server::{RedisCluster, CLUSTER_SLOTS};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands;

/// Each test, cluster start included, ends within this.
const TEST_LIMIT: Duration = Duration::from_secs(50);

fn jobs_key(shard: usize) -> String {
    format!("{{hmr2:{shard}}}:jobs")
}

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .expect("test ran past its time limit");
}

async fn start_cluster(masters: usize, replicas: usize) -> RedisCluster {
    let t = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start(masters, replicas))
        .await
        .unwrap()
        .expect("start the Redis Cluster");
    eprintln!(
        "cluster of {} nodes up in {:?}",
        cluster.urls().len(),
        t.elapsed()
    );
    cluster
}

async fn cluster_connection(urls: Vec<String>) -> ClusterConnection {
    ClusterClient::builder(urls)
        .retries(8)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .expect("connect the cluster client")
}

/// The hash slot of `key`, asked of one node.
fn keyslot(url: &str, key: &str) -> u16 {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut c)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forms_and_spreads_hash_tags_over_masters() {
    bounded(async {
        let cluster = start_cluster(3, 1).await;
        assert_eq!(cluster.urls().len(), 6);

        let masters = cluster.masters().unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        let covered: u32 = masters
            .iter()
            .flat_map(|m| &m.slots)
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        assert_eq!(covered, CLUSTER_SLOTS);
        let replicas: Vec<_> = cluster
            .nodes()
            .unwrap()
            .into_iter()
            .filter(|n| n.flags.iter().any(|f| f == "slave"))
            .collect();
        assert_eq!(replicas.len(), 3);
        for m in &masters {
            assert_eq!(
                replicas
                    .iter()
                    .filter(|r| r.master_id.as_deref() == Some(m.id.as_str()))
                    .count(),
                1,
                "one replica for master {}",
                m.port
            );
        }

        // The three queue hash tags land in slots served by three different masters.
        let seed = cluster.seed_url();
        let owners: Vec<(String, u16, u16)> = (0..3)
            .map(|i| {
                let key = jobs_key(i);
                let slot = keyslot(&seed, &key);
                let owner = masters.iter().find(|m| m.serves(slot)).unwrap().port;
                (key, slot, owner)
            })
            .collect();
        let mut ports: Vec<u16> = owners.iter().map(|o| o.2).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3, "hash tags share a master: {owners:?}");

        // XADD through the cluster client lands each stream on its slot's master.
        let mut con = cluster_connection(cluster.urls()).await;
        for (key, slot, owner) in &owners {
            let id: String = con.xadd(key, "*", &[("job", "j")]).await.unwrap();
            assert!(id.contains('-'), "stream id {id}");
            let len: usize = con.xlen(key).await.unwrap();
            assert_eq!(len, 1);
            let mut direct = redis::Client::open(format!("redis://127.0.0.1:{owner}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let n: usize = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(*slot)
                .query(&mut direct)
                .unwrap();
            assert_eq!(n, 1, "{key} (slot {slot}) on master {owner}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_takes_over_a_killed_master_with_its_data() {
    bounded(async {
        let mut cluster = start_cluster(3, 1).await;
        let mut con = cluster_connection(cluster.urls()).await;

        let key = jobs_key(0);
        let slot = keyslot(&cluster.seed_url(), &key);
        let mut ids = Vec::new();
        for i in 0..3 {
            let id: String = con
                .xadd(&key, "*", &[("job", format!("j{i}"))])
                .await
                .unwrap();
            ids.push(id);
        }
        // WAIT goes to every master; each has its one replica in sync.
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(acked >= 1, "WAIT 1 1000 acknowledged by {acked} replicas");

        let masters = cluster.masters().unwrap();
        let index = masters.iter().position(|m| m.serves(slot)).unwrap();
        let killed = cluster.kill_master(index).unwrap();
        let t = Instant::now();
        let cluster = tokio::task::spawn_blocking(move || {
            cluster
                .wait_failover(Duration::from_secs(30))
                .map(|()| cluster)
        })
        .await
        .unwrap()
        .expect("a replica takes over");
        eprintln!("failover of master {} in {:?}", killed.port, t.elapsed());

        let promoted = cluster.master_for_slot(slot).unwrap();
        assert_ne!(promoted.port, killed.port);
        assert_ne!(promoted.id, killed.id);
        assert_eq!(cluster.masters().unwrap().len(), 3);

        // The connection made before the failover finds the new master (it may need a few
        // tries while it refreshes its slot map), and so does a fresh one.
        let deadline = Instant::now() + Duration::from_secs(15);
        let entries: redis::streams::StreamRangeReply = loop {
            match con.xrange_all(&key).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("read after failover: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("read after failover: {e}"),
            }
        };
        let got: Vec<String> = entries.ids.into_iter().map(|e| e.id).collect();
        assert_eq!(got, ids);

        let mut fresh = cluster_connection(cluster.live_urls()).await;
        let len: usize = fresh.xlen(&key).await.unwrap();
        assert_eq!(len, ids.len());
        let _: String = fresh.xadd(&key, "*", &[("job", "after")]).await.unwrap();
        let len: usize = fresh.xlen(&key).await.unwrap();
        assert_eq!(len, ids.len() + 1);
        drop(cluster);
    })
    .await;
}
