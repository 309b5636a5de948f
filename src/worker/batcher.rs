//! The batching core, free of I/O: crops of many jobs are packed into forward passes of at most
//! `max_batch` frames (a job's people may span batches), and finished batches are folded back
//! into per-job outcomes. The coordinator in [`super`] only moves messages in and out of it.

use std::collections::{HashMap, VecDeque};

/// Items of one forward pass, from one or many jobs.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) id: u64,
    /// `n` items back to back (`n × 256 × 256 × 3` RGB bytes for HMR2).
    pub(crate) crops: Vec<u8>,
    pub(crate) n: usize,
    /// Whether any frame of the batch asked for vertices.
    pub(crate) vertices: bool,
}

/// Per-frame outcome of a batch, in order, with the batch's wall time.
#[derive(Debug)]
pub(crate) struct BatchDone<O> {
    pub(crate) id: u64,
    pub(crate) frames: Vec<Result<O, String>>,
    pub(crate) seconds: f64,
}

/// A job whose every person has been through the model.
#[derive(Debug)]
pub(crate) struct Finished<J, O> {
    pub(crate) job: J,
    /// One output per item, in the job's order; the first error when any item failed.
    pub(crate) outputs: Result<Vec<O>, String>,
    /// The job's share of the forward passes it was in, milliseconds.
    pub(crate) inference_ms: f64,
}

/// A job inside the batcher.
struct Slot<J, O> {
    job: J,
    crops: Vec<u8>,
    vertices: bool,
    outputs: Vec<Option<O>>,
    remaining: usize,
    failure: Option<String>,
    inference_ms: f64,
}

/// Jobs waiting for or in the device, and which person of which job each batch carries.
pub(crate) struct Batcher<J, O> {
    max_batch: usize,
    /// Bytes of one item.
    item: usize,
    jobs: HashMap<u64, Slot<J, O>>,
    /// (job, person) not dispatched yet, in arrival order.
    waiting: VecDeque<(u64, usize)>,
    /// Batches dispatched and not completed: their (job, person) items in order.
    running: HashMap<u64, Vec<(u64, usize)>>,
    next_job: u64,
    next_batch: u64,
}

impl<J, O> Batcher<J, O> {
    /// Batches of at most `max_batch` items of `item_bytes` each.
    pub(crate) fn new(max_batch: usize, item_bytes: usize) -> Self {
        assert!(max_batch > 0, "max_batch is validated to be at least 1");
        assert!(item_bytes > 0, "items have bytes");
        Batcher {
            max_batch,
            item: item_bytes,
            jobs: HashMap::new(),
            waiting: VecDeque::new(),
            running: HashMap::new(),
            next_job: 0,
            next_batch: 0,
        }
    }

    /// Adds a job with `crops` (one item per person, back to back). A job with no items is
    /// finished at once and handed back.
    pub(crate) fn add(&mut self, job: J, crops: Vec<u8>, vertices: bool) -> Option<Finished<J, O>> {
        debug_assert_eq!(crops.len() % self.item, 0, "whole items only");
        let n = crops.len() / self.item;
        if n == 0 {
            return Some(Finished {
                job,
                outputs: Ok(Vec::new()),
                inference_ms: 0.0,
            });
        }
        let key = self.next_job;
        self.next_job += 1;
        self.waiting.extend((0..n).map(|p| (key, p)));
        self.jobs.insert(
            key,
            Slot {
                job,
                crops,
                vertices,
                outputs: (0..n).map(|_| None).collect(),
                remaining: n,
                failure: None,
                inference_ms: 0.0,
            },
        );
        None
    }

    /// Whether a batch should go to the device now: a full one is waiting, or anything is
    /// waiting and the device is idle (`device_idle`: no batch of any kind in flight).
    pub(crate) fn should_dispatch(&self, device_idle: bool) -> bool {
        !self.waiting.is_empty() && (self.waiting.len() >= self.max_batch || device_idle)
    }

