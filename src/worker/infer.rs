//! The inference thread: owns the models (one thread per device), runs batches under
//! `no_grad`, splits a batch in half on out-of-memory down to single frames ([`ladder`]), and
//! applies the GPU memory policy ([`super::memory`]) around every batch.
//!
//! Inputs are always well-formed fixed-shape crops, so a forward pass that panics (tch panics on
//! libtorch errors outside its `f_` API) or fails with anything but out-of-memory means the model
//! or the device is broken: the thread marks the worker broken ([`Health::mark_broken`]), fails
//! the batch's frames (nothing is acknowledged; the jobs stay pending for other workers) and
//! stops running the model: every later batch fails at once. Each batch holds
//! [`Health::busy`] while it runs, so a hung device shows as a stall.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use metrics::histogram;
use tokio::sync::{mpsc, oneshot};

use super::batcher::{Batch, BatchDone};
use super::memory::{Allocator, Cuda, Memory};
use crate::config::GpuConfig;
use crate::detector::{Detection, Detector, DetectorMeta};
use crate::error::ModelError;
use crate::gpu::GpuSampler;
use crate::health::{Health, Input};
use crate::image::CROP_BYTES;
use crate::metrics as m;
use crate::model::{FrameOutput, Model, ModelMeta};

/// The models one inference thread owns: HMR2, and the person detector when configured.
pub struct Models<M, D> {
    pub hmr: M,
    pub detector: Option<D>,
}

/// Work for the device.
pub(crate) enum Work {
    /// HMR2 crops.
    Hmr(Batch),
    /// Letterboxed frames for the detector.
    Detect(Batch),
}

/// Work done, in the order it was sent.
pub(crate) enum Done {
    Hmr(BatchDone<FrameOutput>),
    Detect(BatchDone<Vec<Detection>>),
}

/// What the models say once loaded and warmed up.
pub(crate) struct Loaded {
    pub(crate) meta: ModelMeta,
    pub(crate) detector: Option<DetectorMeta>,
    pub(crate) device: String,
    pub(crate) cuda_index: Option<usize>,
    /// The device's gauges, shared with the gauge task (none on the CPU).
    pub(crate) gpu: Option<Arc<GpuSampler>>,
}

/// One forward pass over `n` items (bytes, `n`) → one output per item.
pub(crate) type RunItems<'a, O> = dyn FnMut(&[u8], usize) -> Result<Vec<O>, ModelError> + 'a;

/// One outcome per item (a frame's error is a message: the frame is retried later, not
/// acknowledged), or the error that shows the model or the device is broken.
pub(crate) type Outcomes<O> = Result<Vec<Result<O, String>>, ModelError>;

/// Runs `n` items of `item` bytes through `run`, halving on out-of-memory until single items;
/// a single item still out of memory fails alone. Any other error is returned as is: the
/// inputs are well-formed, so it means the model or the device is broken. `on_oom` runs after
/// every out-of-memory error (count it, free the cache).
pub(crate) fn ladder<O>(
    run: &mut RunItems<'_, O>,
    items: &[u8],
    n: usize,
    item: usize,
    on_oom: &mut dyn FnMut(),
) -> Outcomes<O> {
    match run(items, n) {
        Ok(out) => Ok(out.into_iter().map(Ok).collect()),
        Err(ModelError::OutOfMemory(msg)) => {
            on_oom();
            if n == 1 {
                tracing::warn!(error = %msg, "out of memory on a single frame; left for retry");
                return Ok(vec![Err(format!("out of memory: {msg}"))]);
            }
            let half = n / 2;
            tracing::warn!(
                batch = n,
                retry_as = half,
                "out of memory; splitting the batch"
            );
            let (a, b) = items.split_at(half * item);
            let mut frames = ladder(run, a, half, item, on_oom)?;
            frames.extend(ladder(run, b, n - half, item, on_oom)?);
            Ok(frames)
        }
        Err(e) => Err(e),
    }
}

