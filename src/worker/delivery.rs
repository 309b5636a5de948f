//! What the fetcher hands down the pipeline: a delivered entry with the in-flight permit that
//! bounds the pipeline, the lease that keeps other workers from reclaiming it, and the job's
//! tracing span (born here, so every log line of its decode, inference and publish carries it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::queue::Entry;

/// A fetched entry, the permit that bounds the pipeline, its lease and its span.
pub(crate) struct Delivery {
    pub(crate) entry: Entry,
    pub(crate) fetched: Instant,
    pub(crate) queue_wait_ms: f64,
    /// The `job` span: `entry`, `shard`, `deliveries`, and `job_id` once the job is parsed.
    pub(crate) span: tracing::Span,
    _permit: OwnedSemaphorePermit,
    _lease: Lease,
}

impl Delivery {
    /// Records the job's id in its span once the job is parsed.
    pub(crate) fn record_job_id(&self, job_id: Option<&str>) {
        if let Some(id) = job_id {
            self.span.record("job_id", id);
        }
    }

    /// An entry just fetched, `queue_wait_ms` after it was added.
    pub(crate) fn new(
        entry: Entry,
        queue_wait_ms: f64,
        permit: OwnedSemaphorePermit,
        lease: Lease,
    ) -> Self {
        let span = tracing::info_span!(
            "job",
            entry = %entry.id,
            shard = entry.shard,
            deliveries = entry.deliveries,
            job_id = tracing::field::Empty,
        );
        Delivery {
            span,
            entry,
            fetched: Instant::now(),
            queue_wait_ms,
            _permit: permit,
            _lease: lease,
        }
    }
}

/// The shards and ids of the entries this worker holds; their idle time is reset periodically
/// so other workers do not reclaim jobs that are merely queued here. Counted per entry: two
/// deliveries of one entry on this worker hold two leases, and the entry stays leased until
/// both are done. (Two shards' streams can hold the same id: the shard is part of the key.)
#[derive(Clone, Default)]
pub(crate) struct Leases(Arc<Mutex<HashMap<(usize, String), usize>>>);

/// Membership of one entry in [`Leases`], ended when the delivery is dropped (published,
/// dead-lettered, failed or abandoned).
pub(crate) struct Lease {
    leases: Leases,
    key: (usize, String),
}

impl Leases {
    pub(crate) fn take(&self, shard: usize, id: &str) -> Lease {
        let key = (shard, id.to_string());
        *self
            .0
            .lock()
            .expect("lease set")
            .entry(key.clone())
            .or_default() += 1;
        Lease {
            leases: self.clone(),
            key,
        }
    }

    /// The leased ids of shard `shard`.
    pub(crate) fn ids(&self, shard: usize) -> Vec<String> {
        self.0
            .lock()
            .expect("lease set")
            .keys()
            .filter(|(s, _)| *s == shard)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut set = self.leases.0.lock().expect("lease set");
        if let Some(n) = set.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                set.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lasts_as_long_as_its_delivery() {
        let leases = Leases::default();
        let a = leases.take(0, "1-0");
        let b = leases.take(0, "2-0");
        let mut ids = leases.ids(0);
        ids.sort();
        assert_eq!(ids, ["1-0", "2-0"]);
        drop(a);
        assert_eq!(leases.ids(0), ["2-0"]);
        drop(b);
        assert!(leases.ids(0).is_empty());
    }

    #[test]
    fn two_deliveries_of_one_id_hold_two_leases() {
        let leases = Leases::default();
        let first = leases.take(0, "1-0");
        let second = leases.take(0, "1-0");
        drop(first);
        assert_eq!(
            leases.ids(0),
            ["1-0"],
            "the second delivery is still leased"
        );
        drop(second);
        assert!(leases.ids(0).is_empty());
    }

    #[test]
    fn the_same_id_on_two_shards_is_two_entries() {
        let leases = Leases::default();
        let a = leases.take(0, "1-0");
        let b = leases.take(3, "1-0");
        assert_eq!(leases.ids(0), ["1-0"]);
        assert_eq!(leases.ids(3), ["1-0"]);
        drop(a);
        assert!(leases.ids(0).is_empty());
        assert_eq!(leases.ids(3), ["1-0"]);
        drop(b);
    }
}
