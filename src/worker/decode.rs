//! The decode stage: parse, decode and crop each delivery on a blocking thread,
//! `pipeline.decode_threads` at a time, each frame's pixels charged to the decoded-pixel
//! budget first; bad input is rejected (error result + dead letter) here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmr2_client::BoxSource;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ctx::Ctx;
use super::delivery::Delivery;
use super::prepare::{self, Prepared};
use super::publish::reject;

/// Decodes deliveries until `input` closes, and waits for the last one.
pub(crate) async fn decode(
    ctx: Arc<Ctx>,
    mut input: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<(Delivery, Prepared)>,
) {
    let slots = Arc::new(Semaphore::new(ctx.config.decode_threads()));
    let mut tasks = JoinSet::new();
    while let Some(d) = input.recv().await {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let (ctx, out) = (ctx.clone(), out.clone());
        let span = d.span.clone();
        tasks.spawn(
            async move {
                let ctx2 = ctx.clone();
                let (d, prepared) = tokio::task::spawn_blocking(move || {
                    let mut d = d;
                    let _in_job = d.span.clone().entered();
                    let keys = ctx2.queue.shard(d.entry.shard).keys();
                    let limits = &ctx2.config.limits;
                    let p = prepare::prepare_within(
                        &d.entry,
                        keys,
                        limits,
                        ctx2.detector_input,
                        Some(&ctx2.pixels),
                    );
                    d.record_job_id(match &p {
                        Ok(p) => p.echo.job_id.as_deref(),
                        Err(r) => r.echo.job_id.as_deref(),
                    });
                    if p.is_ok() && !ctx2.config.queue.dead_keep_image {
                        // Decoded: the frame's bytes are not needed any more (host memory
                        // stays bounded by what the crops take, not by what entries took).
                        d.entry.strip_frame();
                    }
                    (d, p)
                })
                .await
                .expect("prepare never panics");
                drop(slot);
                match prepared {
                    Ok(p) => {
                        if p.source == BoxSource::Frame && ctx.detector_input.is_none() {
                            ctx.whole_frames.count();
                        }
                        let _ = out.send((d, p)).await;
                    }
                    Err(r) => reject(ctx, d, r).await,
                }
            }
            .instrument(span),
        );
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Jobs without boxes answered with a whole-frame person because no detector is loaded: counted
/// by the decode stage, reported once a minute while they arrive.
#[derive(Default)]
pub(crate) struct WholeFrames(AtomicU64);

impl WholeFrames {
    pub(crate) fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Every `every` until `stop`: `report(n)` with the jobs counted since the last report, when
    /// there were any.
    pub(crate) async fn report_every(
        &self,
        every: Duration,
        stop: &CancellationToken,
        report: impl Fn(u64),
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let n = self.0.swap(0, Ordering::Relaxed);
            if n > 0 {
                report(n);
            }
        }
    }
}

/// While jobs without boxes arrive at a worker that has no detector, says so once a minute
/// with their count: each was answered with a whole-frame person (a near-mean pose on real
/// footage), which `hmr2_people_per_frame{source="frame"}` also shows.
pub(crate) async fn warn_whole_frames(ctx: Arc<Ctx>, every: Duration) {
    if ctx.detector_input.is_some() {
        return;
    }
    let report = |n: u64| {
        tracing::warn!(
            jobs = n,
            seconds = every.as_secs(),
            "jobs without boxes were answered with one whole-frame person each: no person \
             detector is loaded (detector.path, env HMR2_DETECTOR__PATH)"
        )
    };
    ctx.whole_frames
        .report_every(every, &ctx.stops.background, report)
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Waits (up to 10 s) until `reports` holds `want`.
    async fn until_reported(reports: &Mutex<Vec<u64>>, want: &[u64]) {
        for _ in 0..1000 {
            if reports.lock().unwrap().as_slice() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("reports {:?}, want {want:?}", reports.lock().unwrap());
    }

    #[tokio::test]
    async fn whole_frame_jobs_are_reported_with_their_count_while_they_arrive() {
        let frames = Arc::new(WholeFrames::default());
        let stop = CancellationToken::new();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let every = Duration::from_millis(20);
        let task = {
            let (frames, stop, reports) = (frames.clone(), stop.clone(), reports.clone());
            tokio::spawn(async move {
                let report = |n| reports.lock().unwrap().push(n);
                frames.report_every(every, &stop, report).await
            })
        };
        for _ in 0..3 {
            frames.count();
        }
        until_reported(&reports, &[3]).await;
        // Quiet intervals say nothing; the next busy one says its own count.
        tokio::time::sleep(every * 5).await;
        assert_eq!(*reports.lock().unwrap(), [3]);
        frames.count();
        until_reported(&reports, &[3, 1]).await;
        stop.cancel();
        task.await.unwrap();
    }
}