/// [`ladder`] for HMR2 crops.
pub(crate) fn forward_ladder<M: Model + ?Sized>(
    model: &mut M,
    crops: &[u8],
    n: usize,
    vertices: bool,
    on_oom: &mut dyn FnMut(),
) -> Outcomes<FrameOutput> {
    let mut run = |c: &[u8], k: usize| {
        model
            .forward(c, k, vertices)
            .map(crate::model::BatchOutput::into_frames)
    };
    ladder(&mut run, crops, n, CROP_BYTES, on_oom)
}

/// [`ladder`] for letterboxed frames.
pub(crate) fn detect_ladder<D: Detector + ?Sized>(
    detector: &mut D,
    images: &[u8],
    n: usize,
    on_oom: &mut dyn FnMut(),
) -> Outcomes<Vec<Detection>> {
    let s = detector.meta().input_size as usize;
    let mut run = |c: &[u8], k: usize| detector.detect(c, k);
    ladder(&mut run, images, n, s * s * 3, on_oom)
}

/// The channels of the inference thread.
pub(crate) struct Channels {
    pub(crate) batches: mpsc::Receiver<Work>,
    pub(crate) done: mpsc::UnboundedSender<Done>,
    pub(crate) ready: oneshot::Sender<Result<Loaded, ModelError>>,
}

/// Runs one batch (or a warm-up) of `what` ("HMR2 forward pass", "detector"), turning a panic
/// or an error into the reason the model or the device is broken.
fn guarded<O>(
    what: &str,
    run: impl FnOnce() -> Outcomes<O>,
) -> Result<Vec<Result<O, String>>, String> {
    match panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(frames)) => Ok(frames),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(payload) => Err(format!("{what} panicked: {}", panic_message(&*payload))),
    }
}

/// The message of a panic payload (`panic!` with a literal or a format string).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// `n` frames failed with the same message.
fn all_failed<O>(n: usize, message: &str) -> Vec<Result<O, String>> {
    (0..n).map(|_| Err(message.to_string())).collect()
}

/// Marks the inference thread stopped when dropped, also when the thread unwinds.
struct AliveFlag<'a>(&'a Health);

impl Drop for AliveFlag<'_> {
    fn drop(&mut self) {
        self.0.set_inference_alive(false);
    }
}