    /// Takes the next batch: up to `max_batch` waiting crops, oldest first. `None` when nothing
    /// waits.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if self.waiting.is_empty() {
            return None;
        }
        let take = self.waiting.len().min(self.max_batch);
        let items: Vec<(u64, usize)> = self.waiting.drain(..take).collect();
        let mut crops = Vec::with_capacity(items.len() * self.item);
        let mut vertices = false;
        for (job, person) in &items {
            let slot = &self.jobs[job];
            vertices |= slot.vertices;
            crops.extend_from_slice(&slot.crops[person * self.item..(person + 1) * self.item]);
        }
        let id = self.next_batch;
        self.next_batch += 1;
        let n = items.len();
        self.running.insert(id, items);
        Some(Batch {
            id,
            crops,
            n,
            vertices,
        })
    }

    /// Folds a finished batch back into its jobs; returns the jobs it completed.
    pub(crate) fn complete(&mut self, done: BatchDone<O>) -> Vec<Finished<J, O>> {
        let Some(items) = self.running.remove(&done.id) else {
            return Vec::new();
        };
        debug_assert_eq!(items.len(), done.frames.len(), "one outcome per frame");
        let share_ms = done.seconds * 1e3 / items.len().max(1) as f64;
        let mut finished = Vec::new();
        for ((job, person), frame) in items.into_iter().zip(done.frames) {
            let Some(slot) = self.jobs.get_mut(&job) else {
                continue;
            };
            match frame {
                Ok(out) => slot.outputs[person] = Some(out),
                Err(e) => {
                    slot.failure.get_or_insert(e);
                }
            }
            slot.inference_ms += share_ms;
            slot.remaining -= 1;
            if slot.remaining == 0 {
                let slot = self.jobs.remove(&job).expect("present");
                let outputs = match slot.failure {
                    Some(e) => Err(e),
                    None => Ok(slot
                        .outputs
                        .into_iter()
                        .map(|o| o.expect("every person has an output"))
                        .collect()),
                };
                finished.push(Finished {
                    job: slot.job,
                    outputs,
                    inference_ms: slot.inference_ms,
                });
            }
        }
        finished
    }

    /// No job waiting or in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Batches dispatched and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::CROP_BYTES;
    use crate::model::FrameOutput;

    fn batcher(max: usize) -> Batcher<&'static str, FrameOutput> {
        Batcher::new(max, CROP_BYTES)
    }

    /// `n` crops whose first byte numbers them `first..first + n`.
    fn crops(first: u8, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n * CROP_BYTES];
        for i in 0..n {
            v[i * CROP_BYTES] = first + i as u8;
        }
        v
    }

    /// The first byte of each crop of a batch.
    fn tags(b: &Batch) -> Vec<u8> {
        b.crops.chunks_exact(CROP_BYTES).map(|c| c[0]).collect()
    }

    /// A model stand-in: each output's `pred_cam[0]` is its crop's tag.
    fn run(b: &Batch) -> BatchDone<FrameOutput> {
        BatchDone {
            id: b.id,
            frames: tags(b)
                .into_iter()
                .map(|t| Ok(FrameOutput::stand_in([t as f32, 0.0, 0.0])))
                .collect(),
            seconds: 0.004,
        }
    }

    fn cams(f: &Finished<&str, FrameOutput>) -> Vec<u8> {
        f.outputs
            .as_ref()
            .expect("ok")
            .iter()
            .map(|o| o.pred_cam()[0] as u8)
            .collect()
    }

    #[test]
    fn crops_of_many_jobs_share_a_batch_up_to_max_batch() {
        let mut b = batcher(4);
        assert!(b.add("a", crops(10, 1), false).is_none());
        assert!(b.add("b", crops(20, 2), true).is_none());
        assert!(b.add("c", crops(30, 3), false).is_none());
        assert!(b.should_dispatch(b.in_flight() == 0));
        let first = b.take_batch().unwrap();
        assert_eq!(first.n, 4);
        assert_eq!(tags(&first), [10, 20, 21, 30]);
        assert!(first.vertices, "b asked for vertices");
        assert_eq!(first.crops.len(), 4 * CROP_BYTES);
        // Two crops wait, one batch is in flight: not a full batch, device busy → hold.
        assert!(!b.should_dispatch(b.in_flight() == 0));
        let second = b.take_batch().unwrap();
        assert_eq!(tags(&second), [31, 32]);
        assert!(!second.vertices);
        assert!(b.take_batch().is_none());
    }

    #[test]
    fn an_idle_device_gets_a_partial_batch_and_a_full_one_goes_at_once() {
        let mut b = batcher(8);
        assert!(!b.should_dispatch(b.in_flight() == 0), "nothing waits");
        b.add("a", crops(0, 1), false);
        assert!(
            b.should_dispatch(b.in_flight() == 0),
            "device idle: send what there is"
        );
        let one = b.take_batch().unwrap();
        b.add("b", crops(1, 7), false);
        assert!(!b.should_dispatch(b.in_flight() == 0), "device busy, 7 < 8");
        b.add("c", crops(8, 1), false);
        assert!(b.should_dispatch(b.in_flight() == 0), "a full batch waits");
        assert_eq!(b.take_batch().unwrap().n, 8);
        assert_eq!(b.in_flight(), 2);
        assert!(b.complete(run(&one)).len() == 1);
    }

    #[test]
    fn a_job_spanning_batches_completes_once_with_outputs_in_person_order() {
        let mut b = batcher(3);
        b.add("a", crops(1, 1), false);
        b.add("b", crops(10, 4), false);
        let first = b.take_batch().unwrap(); // a0 b0 b1
        let second = b.take_batch().unwrap(); // b2 b3
                                              // The later batch finishes first: b is not complete until both are back.
        assert!(b.complete(run(&second)).is_empty());
        let done = b.complete(run(&first));
        let names: Vec<_> = done.iter().map(|f| f.job).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(cams(&done[0]), [1]);
        assert_eq!(cams(&done[1]), [10, 11, 12, 13]);
        // b was in two batches of 4 ms: 2 of 3 frames of the first, 2 of 2 of the second.
        let ms = done[1].inference_ms;
        assert!((ms - (4.0 * 2.0 / 3.0 + 4.0)).abs() < 1e-9, "{ms}");
        assert!(b.is_empty());
    }

    #[test]
    fn one_failed_frame_fails_its_job_only() {
        let mut b = batcher(4);
        b.add("a", crops(0, 2), false);
        b.add("b", crops(5, 1), false);
        let batch = b.take_batch().unwrap();
        let mut done = run(&batch);
        done.frames[1] = Err("out of memory".into());
        let finished = b.complete(done);
        assert_eq!(finished.len(), 2);
        let a = finished.iter().find(|f| f.job == "a").unwrap();
        assert_eq!(a.outputs.as_ref().unwrap_err(), "out of memory");
        let bb = finished.iter().find(|f| f.job == "b").unwrap();
        assert_eq!(cams(bb), [5]);
    }

    #[test]
    fn a_job_without_people_finishes_at_once_and_unknown_batches_are_ignored() {
        let mut b = batcher(2);
        let f = b.add("empty", Vec::new(), false).expect("finished at once");
        assert!(f.outputs.unwrap().is_empty());
        assert!(b.is_empty());
        assert!(!b.should_dispatch(b.in_flight() == 0));
        let stray = BatchDone {
            id: 99,
            frames: Vec::new(),
            seconds: 0.0,
        };
        assert!(b.complete(stray).is_empty());
    }
}
