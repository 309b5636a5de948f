//! The dispatch policy of one device, free of I/O: which batch goes to the inference thread
//! next, and what becomes of a job when the device answers. The coordinator
//! ([`super::coordinator`]) only moves messages between this and the channels.
//!
//! A job enters with either its crops (HMR2 input) or its letterboxed frame (detector input).
//! Detector batches go first, because they feed HMR2; a batch of either kind goes when it is
//! full, or when anything waits and the device is idle (no batch of any kind in flight). A
//! frame the detector has answered comes back as [`Next::Crop`]: its people are cut on a CPU
//! thread, and the job re-enters with [`Scheduler::cropped`]. A job whose people have all been
//! through HMR2 (or whose detector pass failed) comes back as [`Next::Publish`].

use crate::detector::Detection;
use crate::model::FrameOutput;

use super::batcher::{Batcher, Finished};
use super::infer::{Done, Work};

/// What a job brings to the scheduler.
#[derive(Debug)]
pub(crate) enum Input {
    /// Its people's crops, back to back, and whether the result wants vertices.
    Crops { crops: Vec<u8>, vertices: bool },
    /// Its letterboxed frame, for the detector.
    Detect(Vec<u8>),
}

/// What the coordinator does next with a job the device has answered.
#[derive(Debug)]
pub(crate) enum Next<J> {
    /// Every person has been through HMR2, or the job failed: publish (or leave pending).
    Publish(Finished<J, FrameOutput>),
    /// The detector found these boxes (in its share of `detect_ms` of forward passes): cut the
    /// crops, then hand the job back with [`Scheduler::cropped`].
    Crop {
        job: J,
        detections: Vec<Detection>,
        detect_ms: f64,
    },
}

/// Both batchers of one device and the jobs between them.
pub(crate) struct Scheduler<J> {
    hmr: Batcher<J, FrameOutput>,
    det: Batcher<J, Vec<Detection>>,
    /// Jobs handed out with [`Next::Crop`] and not handed back yet.
    cropping: usize,
}

impl<J> Scheduler<J> {
    /// Batches of at most `max_batch` items; HMR2 items are `crop_bytes` long, detector items
    /// `letterbox_bytes` (any positive number when there is no detector).
    pub(crate) fn new(max_batch: usize, crop_bytes: usize, letterbox_bytes: usize) -> Self {
        Scheduler {
            hmr: Batcher::new(max_batch, crop_bytes),
            det: Batcher::new(max_batch, letterbox_bytes.max(1)),
            cropping: 0,
        }
    }

    /// Takes a job in. A job with no people is finished at once and handed back to publish.
    pub(crate) fn add(&mut self, job: J, input: Input) -> Option<Finished<J, FrameOutput>> {
        match input {
            Input::Crops { crops, vertices } => self.hmr.add(job, crops, vertices),
            Input::Detect(letterbox) => {
                // One letterbox is one item: a frame is never finished before the detector.
                let finished = self.det.add(job, letterbox, false);
                debug_assert!(finished.is_none(), "a letterbox is one item");
                None
            }
        }
    }

    /// A job handed out with [`Next::Crop`] comes back with its people's crops.
    pub(crate) fn cropped(
        &mut self,
        job: J,
        crops: Vec<u8>,
        vertices: bool,
    ) -> Option<Finished<J, FrameOutput>> {
        debug_assert!(self.cropping > 0, "cropped() without a Next::Crop");
        self.cropping = self.cropping.saturating_sub(1);
        self.hmr.add(job, crops, vertices)
    }

    /// The batch that should go to the device now, if any: detector batches first (they feed
    /// HMR2); a batch goes when it is full or when the device is idle. Call it while the
    /// device's channel has room.
    pub(crate) fn next_work(&mut self) -> Option<Work> {
        let idle = self.hmr.in_flight() == 0 && self.det.in_flight() == 0;
        if self.det.should_dispatch(idle) {
            return self.det.take_batch().map(Work::Detect);
        }
        if self.hmr.should_dispatch(idle) {
            return self.hmr.take_batch().map(Work::Hmr);
        }
        None
    }

    /// Folds the device's answer back into its jobs: what to do next with each job it
    /// completed.
    pub(crate) fn on_done(&mut self, done: Done) -> Vec<Next<J>> {
        match done {
            Done::Hmr(b) => self
                .hmr
                .complete(b)
                .into_iter()
                .map(Next::Publish)
                .collect(),
            Done::Detect(b) => self
                .det
                .complete(b)
                .into_iter()
                .map(|f| match f.outputs {
                    Ok(mut per_frame) => {
                        self.cropping += 1;
                        Next::Crop {
                            job: f.job,
                            detections: per_frame.pop().unwrap_or_default(),
                            detect_ms: f.inference_ms,
                        }
                    }
                    Err(e) => Next::Publish(Finished {
                        job: f.job,
                        outputs: Err(e),
                        inference_ms: f.inference_ms,
                    }),
                })
                .collect(),
        }
    }