/// Starts the inference thread: loads the models with `load`, warms them up at `max_batch`,
/// reports through `ready`, then serves `batches` until the channel closes.
pub(crate) fn spawn<M, D, F>(
    load: F,
    max_batch: usize,
    gpu_cfg: GpuConfig,
    health: Arc<Health>,
    ch: Channels,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    M: Model,
    D: Detector,
    F: FnOnce() -> Result<Models<M, D>, ModelError> + Send + 'static,
{
    std::thread::Builder::new()
        .name("hmr2-infer".into())
        .spawn(move || {
            // Grad mode is thread-local: this thread never records a graph.
            let _no_grad = tch::no_grad_guard();
            let models = match load() {
                Ok(m) => m,
                Err(e) => {
                    let _ = ch.ready.send(Err(e));
                    return;
                }
            };
            let _alive = AliveFlag(&health);
            let cuda = models.hmr.cuda_index();
            let label = cuda.map_or_else(|| "cpu".to_string(), |n| n.to_string());
            let sampler = cuda.map(|n| Arc::new(GpuSampler::new(n)));
            let max_failures = gpu_cfg.max_consecutive_failures;
            let memory = Memory::new(gpu_cfg, sampler.clone().map(Cuda::new), label);
            serve(
                models,
                memory,
                sampler,
                max_batch,
                max_failures,
                &health,
                ch,
            );
        })
}

/// The body of the inference thread once the model is loaded: warm-up, then every batch.
fn serve<M: Model, D: Detector, A: Allocator>(
    models: Models<M, D>,
    mut memory: Memory<A>,
    gpu: Option<Arc<GpuSampler>>,
    max_batch: usize,
    max_consecutive_failures: u32,
    health: &Health,
    ch: Channels,
) {
    let Channels {
        mut batches,
        done,
        ready,
    } = ch;
    let Models {
        hmr: mut model,
        mut detector,
    } = models;
    health.set_inference_alive(true);
    if let Some(d) = detector.as_mut() {
        let s = d.meta().input_size as usize;
        let warm = vec![0u8; max_batch * s * s * 3];
        let out = guarded("detector", || {
            detect_ladder(d, &warm, max_batch, &mut || memory.on_oom())
        });
        let failed = match out {
            Ok(frames) => frames.into_iter().find_map(Result::err),
            Err(reason) => Some(reason),
        };
        if let Some(e) = failed {
            let e = format!("detector warm-up failed: {e}");
            let _ = ready.send(Err(ModelError::Contract(e)));
            return;
        }
    }
    let warm = vec![0u8; max_batch * CROP_BYTES];
    let t = Instant::now();
    let out = guarded("HMR2 forward pass", || {
        forward_ladder(&mut model, &warm, max_batch, false, &mut || memory.on_oom())
    });
    let failed = match out {
        Ok(frames) => frames.into_iter().find_map(Result::err),
        Err(reason) => Some(reason),
    };
    if let Some(e) = failed {
        let _ = ready.send(Err(ModelError::Forward(format!("warm-up failed: {e}"))));
        return;
    }
    tracing::info!(
        batch = max_batch,
        seconds = t.elapsed().as_secs_f64(),
        "warm-up done"
    );
    memory.set_baseline();
    let loaded = Loaded {
        meta: model.meta().clone(),
        detector: detector.as_ref().map(|d| d.meta().clone()),
        device: model.device_label(),
        cuda_index: model.cuda_index(),
        gpu,
    };
    if ready.send(Ok(loaded)).is_err() {
        return;
    }
    let mut consecutive_failures = 0u32;
    while let Some(work) = batches.blocking_recv() {
        // A broken worker never touches the model again: every batch fails at once, so the
        // pipeline drains and the jobs stay pending for other workers.
        if let Some(reason) = health.broken_reason() {
            let message = format!("the worker is broken ({reason}); left for another worker");
            let out = match work {
                Work::Hmr(b) => Done::Hmr(BatchDone {
                    id: b.id,
                    frames: all_failed(b.n, &message),
                    seconds: 0.0,
                }),
                Work::Detect(b) => Done::Detect(BatchDone {
                    id: b.id,
                    frames: all_failed(b.n, &message),
                    seconds: 0.0,
                }),
            };
            if done.send(out).is_err() {
                break;
            }
            continue;
        }
        memory.before_batch();
        let t = Instant::now();
        let (id, n, all_frames_failed, out) = match work {
            Work::Hmr(batch) => {
                let busy = health.busy("forward");
                let out = guarded("HMR2 forward pass", || {
                    forward_ladder(
                        &mut model,
                        &batch.crops,
                        batch.n,
                        batch.vertices,
                        &mut || memory.on_oom(),
                    )
                });
                drop(busy);
                let seconds = t.elapsed().as_secs_f64();
                histogram!(m::STAGE_DURATION, "stage" => m::stage::INFERENCE).record(seconds);
                histogram!(m::BATCH_SIZE).record(batch.n as f64);
                let frames = out.unwrap_or_else(|reason| {
                    health.mark_broken(&reason);
                    all_failed(batch.n, &reason)
                });
                let failed = frames.iter().all(|f| f.is_err());
                let done = BatchDone {
                    id: batch.id,
                    frames,
                    seconds,
                };
                (batch.id, batch.n, failed, Done::Hmr(done))
            }
            Work::Detect(batch) => {
                let frames = match detector.as_mut() {
                    Some(d) => {
                        let _busy = health.busy("detect");
                        guarded("detector", || {
                            detect_ladder(d, &batch.crops, batch.n, &mut || memory.on_oom())
                        })
                        .unwrap_or_else(|reason| {
                            health.mark_broken(&reason);
                            all_failed(batch.n, &reason)
                        })
                    }
                    None => all_failed(batch.n, "no detector loaded"),
                };
                let seconds = t.elapsed().as_secs_f64();
                histogram!(m::STAGE_DURATION, "stage" => m::stage::DETECT).record(seconds);
                let failed = frames.iter().all(|f| f.is_err());
                let done = BatchDone {
                    id: batch.id,
                    frames,
                    seconds,
                };
                (batch.id, batch.n, failed, Done::Detect(done))
            }
        };
        // The device's state is unknown once broken: leave the allocator alone.
        if !health.is_broken() {
            memory.after_batch(id, n);
            if all_frames_failed {
                consecutive_failures += 1;
                if consecutive_failures >= max_consecutive_failures {
                    let reason = format!("{consecutive_failures} batches failed in a row");
                    health.set(Input::Batches, Err(reason));
                }
            } else {
                consecutive_failures = 0;
                if !health.is_up(Input::Batches) {
                    health.set(Input::Batches, Ok(()));
                }
            }
        }
        if done.send(out).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::test_support::{Batches, StandIn};

    const FAULT: u8 = 0xFF;
    const PANIC: u8 = 0xFD;
    const NEVER_FITS: u8 = 0xFE;
    const HANG: u8 = 0xFC;

    /// A model that fits at most `fits` frames per forward pass (more is out of memory), and
    /// the record of its passes. The first byte of a batch's first crop marks a fault:
    /// [`FAULT`] fails the pass with a device error, [`PANIC`] panics (as tch does on a
    /// libtorch error outside its `f_` API), [`NEVER_FITS`] is out of memory even alone,
    /// [`HANG`] blocks until `release` says (when given). Each output's `pred_cam[0]` is its
    /// crop's first byte, so order can be checked.
    fn fake_hanging(
        fits: usize,
        release: Option<std::sync::mpsc::Receiver<()>>,
    ) -> (StandIn, Batches) {
        let calls = Batches::default();
        let mut model = StandIn::new().named("fake").fits(fits).batches(&calls);
        if let Some(release) = release {
            model = model.hang_when(|c, _| c[0] == HANG, release);
        }
        let model = model.on_forward(|crops, n, _| {
            assert_eq!(crops.len(), n * CROP_BYTES);
            match crops[0] {
                FAULT => return Err(ModelError::Forward("device fault".into())),
                PANIC => panic!("CUDA error: an illegal memory access was encountered"),
                NEVER_FITS => return Err(ModelError::OutOfMemory("never fits".into())),
                _ => {}
            }
            let mut out = StandIn::output(n);
            out.pred_cam = StandIn::crops(crops, n)
                .flat_map(|c| [c[0] as f32, 1.0, 1.0])
                .collect();
            Ok(out)
        });
        (model, calls)
    }

    fn fake(fits: usize) -> (StandIn, Batches) {
        fake_hanging(fits, None)
    }

    fn numbered(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n * CROP_BYTES];
        for i in 0..n {
            v[i * CROP_BYTES] = i as u8;
        }
        v
    }

    fn order(frames: &[Result<FrameOutput, String>]) -> Vec<u8> {
        frames
            .iter()
            .map(|f| f.as_ref().unwrap().pred_cam()[0] as u8)
            .collect()
    }

    #[test]
    fn out_of_memory_halves_the_batch_and_keeps_every_frame_in_order() {
        let (mut model, calls) = fake(2);
        let mut ooms = 0;
        let frames = forward_ladder(&mut model, &numbered(8), 8, false, &mut || ooms += 1).unwrap();
        assert_eq!(order(&frames), (0..8).collect::<Vec<u8>>());
        // 8 → 4 + 4 → each 4 → 2 + 2.
        assert_eq!(calls.sizes(), [8, 4, 2, 2, 4, 2, 2]);
        assert_eq!(ooms, 3);
    }

    #[test]
    fn odd_batches_split_unevenly_down_to_single_frames() {
        let (mut model, calls) = fake(1);
        let mut ooms = 0;
        let frames = forward_ladder(&mut model, &numbered(5), 5, false, &mut || ooms += 1).unwrap();
        assert_eq!(order(&frames), [0, 1, 2, 3, 4]);
        assert_eq!(calls.sizes().iter().filter(|&&n| n == 1).count(), 5);
        assert_eq!(ooms, 4, "5 → 2 + 3 → 1 + 1, 1 + 2 → 1 + 1");
    }

    #[test]
    fn a_frame_that_never_fits_fails_alone_and_no_frame_is_lost() {
        let (mut model, _) = fake(0);
        let mut ooms = 0;
        let frames = forward_ladder(&mut model, &numbered(4), 4, false, &mut || ooms += 1).unwrap();
        assert_eq!(frames.len(), 4, "one outcome per frame");
        assert!(frames
            .iter()
            .all(|f| f.as_ref().unwrap_err().starts_with("out of memory")));
        assert_eq!(ooms, 7, "4, 2, 2 and four single frames");
    }

    #[test]
    fn other_errors_are_returned_whole_without_splitting() {
        let (mut model, calls) = fake(8);
        let mut crops = numbered(3);
        crops[0] = FAULT;
        let mut ooms = 0;
        let e = forward_ladder(&mut model, &crops, 3, false, &mut || ooms += 1).unwrap_err();
        assert_eq!(calls.sizes(), [3]);
        assert_eq!(ooms, 0);
        assert!(matches!(e, ModelError::Forward(m) if m == "device fault"));
    }

    #[test]
    fn an_error_after_a_split_is_returned_whole() {
        let (mut model, calls) = fake(2);
        let mut crops = numbered(4);
        crops[2 * CROP_BYTES] = FAULT; // first crop of the second half
        let e = forward_ladder(&mut model, &crops, 4, false, &mut || {}).unwrap_err();
        assert_eq!(calls.sizes(), [4, 2, 2]);
        assert!(e.to_string().contains("device fault"), "{e}");
    }

    /// A detector over 32x32 letterboxed frames: one detection per frame, scored by the frame's
    /// first byte / 255; out of memory beyond `fits` frames; `contract_error` breaks the
    /// contract on every pass, a batch whose first frame starts with [`FAULT`] breaks it on
    /// that pass (wrong output shapes), one that starts with [`PANIC`] panics.
    struct FakeDet {
        fits: usize,
        meta: DetectorMeta,
        contract_error: bool,
    }

    impl FakeDet {
        fn new(fits: usize) -> Self {
            let meta = DetectorMeta::parse(
                r#"{"contract":"person-detector/1","name":"fake","input_size":32}"#,
            )
            .unwrap();
            FakeDet {
                fits,
                meta,
                contract_error: false,
            }
        }
    }

    const DET_BYTES: usize = 32 * 32 * 3;

    impl Detector for FakeDet {
        fn detect(&mut self, images: &[u8], n: usize) -> Result<Vec<Vec<Detection>>, ModelError> {
            assert_eq!(images.len(), n * DET_BYTES);
            if self.contract_error {
                return Err(ModelError::Contract("`scores` is Half".into()));
            }
            match images[0] {
                FAULT => {
                    return Err(ModelError::Contract(
                        "outputs have shapes boxes [1, 4], scores [7]".into(),
                    ))
                }
                PANIC => panic!("CUDA error: unspecified launch failure"),
                _ => {}
            }
            if n > self.fits {
                return Err(ModelError::OutOfMemory("detector".into()));
            }
            Ok(images
                .chunks_exact(DET_BYTES)
                .map(|img| {
                    vec![Detection {
                        bbox: [1.0, 2.0, 3.0, 4.0],
                        score: img[0] as f32 / 255.0,
                    }]
                })
                .collect())
        }
        fn meta(&self) -> &DetectorMeta {
            &self.meta
        }
    }

    fn models(fits: usize, det: Option<FakeDet>) -> Models<StandIn, FakeDet> {
        Models {
            hmr: fake(fits).0,
            detector: det,
        }
    }

    #[test]
    fn a_detector_oom_halves_the_detector_batch_and_loses_no_frame() {
        let mut det = FakeDet::new(1);
        let mut images = vec![0u8; 3 * DET_BYTES];
        for (i, img) in images.chunks_exact_mut(DET_BYTES).enumerate() {
            img[0] = 100 + i as u8;
        }
        let mut ooms = 0;
        let out = detect_ladder(&mut det, &images, 3, &mut || ooms += 1).unwrap();
        let scores: Vec<u8> = out
            .iter()
            .map(|d| (d.as_ref().unwrap()[0].score * 255.0).round() as u8)
            .collect();
        assert_eq!(scores, [100, 101, 102]);
        assert_eq!(ooms, 2, "3 → 1 + 2 → 1 + 1");
    }

    fn hmr(id: u64, crops: Vec<u8>, n: usize) -> Work {
        Work::Hmr(Batch {
            id,
            crops,
            n,
            vertices: false,
        })
    }

    #[test]
    fn the_thread_warms_up_serves_batches_and_reports_failing_devices() {
        let (batch_tx, batches) = mpsc::channel(4);
        let (done, mut done_rx) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        let health = Arc::new(Health::default());
        let mut cfg = Config::defaults().gpu;
        cfg.max_consecutive_failures = 2;
        let h = health.clone();
        let thread = spawn(
            || Ok(models(2, Some(FakeDet::new(8)))),
            4,
            cfg,
            h,
            Channels {
                batches,
                done,
                ready,
            },
        )
        .unwrap();
        let loaded = ready_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(loaded.device, "fake");
        assert_eq!(loaded.detector.unwrap().name, "fake");
        assert!(health.alive());
        batch_tx.blocking_send(hmr(7, numbered(3), 3)).unwrap();
        let Some(Done::Hmr(d)) = done_rx.blocking_recv() else {
            panic!("an HMR2 batch answers as one")
        };
        assert_eq!((d.id, order(&d.frames)), (7, vec![0, 1, 2]));
        let mut images = vec![0u8; 2 * DET_BYTES];
        images[DET_BYTES] = 255;
        batch_tx
            .blocking_send(Work::Detect(Batch {
                id: 8,
                crops: images,
                n: 2,
                vertices: false,
            }))
            .unwrap();
        let Some(Done::Detect(d)) = done_rx.blocking_recv() else {
            panic!("a detector batch answers as one")
        };
        assert_eq!(d.id, 8);
        assert_eq!(d.frames[1].as_ref().unwrap()[0].score, 1.0);
        for id in 0..2 {
            let mut crops = numbered(1);
            crops[0] = NEVER_FITS;
            batch_tx.blocking_send(hmr(id, crops, 1)).unwrap();
            let Some(Done::Hmr(d)) = done_rx.blocking_recv() else {
                panic!()
            };
            assert!(d.frames[0].is_err());
        }
        assert!(!health.is_up(Input::Batches), "two failed batches in a row");
        assert!(
            health.alive() && !health.is_broken(),
            "out of memory on single frames is not a broken device"
        );
        drop(batch_tx);
        thread.join().unwrap();
        assert!(!health.alive(), "a stopped thread is not alive");
    }

    #[test]
    fn a_model_that_cannot_load_is_reported_through_ready() {
        let (_tx, batches) = mpsc::channel(1);
        let (done, _rx) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        let thread = spawn(
            || Err::<Models<StandIn, FakeDet>, _>(ModelError::Contract("no meta()".into())),
            2,
            Config::defaults().gpu,
            Arc::new(Health::default()),
            Channels {
                batches,
                done,
                ready,
            },
        )
        .unwrap();
        let e = ready_rx.blocking_recv().unwrap().err().unwrap();
        assert!(e.to_string().contains("no meta()"), "{e}");
        thread.join().unwrap();
    }

    #[test]
    fn a_detector_that_breaks_the_contract_on_warm_up_stops_start_up() {
        let (_tx, batches) = mpsc::channel(1);
        let (done, _rx) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        let mut det = FakeDet::new(8);
        det.contract_error = true;
        let thread = spawn(
            move || Ok(models(8, Some(det))),
            2,
            Config::defaults().gpu,
            Arc::new(Health::default()),
            Channels {
                batches,
                done,
                ready,
            },
        )
        .unwrap();
        let e = ready_rx.blocking_recv().unwrap().err().unwrap().to_string();
        assert!(
            e.contains("detector warm-up failed") && e.contains("Half"),
            "{e}"
        );
        thread.join().unwrap();
    }

    /// The inference thread of one test, its channels and its health.
    struct Running {
        batches: mpsc::Sender<Work>,
        done: mpsc::UnboundedReceiver<Done>,
        health: Arc<Health>,
        thread: std::thread::JoinHandle<()>,
    }

    /// Starts the thread on `models` with batches of up to 4, waits for the warm-up.
    fn start(models: Models<StandIn, FakeDet>, health: Health) -> Running {
        let (batches, batch_rx) = mpsc::channel(4);
        let (done_tx, done) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        let health = Arc::new(health);
        let thread = spawn(
            move || Ok(models),
            4,
            Config::defaults().gpu,
            health.clone(),
            Channels {
                batches: batch_rx,
                done: done_tx,
                ready,
            },
        )
        .unwrap();
        ready_rx.blocking_recv().unwrap().expect("warm-up passes");
        Running {
            batches,
            done,
            health,
            thread,
        }
    }

    const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

    /// Polls `cond` until it holds; panics with `what` after [`WAIT`].
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    impl Running {
        /// Sends `work` and returns the answer, within [`WAIT`].
        fn run(&mut self, work: Work) -> Done {
            self.batches.blocking_send(work).unwrap();
            let deadline = Instant::now() + WAIT;
            loop {
                match self.done.try_recv() {
                    Ok(d) => return d,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        assert!(Instant::now() < deadline, "no answer within {WAIT:?}");
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Err(e) => panic!("the inference thread stopped answering: {e}"),
                }
            }
        }

        fn run_hmr(
            &mut self,
            id: u64,
            crops: Vec<u8>,
            n: usize,
        ) -> Vec<Result<FrameOutput, String>> {
            match self.run(hmr(id, crops, n)) {
                Done::Hmr(d) => {
                    assert_eq!((d.id, d.frames.len()), (id, n), "one outcome per frame");
                    d.frames
                }
                Done::Detect(_) => panic!("an HMR2 batch answers as one"),
            }
        }

        fn run_detect(
            &mut self,
            id: u64,
            images: Vec<u8>,
            n: usize,
        ) -> Vec<Result<Vec<Detection>, String>> {
            let work = Work::Detect(Batch {
                id,
                crops: images,
                n,
                vertices: false,
            });
            match self.run(work) {
                Done::Detect(d) => {
                    assert_eq!((d.id, d.frames.len()), (id, n), "one outcome per frame");
                    d.frames
                }
                Done::Hmr(_) => panic!("a detector batch answers as one"),
            }
        }

        /// Closes the channel and joins the thread, within [`WAIT`].
        fn stop(self) -> Arc<Health> {
            drop(self.batches);
            wait_until("the thread stops", || self.thread.is_finished());
            self.thread
                .join()
                .expect("the thread never dies of a batch's panic");
            self.health
        }
    }

    fn marked(n: usize, marker: u8) -> Vec<u8> {
        let mut crops = numbered(n);
        crops[0] = marker;
        crops
    }

    /// A broken worker fails every later batch at once, without running the model.
    fn assert_stops_serving(t: &mut Running) {
        let frames = t.run_hmr(99, numbered(2), 2);
        assert!(
            frames
                .iter()
                .all(|f| f.as_ref().unwrap_err().contains("the worker is broken")),
            "{frames:?}"
        );
    }

    #[test]
    fn a_panicking_forward_marks_the_worker_broken_and_fails_its_frames() {
        let mut t = start(models(8, None), Health::default());
        let token = t.health.broken_token();
        assert_eq!(order(&t.run_hmr(1, numbered(2), 2)), [0, 1]);
        assert!(t.health.alive() && !token.is_cancelled());

        let frames = t.run_hmr(2, marked(3, PANIC), 3);
        for f in &frames {
            let e = f.as_ref().unwrap_err();
            assert!(
                e.contains("panicked") && e.contains("illegal memory access"),
                "{e}"
            );
        }
        assert!(t.health.is_broken() && token.is_cancelled());
        assert!(!t.health.alive(), "/healthz answers 503");
        let reason = t.health.broken_reason().unwrap();
        assert!(reason.contains("HMR2 forward pass panicked"), "{reason}");
        assert_stops_serving(&mut t);
        let health = t.stop();
        assert!(!health.alive(), "the thread has stopped");
    }

    #[test]
    fn a_forward_error_other_than_out_of_memory_marks_the_worker_broken() {
        let mut t = start(models(8, None), Health::default());
        let frames = t.run_hmr(1, marked(2, FAULT), 2);
        assert!(frames
            .iter()
            .all(|f| f.as_ref().unwrap_err().contains("device fault")));
        assert!(t.health.is_broken() && !t.health.alive());
        assert!(t.health.broken_token().is_cancelled());
        assert!(
            t.health.broken_reason().unwrap().contains("device fault"),
            "the reason names the error"
        );
        assert_stops_serving(&mut t);
        t.stop();
    }

    #[test]
    fn out_of_memory_still_halves_and_never_marks_the_worker_broken() {
        let mut t = start(models(1, None), Health::default());
        assert_eq!(order(&t.run_hmr(1, numbered(4), 4)), [0, 1, 2, 3]);
        let frames = t.run_hmr(2, marked(1, NEVER_FITS), 1);
        assert!(frames[0].as_ref().unwrap_err().starts_with("out of memory"));
        assert!(!t.health.is_broken() && t.health.alive());
        assert!(!t.health.broken_token().is_cancelled());
        assert_eq!(
            order(&t.run_hmr(3, numbered(2), 2)),
            [0, 1],
            "still serving"
        );
        t.stop();
    }

    #[test]
    fn a_detector_that_fails_or_panics_marks_the_worker_broken() {
        for (marker, says) in [(FAULT, "outputs have shapes"), (PANIC, "panicked")] {
            let mut t = start(models(8, Some(FakeDet::new(8))), Health::default());
            let mut images = vec![0u8; 2 * DET_BYTES];
            assert!(t.run_detect(1, images.clone(), 2).iter().all(|f| f.is_ok()));
            images[0] = marker;
            let frames = t.run_detect(2, images, 2);
            assert!(
                frames
                    .iter()
                    .all(|f| f.as_ref().unwrap_err().contains(says)),
                "{frames:?}"
            );
            assert!(t.health.is_broken() && !t.health.alive());
            assert!(t.health.broken_reason().unwrap().starts_with("detector"));
            assert_stops_serving(&mut t);
            t.stop();
        }
    }

    #[test]
    fn a_hung_forward_shows_as_a_stall_while_it_lasts() {
        let (release, hung) = std::sync::mpsc::channel();
        let m = Models {
            hmr: fake_hanging(8, Some(hung)).0,
            detector: None::<FakeDet>,
        };
        let mut t = start(m, Health::new(std::time::Duration::from_millis(100)));
        assert!(t.health.alive() && t.health.stalled().is_none());
        t.batches.blocking_send(hmr(1, marked(2, HANG), 2)).unwrap();
        wait_until("the forward pass counts as stalled", || {
            t.health.stalled().is_some()
        });
        let (what, running) = t.health.stalled().unwrap();
        assert_eq!(what, "forward");
        assert!(running > std::time::Duration::from_millis(100));
        assert!(!t.health.alive(), "/healthz answers 503 while it hangs");
        assert!(!t.health.is_broken(), "a stall alone is not final");
        release.send(()).unwrap();
        let Done::Hmr(d) = t.run(hmr(2, numbered(1), 1)) else {
            panic!()
        };
        assert_eq!(d.id, 1, "the hung batch finishes first");
        assert!(t.health.stalled().is_none() && t.health.alive());
        t.stop();
    }
}
