//! Publishing: finished jobs → result + XACK in one atomic step; bad input and jobs delivered
//! too often → error result + dead letter + XACK; every Redis step retried while Redis is away.

use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use tracing::Instrument;

use super::fetch::{Backoff, Delivery};
use super::prepare::Rejected;
use super::result::{self, Origin};
use super::{Ctx, InFlight};
use crate::error::{InputError, QueueError};
use crate::job::{JobResult, Timings};
use crate::metrics::{self as m, outcome};
use crate::queue::{DeadLetter, Written};

/// Publishes a finished job (or leaves a failed one pending for a retry).
pub(super) async fn finish(ctx: Arc<Ctx>, j: InFlight) {
    let InFlight {
        delivery,
        prepared,
        outputs,
        failure,
        inference_ms,
        ..
    } = j;
    let span = tracing::info_span!("job", job_id = prepared.job.echo.job_id.as_deref().unwrap_or(""), entry = %delivery.entry.id);
    async move {
        if let Some(error) = failure {
            counter!(m::JOBS, "outcome" => outcome::FAILED).increment(1);
            tracing::warn!(%error, deliveries = delivery.entry.deliveries, "inference failed; the job stays pending for a retry");
            return;
        }
        let t = Instant::now();
        let echo = &prepared.job.echo;
        let vertices = prepared.job.include.vertices;
        let people = prepared
            .people
            .iter()
            .zip(outputs)
            .map(|(p, o)| result::person(p, o.expect("every frame has an output"), prepared.image_size, vertices))
            .collect();
        let timings = Timings {
            queue_wait: delivery.queue_wait_ms,
            decode: prepared.decode_ms,
            inference: inference_ms,
            total: delivery.fetched.elapsed().as_secs_f64() * 1e3,
        };
        let r = result::ok_result(&delivery.entry.id, echo, prepared.image_size, people, timings, &ctx.origin);
        let json = r.to_json();
        histogram!(m::STAGE_DURATION, "stage" => m::stage::POSTPROCESS).record(t.elapsed().as_secs_f64());
        let reply = ctx.queue.keys().reply_stream(echo.reply_to.as_deref()).to_string();
        let job_id = echo.job_id.clone().unwrap_or_default();
        let t = Instant::now();
        let published = retry(&ctx, || ctx.queue.publish(&delivery.entry.id, &reply, &job_id, &json)).await;
        histogram!(m::STAGE_DURATION, "stage" => m::stage::PUBLISH).record(t.elapsed().as_secs_f64());
        match published {
            Some(Written::Done) => {
                tracing::debug!(reply = %reply, people = prepared.people.len(), "published");
                counter!(m::JOBS, "outcome" => outcome::OK).increment(1);
                histogram!(m::JOB_DURATION).record(delivery.fetched.elapsed().as_secs_f64());
            }
            Some(Written::NotPending) => {
                tracing::debug!("another worker finished this job first; result dropped");
            }
            Some(Written::ReplyNotAStream) => {
                let error = InputError::InvalidJob(format!("reply_to {reply:?} names a key that is not a stream"));
                let rejected = Rejected { error, echo: echo.clone(), image_size: Some(prepared.image_size) };
                reject(ctx.clone(), delivery, Box::new(rejected)).await;
            }
            None => {}
        }
    }
    .instrument(span)
    .await
}

/// Bad input: error result + dead letter + ack, at once.
pub(super) async fn reject(ctx: Arc<Ctx>, d: Delivery, r: Box<Rejected>) {
    let code = r.error.code();
    let message = r.error.to_string();
    tracing::info!(entry = %d.entry.id, job_id = r.echo.job_id.as_deref().unwrap_or(""), code, "rejected bad input");
    let mut result = JobResult::error(&d.entry.id, &r.echo, code, message.clone());
    result.image_size = r.image_size;
    fill_origin(&mut result, &ctx.origin);
    result.timings_ms.queue_wait = d.queue_wait_ms;
    result.timings_ms.total = d.fetched.elapsed().as_secs_f64() * 1e3;
    if dead_letter(&ctx, &d, &r.echo, &result, code, &message).await {
        counter!(m::JOBS, "outcome" => outcome::INVALID_INPUT).increment(1);
    }
}

/// Delivered too often: dead letter with `too_many_deliveries`.
pub(super) async fn too_many_deliveries(ctx: Arc<Ctx>, d: Delivery) {
    let echo = d
        .entry
        .field("job")
        .map(
            |raw| match crate::job::parse(raw, true, &ctx.config.limits) {
                Ok(j) => j.echo,
                Err((_, echo)) => echo,
            },
        )
        .unwrap_or_default();
    let message = format!(
        "delivered {} times (max_deliveries = {}); giving up",
        d.entry.deliveries, ctx.config.queue.max_deliveries
    );
    tracing::warn!(entry = %d.entry.id, deliveries = d.entry.deliveries, "dead-lettering a job delivered too often");
    let mut result = JobResult::error(&d.entry.id, &echo, "too_many_deliveries", message.clone());
    fill_origin(&mut result, &ctx.origin);
    if dead_letter(&ctx, &d, &echo, &result, "too_many_deliveries", &message).await {
        counter!(m::JOBS, "outcome" => outcome::DEAD_LETTERED).increment(1);
    }
}

fn fill_origin(r: &mut JobResult, o: &Origin) {
    r.worker = o.worker.clone();
    r.device = o.device.clone();
    r.model = o.model.clone();
}

async fn dead_letter(
    ctx: &Ctx,
    d: &Delivery,
    echo: &crate::job::Echo,
    result: &JobResult,
    code: &str,
    message: &str,
) -> bool {
    let json = result.to_json();
    let job_id = echo.job_id.clone().unwrap_or_default();
    let mut reply = ctx
        .queue
        .keys()
        .reply_stream(echo.reply_to.as_deref())
        .to_string();
    loop {
        let letter = || {
            ctx.queue.dead_letter(DeadLetter {
                entry: &d.entry,
                reply_to: &reply,
                job_id: &job_id,
                result_json: &json,
                code,
                message,
                worker: &ctx.origin.worker,
            })
        };
        match retry(ctx, letter).await {
            Some(Written::Done) => return true,
            Some(Written::ReplyNotAStream) if reply != ctx.queue.keys().results => {
                // The job's reply_to is unusable: answer on the default stream instead.
                reply = ctx.queue.keys().results.clone();
            }
            _ => return false,
        }
    }
}

/// Runs a Redis step until it succeeds, backing off while Redis is away; gives up only when the
/// grace period is over (the job then stays pending: nothing was acknowledged).
pub(super) async fn retry<T, F, Fut>(ctx: &Ctx, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match step().await {
            Ok(v) => {
                if backoff.failures > 0 {
                    backoff.recovered();
                    ctx.health.set(&ctx.health.redis_ok, true);
                }
                return Some(v);
            }
            Err(e) => {
                backoff.failed(&e);
                ctx.health.set(&ctx.health.redis_ok, false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    _ = ctx.hard_stop.cancelled() => return None,
                }
            }
        }
    }
}