    /// Nothing waits, runs or is being cropped: every job taken in has been handed back to
    /// publish.
    pub(crate) fn is_drained(&self) -> bool {
        self.hmr.is_empty() && self.det.is_empty() && self.cropping == 0
    }

    /// Jobs being cropped (handed out with [`Next::Crop`], not handed back yet).
    pub(crate) fn cropping(&self) -> usize {
        self.cropping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ModelError;
    use crate::model::FrameOutput;
    use crate::worker::batcher::{Batch, BatchDone};
    use crate::worker::infer::ladder;

    const CROP: usize = 4;
    const LETTERBOX: usize = 8;

    fn sched(max: usize) -> Scheduler<&'static str> {
        Scheduler::new(max, CROP, LETTERBOX)
    }

    fn crops(n: usize) -> Input {
        Input::Crops {
            crops: vec![0; n * CROP],
            vertices: false,
        }
    }

    fn frame() -> Input {
        Input::Detect(vec![0; LETTERBOX])
    }

    fn out() -> FrameOutput {
        FrameOutput::stand_in([0.0; 3])
    }

    /// The device's answer to `work`: every HMR2 item succeeds; every detector frame finds
    /// `people` boxes.
    fn answer(work: &Work, people: usize) -> Done {
        match work {
            Work::Hmr(b) => Done::Hmr(BatchDone {
                id: b.id,
                frames: (0..b.n).map(|_| Ok(out())).collect(),
                seconds: 0.001,
            }),
            Work::Detect(b) => Done::Detect(BatchDone {
                id: b.id,
                frames: (0..b.n)
                    .map(|_| {
                        Ok((0..people)
                            .map(|_| Detection {
                                bbox: [0.0, 0.0, 10.0, 10.0],
                                score: 0.9,
                            })
                            .collect())
                    })
                    .collect(),
                seconds: 0.002,
            }),
        }
    }

    fn batch(w: &Work) -> &Batch {
        match w {
            Work::Hmr(b) | Work::Detect(b) => b,
        }
    }

    fn is_detect(w: &Work) -> bool {
        matches!(w, Work::Detect(_))
    }

    #[test]
    fn detector_batches_go_before_hmr_batches() {
        let mut s = sched(2);
        s.add("crops", crops(2));
        s.add("frame-a", frame());
        s.add("frame-b", frame());
        // Both kinds hold a full batch: the detector's goes first, then HMR2's.
        let first = s.next_work().expect("a full detector batch");
        assert!(is_detect(&first), "the detector feeds HMR2: it goes first");
        assert_eq!(batch(&first).n, 2);
        let second = s.next_work().expect("a full HMR2 batch");
        assert!(!is_detect(&second));
        assert!(s.next_work().is_none());
    }

    #[test]
    fn hmr_batches_go_when_full_or_when_the_device_is_idle() {
        let mut s = sched(4);
        assert!(s.next_work().is_none(), "nothing waits");
        s.add("a", crops(1));
        let partial = s.next_work().expect("device idle: what there is goes");
        assert_eq!(batch(&partial).n, 1);
        s.add("b", crops(3));
        assert!(s.next_work().is_none(), "device busy and 3 < 4: hold");
        s.add("c", crops(1));
        let full = s.next_work().expect("a full batch goes even while busy");
        assert_eq!(batch(&full).n, 4);
        assert!(s.next_work().is_none());
        let done: Vec<_> = s
            .on_done(answer(&full, 0))
            .into_iter()
            .chain(s.on_done(answer(&partial, 0)))
            .collect();
        assert_eq!(done.len(), 3, "a, b and c finished");
        assert!(s.is_drained());
    }

    #[test]
    fn the_people_of_one_job_span_batches_and_publish_once() {
        let mut s = sched(2);
        s.add("five", crops(5));
        let mut sent = Vec::new();
        while let Some(w) = s.next_work() {
            sent.push(w);
        }
        // Idle: the first goes; then full batches go while busy; the last single waits.
        assert_eq!(sent.iter().map(|w| batch(w).n).collect::<Vec<_>>(), [2, 2]);
        let mut published = Vec::new();
        for w in sent.drain(..) {
            published.extend(s.on_done(answer(&w, 0)));
        }
        assert!(published.is_empty(), "one person still waits");
        let last = s
            .next_work()
            .expect("device idle again: the last person goes");
        assert_eq!(batch(&last).n, 1);
        let done = s.on_done(answer(&last, 0));
        let [Next::Publish(f)] = &done[..] else {
            panic!("one publish, got {done:?}")
        };
        assert_eq!(f.job, "five");
        assert_eq!(f.outputs.as_ref().unwrap().len(), 5);
        assert!(s.is_drained());
    }

