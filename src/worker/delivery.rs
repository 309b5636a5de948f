//! What the fetcher hands down the pipeline: a delivered entry with the in-flight permit that
//! bounds the pipeline and the lease that keeps other workers from reclaiming it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::queue::Entry;

/// A fetched entry, the permit that bounds the pipeline, and its lease.
pub(crate) struct Delivery {
    pub(crate) entry: Entry,
    pub(crate) fetched: Instant,
    pub(crate) queue_wait_ms: f64,
    _permit: OwnedSemaphorePermit,
    _lease: Lease,
}

impl Delivery {
    /// An entry just fetched, `queue_wait_ms` after it was added.
    pub(crate) fn new(
        entry: Entry,
        queue_wait_ms: f64,
        permit: OwnedSemaphorePermit,
        lease: Lease,
    ) -> Self {
        Delivery {
            entry,
            fetched: Instant::now(),
            queue_wait_ms,
            _permit: permit,
            _lease: lease,
        }
    }
}

/// The ids of the entries this worker holds; their idle time is reset periodically so other
/// workers do not reclaim jobs that are merely queued here. Counted per id: two deliveries of
/// one id on this worker hold two leases, and the id stays leased until both are done.
#[derive(Clone, Default)]
pub(crate) struct Leases(Arc<Mutex<HashMap<String, usize>>>);

/// Membership of one entry in [`Leases`], ended when the delivery is dropped (published,
/// dead-lettered, failed or abandoned).
pub(crate) struct Lease {
    leases: Leases,
    id: String,
}

impl Leases {
    pub(crate) fn take(&self, id: &str) -> Lease {
        *self
            .0
            .lock()
            .expect("lease set")
            .entry(id.to_string())
            .or_default() += 1;
        Lease {
            leases: self.clone(),
            id: id.to_string(),
        }
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.0.lock().expect("lease set").keys().cloned().collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut set = self.leases.0.lock().expect("lease set");
        if let Some(n) = set.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                set.remove(&self.id);
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
        let a = leases.take("1-0");
        let b = leases.take("2-0");
        let mut ids = leases.ids();
        ids.sort();
        assert_eq!(ids, ["1-0", "2-0"]);
        drop(a);
        assert_eq!(leases.ids(), ["2-0"]);
        drop(b);
        assert!(leases.ids().is_empty());
    }

    #[test]
    fn two_deliveries_of_one_id_hold_two_leases() {
        let leases = Leases::default();
        let first = leases.take("1-0");
        let second = leases.take("1-0");
        drop(first);
        assert_eq!(leases.ids(), ["1-0"], "the second delivery is still leased");
        drop(second);
        assert!(leases.ids().is_empty());
    }
}
