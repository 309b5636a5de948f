//! The inference thread: owns the model (one per device), runs batches under `no_grad`, splits
//! a batch in half on out-of-memory down to single frames, and applies the GPU memory policy
//! after every batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use tokio::sync::{mpsc, oneshot};

use crate::config::{GpuConfig, ReleasePolicy};
use crate::error::ModelError;
use crate::gpu;
use crate::http::Health;
use crate::image::CROP_BYTES;
use crate::metrics::{self as m, GpuGauges};
use crate::model::{FrameOutput, Model, ModelMeta};

/// Crops of one forward pass, from one or many jobs.
pub struct Batch {
    pub id: u64,
    /// `n * 256 * 256 * 3` RGB bytes.
    pub crops: Vec<u8>,
    pub n: usize,
    /// Whether any frame of the batch asked for vertices.
    pub vertices: bool,
}

/// Per-frame outcome of a batch, in order, with the batch's wall time.
pub struct BatchDone {
    pub id: u64,
    pub frames: Vec<Result<FrameOutput, String>>,
    pub seconds: f64,
}

/// What the model says once loaded and warmed up.
pub struct Loaded {
    pub meta: ModelMeta,
    pub device: String,
    pub cuda_index: Option<usize>,
}

/// Whether the allocator's cache goes back to the driver after a batch (DESIGN §4).
pub fn should_release(policy: ReleasePolicy, reserved: i64, threshold: u64) -> bool {
    match policy {
        ReleasePolicy::PerJob => true,
        ReleasePolicy::Threshold => reserved > threshold as i64,
        ReleasePolicy::Never => false,
    }
}

/// Runs `n` crops, halving on out-of-memory until single frames; other errors fail every frame
/// of the (sub-)batch. Errors are messages: the frames are retried later (not acknowledged).
pub fn forward_ladder<M: Model + ?Sized>(
    model: &mut M,
    crops: &[u8],
    n: usize,
    vertices: bool,
    gpu_label: &str,
) -> Vec<Result<FrameOutput, String>> {
    match model.forward(crops, n, vertices) {
        Ok(out) => (0..n).map(|i| Ok(out.frame(i))).collect(),
        Err(ModelError::OutOfMemory(msg)) => {
            counter!(m::OOM, "gpu" => gpu_label.to_string()).increment(1);
            let _ = gpu::empty_cache();
            if n == 1 {
                tracing::warn!(error = %msg, "out of memory on a single frame; left for retry");
                return vec![Err(format!("out of memory: {msg}"))];
            }
            let half = n / 2;
            tracing::warn!(
                batch = n,
                retry_as = half,
                "out of memory; splitting the batch"
            );
            let (a, b) = crops.split_at(half * CROP_BYTES);
            let mut frames = forward_ladder(model, a, half, vertices, gpu_label);
            frames.extend(forward_ladder(model, b, n - half, vertices, gpu_label));
            frames
        }
        Err(e) => {
            let msg = e.to_string();
            (0..n).map(|_| Err(msg.clone())).collect()
        }
    }
}

/// Memory bookkeeping of one device after every batch: release policy, gauges, drift watch.
struct Memory {
    cfg: GpuConfig,
    cuda: Option<usize>,
    gauges: Option<GpuGauges>,
    baseline: Option<i64>,
}

impl Memory {
    fn label(&self) -> String {
        self.gauges
            .as_ref()
            .map_or_else(|| "cpu".to_string(), |g| g.label().to_string())
    }

    fn before_batch(&self) {
        if let Some(d) = self.cuda {
            let _ = gpu::reset_peak(d);
        }
    }

    /// After warm-up: release everything, then remember what stays allocated (the weights).
    fn set_baseline(&mut self) {
        let Some(d) = self.cuda else { return };
        let _ = gpu::empty_cache();
        if let Ok(s) = gpu::stats(d) {
            self.baseline = Some(s.allocated);
            metrics::gauge!(m::TORCH_BASELINE, "gpu" => self.label()).set(s.allocated as f64);
            tracing::info!(
                allocated = s.allocated,
                reserved = s.reserved,
                "allocator baseline after warm-up"
            );
        }
        if let Some(g) = &self.gauges {
            g.sample();
        }
    }

