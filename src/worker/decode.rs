//! The decode stage: parse, decode and crop each delivery on a blocking thread,
//! `pipeline.decode_threads` at a time, each frame's pixels charged to the decoded-pixel
//! budget first; bad input is rejected (error result + dead letter) here.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
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
