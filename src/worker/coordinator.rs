//! The coordinator: a thin loop that moves jobs between the channels and the [`Scheduler`],
//! which decides everything. It feeds the inference thread while its channel has room, crops
//! detected people on blocking threads, and hands finished jobs to publishers.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::ctx::{Ctx, Held};
use super::delivery::Delivery;
use super::infer::{Done, Work};
use super::prepare::{self, Prepared};
use super::publish::finish;
use super::scheduler::{Input, Next, Scheduler};
use crate::image::CROP_BYTES;

/// Runs until `input` is closed and every job taken in has been handed to a publisher (or the
/// inference thread has stopped answering).
pub(crate) async fn coordinate(
    ctx: Arc<Ctx>,
    mut input: mpsc::Receiver<(Delivery, Prepared)>,
    work: mpsc::Sender<Work>,
    mut done: mpsc::UnboundedReceiver<Done>,
) {
    let letterbox_bytes = ctx
        .detector_input
        .map_or(1, |s| s as usize * s as usize * 3);
    let mut sched = Scheduler::new(ctx.config.queue.max_batch, CROP_BYTES, letterbox_bytes);
    let (cropped_tx, mut cropped_rx) = mpsc::unbounded_channel::<Held>();
    let mut input_open = true;
    loop {
        while let Ok(permit) = work.try_reserve() {
            match sched.next_work() {
                Some(w) => permit.send(w),
                None => break,
            }
        }
        if !input_open && sched.is_drained() {
            break;
        }
        let next = tokio::select! {
            msg = input.recv(), if input_open => match msg {
                Some((delivery, mut prepared)) => {
                    let input = match prepared.detect.as_mut() {
                        Some(w) => Input::Detect(std::mem::take(&mut w.letterbox.pixels)),
                        None => {
                            let (crops, vertices) = take_crops(&mut prepared);
                            Input::Crops { crops, vertices }
                        }
                    };
                    let held = Held { delivery, prepared, detect_ms: 0.0 };
                    sched.add(held, input).map(Next::Publish).into_iter().collect()
                }
                None => {
                    input_open = false;
                    Vec::new()
                }
            },
            Some(mut held) = cropped_rx.recv(), if sched.cropping() > 0 => {
                let (crops, vertices) = take_crops(&mut held.prepared);
                sched.cropped(held, crops, vertices).map(Next::Publish).into_iter().collect()
            }
            msg = done.recv() => match msg {
                Some(d) => sched.on_done(d),
                // The inference thread is gone: nothing in the scheduler will come back.
                None => break,
            },
        };
        for n in next {
            match n {
                Next::Publish(f) => {
                    ctx.jobs.spawn(finish(ctx.clone(), f));
                }
                Next::Crop {
                    mut job,
                    detections,
                    detect_ms,
                } => {
                    job.detect_ms = detect_ms;
                    let (tx, cfg) = (cropped_tx.clone(), ctx.config.detector.clone());
                    let max_boxes = ctx.config.limits.max_boxes;
                    tokio::task::spawn_blocking(move || {
                        let _in_job = job.delivery.span.clone().entered();
                        prepare::crop_detected(&mut job.prepared, &detections, &cfg, max_boxes);
                        let _ = tx.send(job);
                    });
                }
            }
        }
    }
}

/// The job's crops, taken out of it for the scheduler, and whether it wants vertices.
fn take_crops(p: &mut Prepared) -> (Vec<u8>, bool) {
    (std::mem::take(&mut p.crops), p.include.vertices)
}