    #[test]
    fn a_job_with_zero_people_publishes_at_once() {
        let mut s = sched(4);
        let f = s.add("nobody", crops(0)).expect("finished at once");
        assert!(f.outputs.unwrap().is_empty());
        assert!(s.next_work().is_none());
        assert!(s.is_drained());
        // A detected frame where the detector found nobody (and on_empty = skip): zero crops.
        s.add("empty-frame", frame());
        let det = s.next_work().unwrap();
        let [Next::Crop {
            job, detections, ..
        }] = &s.on_done(answer(&det, 0))[..]
        else {
            panic!("the frame goes to cropping")
        };
        assert!(detections.is_empty());
        assert!(!s.is_drained(), "a job being cropped is not drained");
        let f = s
            .cropped(job, Vec::new(), false)
            .expect("no people: at once");
        assert_eq!(f.job, "empty-frame");
        assert!(s.is_drained());
    }

    #[test]
    fn a_detected_frame_is_cropped_then_run_through_hmr() {
        let mut s = sched(4);
        s.add("frame", frame());
        let det = s.next_work().unwrap();
        assert!(is_detect(&det));
        let next = s.on_done(answer(&det, 3));
        let [Next::Crop {
            job,
            detections,
            detect_ms,
        }] = &next[..]
        else {
            panic!("one crop, got {next:?}")
        };
        assert_eq!(detections.len(), 3);
        assert!(
            (detect_ms - 2.0).abs() < 1e-9,
            "the frame's share: {detect_ms}"
        );
        assert_eq!(s.cropping(), 1);
        assert!(s.cropped(job, vec![0; 3 * CROP], false).is_none());
        let hmr = s.next_work().expect("device idle: the three people go");
        assert_eq!(batch(&hmr).n, 3);
        let [Next::Publish(f)] = &s.on_done(answer(&hmr, 0))[..] else {
            panic!("published")
        };
        assert_eq!(f.outputs.as_ref().unwrap().len(), 3);
        assert!(s.is_drained());
    }

    #[test]
    fn a_failed_detector_frame_is_published_as_failed_without_cropping() {
        let mut s = sched(2);
        s.add("ok", frame());
        s.add("bad", frame());
        let det = s.next_work().unwrap();
        let Done::Detect(mut d) = answer(&det, 1) else {
            unreachable!()
        };
        d.frames[1] = Err("out of memory".into());
        let next = s.on_done(Done::Detect(d));
        assert!(matches!(&next[0], Next::Crop { job: "ok", .. }));
        let Next::Publish(f) = &next[1] else {
            panic!("the failed frame is not cropped")
        };
        assert_eq!(f.job, "bad");
        assert_eq!(f.outputs.as_ref().unwrap_err(), "out of memory");
        assert_eq!(s.cropping(), 1);
    }

    #[test]
    fn a_detector_oom_halves_only_detector_batches() {
        let mut s = sched(4);
        for name in ["f0", "f1", "f2", "f3"] {
            s.add(name, frame());
        }
        s.add("crops", crops(4));
        let det = s.next_work().unwrap();
        assert!(is_detect(&det) && batch(&det).n == 4);
        // The inference thread's ladder, with a detector that fits two frames at a time.
        let mut passes = Vec::new();
        let mut run = |_: &[u8], n: usize| {
            passes.push(n);
            if n > 2 {
                Err(ModelError::OutOfMemory("fits 2".into()))
            } else {
                Ok((0..n).map(|_| Vec::<Detection>::new()).collect())
            }
        };
        let b = batch(&det);
        let frames = ladder(&mut run, &b.crops, b.n, LETTERBOX, &mut || {}).unwrap();
        assert_eq!(passes, [4, 2, 2], "the detector batch was halved");
        let next = s.on_done(Done::Detect(BatchDone {
            id: b.id,
            frames,
            seconds: 0.01,
        }));
        assert_eq!(next.len(), 4, "no frame lost");
        // HMR2 batches keep their full size.
        let hmr = s.next_work().expect("full HMR2 batch");
        assert!(!is_detect(&hmr));
        assert_eq!(batch(&hmr).n, 4);
    }

    #[test]
    fn shutdown_with_work_in_every_stage_drains_every_job() {
        let mut s = sched(2);
        // In flight on the device, waiting for HMR2, waiting for the detector, being cropped.
        s.add("running", crops(2));
        let running = s.next_work().unwrap();
        s.add("waiting", crops(1));
        s.add("to-detect", frame());
        s.add("detected", frame());
        // Input closed now (shutdown): nothing new comes, everything taken in must come out.
        let mut published = Vec::new();
        let mut in_flight = vec![running];
        let mut to_crop = Vec::new();
        let mut rounds = 0;
        while !s.is_drained() {
            rounds += 1;
            assert!(rounds < 100, "the scheduler does not drain");
            while let Some(w) = s.next_work() {
                in_flight.push(w);
            }
            if let Some(w) = in_flight.pop() {
                for n in s.on_done(answer(&w, 1)) {
                    match n {
                        Next::Publish(f) => published.push(f.job),
                        Next::Crop { job, .. } => to_crop.push(job),
                    }
                }
            }
            for job in to_crop.drain(..) {
                if let Some(f) = s.cropped(job, vec![0; CROP], false) {
                    published.push(f.job);
                }
            }
        }
        published.sort();
        assert_eq!(published, ["detected", "running", "to-detect", "waiting"]);
    }
}