    fn after_batch(&mut self, batch: u64, n: usize) {
        let Some(d) = self.cuda else { return };
        let label = self.label();
        if let Ok(s) = gpu::stats(d) {
            histogram!(m::JOB_PEAK_ALLOCATED, "gpu" => label.clone())
                .record(s.peak_allocated as f64);
            if should_release(
                self.cfg.release,
                s.reserved,
                self.cfg.release_threshold_bytes,
            ) && gpu::empty_cache().is_ok()
            {
                counter!(m::CACHE_RELEASES, "gpu" => label.clone()).increment(1);
            }
        }
        let stats = match &self.gauges {
            Some(g) => g.sample(),
            None => gpu::stats(d).ok(),
        };
        if let Some(s) = stats {
            tracing::debug!(
                batch,
                frames = n,
                allocated = s.allocated,
                reserved = s.reserved,
                peak_allocated = s.peak_allocated,
                "batch memory"
            );
        }
        if let (Some(s), Some(base)) = (stats, self.baseline) {
            let over = s.allocated - base;
            if over > self.cfg.drift_tolerance_bytes as i64 {
                counter!(m::DRIFT, "gpu" => label).increment(1);
                tracing::warn!(
                    batch,
                    frames = n,
                    allocated = s.allocated,
                    baseline = base,
                    over,
                    "allocated memory did not return to the baseline after a batch"
                );
            }
        }
    }
}

/// Starts the inference thread: loads the model with `load`, warms it up at `max_batch`, reports
/// through `ready`, then serves `batches` until the channel closes.
pub fn spawn<M, F>(
    load: F,
    max_batch: usize,
    gpu_cfg: GpuConfig,
    health: Arc<Health>,
    mut batches: mpsc::Receiver<Batch>,
    done: mpsc::UnboundedSender<BatchDone>,
    ready: oneshot::Sender<Result<Loaded, ModelError>>,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    M: Model,
    F: FnOnce() -> Result<M, ModelError> + Send + 'static,
{
    std::thread::Builder::new()
        .name("hmr2-infer".into())
        .spawn(move || {
            // Grad mode is thread-local: this thread never records a graph.
            let _no_grad = tch::no_grad_guard();
            let mut model = match load() {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let cuda = model.cuda_index();
            let mut memory = Memory {
                cfg: gpu_cfg,
                cuda,
                gauges: cuda.map(GpuGauges::new),
                baseline: None,
            };
            let label = memory.label();
            health.set(&health.inference_alive, true);
            let warm = vec![0u8; max_batch * CROP_BYTES];
            let t = Instant::now();
            let frames = forward_ladder(&mut model, &warm, max_batch, false, &label);
            if let Some(Err(e)) = frames.into_iter().find(|f| f.is_err()) {
                health.set(&health.inference_alive, false);
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
                device: model.device_label(),
                cuda_index: cuda,
            };
            if ready.send(Ok(loaded)).is_err() {
                return;
            }
            let mut consecutive_failures = 0u32;
            while let Some(batch) = batches.blocking_recv() {
                memory.before_batch();
                let t = Instant::now();
                let frames =
                    forward_ladder(&mut model, &batch.crops, batch.n, batch.vertices, &label);
                drop(batch.crops);
                let seconds = t.elapsed().as_secs_f64();
                histogram!(m::STAGE_DURATION, "stage" => m::stage::INFERENCE).record(seconds);
                histogram!(m::BATCH_SIZE).record(batch.n as f64);
                memory.after_batch(batch.id, batch.n);
                if frames.iter().all(|f| f.is_err()) {
                    consecutive_failures += 1;
                    if consecutive_failures >= memory.cfg.max_consecutive_failures {
                        health.set(&health.failing, true);
                    }
                } else {
                    consecutive_failures = 0;
                    if health.failing.load(Ordering::Relaxed) {
                        health.set(&health.failing, false);
                    }
                }
                if done
                    .send(BatchDone {
                        id: batch.id,
                        frames,
                        seconds,
                    })
                    .is_err()
                {
                    break;
                }
            }
            health.set(&health.inference_alive, false);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_policy_decisions() {
        assert!(should_release(ReleasePolicy::PerJob, 0, 100));
        assert!(!should_release(ReleasePolicy::Never, i64::MAX, 100));
        assert!(!should_release(ReleasePolicy::Threshold, 100, 100));
        assert!(should_release(ReleasePolicy::Threshold, 101, 100));
    }
}
