//! What the fetcher hands down the pipeline: a delivered entry with the in-flight permit that
//! bounds the pipeline, the lease that keeps other workers from reclaiming it, and the job's
//! tracing span (born here, so every log line of its decode, inference and publish carries it).
//! Beside the permits, the [`PixelBudget`]: the decoded pixels the jobs in flight may hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The decoded pixels the worker may hold at once (`limits.max_decoded_bytes_in_flight`),
/// counted in KiB: a frame is charged its decoded size before it is decoded, and the charge
/// lasts as long as its pixels ([`PixelCharge`]: dropped with the frame, once its crops are cut).
/// Charges are granted first come, first served, and none is larger than the whole budget, so
/// the largest frame always fits once the frames before it are done: frames waiting for the
/// detector are cropped whatever the decoders wait for, so the budget always comes back.
#[derive(Clone, Debug)]
pub(crate) struct PixelBudget {
    kib: Arc<Semaphore>,
    /// The whole budget, KiB.
    total: u32,
    /// The charge of the largest frame (`3 × max_pixels`), KiB, at most `total`.
    largest: u32,
}

/// Decoded pixels charged to the [`PixelBudget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct PixelCharge {
    _kib: OwnedSemaphorePermit,
}

impl PixelBudget {
    /// A budget of `bytes` for frames of at most `largest` bytes.
    pub(crate) fn new(bytes: u64, largest: u64) -> Self {
        let total = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        PixelBudget {
            kib: Arc::new(Semaphore::new(total as usize)),
            total,
            largest: Self::kib(largest).min(total),
        }
    }

    /// `bytes` in KiB, rounded up.
    fn kib(bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The charge for `bytes` of decoded pixels, when it fits now.
    pub(crate) fn try_charge(&self, bytes: u64) -> Option<PixelCharge> {
        let n = Self::kib(bytes).min(self.total);
        self.kib
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| PixelCharge { _kib: p })
    }

    /// The charge for `bytes` of decoded pixels, waiting (on a blocking thread of the runtime)
    /// until it fits.
    pub(crate) fn charge_blocking(&self, bytes: u64) -> PixelCharge {
        if let Some(c) = self.try_charge(bytes) {
            return c;
        }
        let n = Self::kib(bytes).min(self.total);
        tracing::debug!(bytes, "decoded pixels over budget: waiting");
        let kib = tokio::runtime::Handle::current()
            .block_on(self.kib.clone().acquire_many_owned(n))
            .expect("the budget is never closed");
        PixelCharge { _kib: kib }
    }

    /// Waits until the largest frame would fit (taking nothing): the fetcher reads no more while
    /// the budget is spent.
    pub(crate) async fn room(&self) {
        let _ = self
            .kib
            .acquire_many(self.largest)
            .await
            .expect("the budget is never closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pixel_charge_lasts_as_long_as_its_frame_and_the_largest_always_fits() {
        // 10 KiB for frames of at most 4 KiB.
        let b = PixelBudget::new(10 * 1024, 4 * 1024);
        let a = b.try_charge(4 * 1024).expect("fits");
        let c = b.try_charge(4 * 1024).expect("fits");
        assert!(b.try_charge(4 * 1024).is_none(), "8 of 10 KiB are charged");
        let small = b.try_charge(1).expect("rounded up to 1 KiB: fits");
        assert!(
            b.try_charge(1025).is_none(),
            "2 KiB do not fit in the 1 left"
        );
        drop((a, small));
        assert!(
            b.try_charge(4 * 1024).is_some(),
            "given back with the frame"
        );
        drop(c);
        // A charge larger than the whole budget takes the whole budget: it always fits alone.
        let whole = b.try_charge(1 << 30).expect("fits alone");
        assert!(b.try_charge(1).is_none());
        drop(whole);
        assert!(b.try_charge(10 * 1024).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decoder_and_the_fetcher_wait_while_the_budget_is_spent() {
        let b = PixelBudget::new(8 * 1024, 4 * 1024);
        let held = b.try_charge(6 * 1024).expect("fits");
        // The fetcher waits for room for the largest frame (4 KiB; 2 are free).
        let room = tokio::spawn({
            let b = b.clone();
            async move { b.room().await }
        });
        // A decoder waits for its frame's 3 KiB.
        let decoder = tokio::task::spawn_blocking({
            let b = b.clone();
            move || b.charge_blocking(3 * 1024)
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished() && !decoder.is_finished());
        drop(held);
        room.await.unwrap();
        let charge = decoder.await.unwrap();
        assert!(b.try_charge(5 * 1024).is_some(), "3 of 8 KiB charged");
        drop(charge);
    }

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
