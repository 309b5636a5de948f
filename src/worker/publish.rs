//! Publishing: finished jobs → result + XACK in one atomic step; bad input and jobs delivered
//! too often → error result + dead letter + XACK. Redis errors are retried with backoff (see
//! [`retry`]); a `reply_to` that cannot take the result (the script says so, having written
//! nothing) makes the job `invalid_job`, answered on the default stream.

use std::sync::Arc;
use std::time::Instant;

use hmr2_client::{Echo, ErrorCode, JobResult, Timings};
use metrics::histogram;
use tracing::Instrument;

use super::batcher::Finished;
use super::ctx::{Ctx, Held};
use super::delivery::Delivery;
use super::prepare::Rejected;
use super::result::{self, Origin};
use super::retry::retry;
use crate::error::InputError;
use crate::metrics::{self as m, Outcome};
use crate::model::FrameOutput;
use crate::queue::{DeadLetter, Written};
use crate::video::{self, VideoTag};

/// Publishes a finished job (or leaves a failed one pending for a retry).
pub(super) async fn finish(ctx: Arc<Ctx>, f: Finished<Held, FrameOutput>) {
    let Finished {
        job: Held {
            delivery,
            prepared,
            detect_ms,
        },
        outputs,
        inference_ms,
    } = f;
    let span = delivery.span.clone();
    async move {
        let outputs = match outputs {
            Ok(o) => o,
            Err(error) => {
                Outcome::Failed.count();
                tracing::warn!(%error, deliveries = delivery.entry.deliveries, "inference failed; the job stays pending for a retry");
                return;
            }
        };
        let t = Instant::now();
        let echo = &prepared.echo;
        let vertices = prepared.include.vertices;
        let people = prepared
            .people
            .iter()
            .zip(outputs)
            .map(|(p, o)| result::person(p, o, prepared.image_size, vertices))
            .collect();
        let timings = Timings {
            queue_wait: delivery.queue_wait_ms,
            decode: prepared.cpu_ms,
            inference: inference_ms + detect_ms,
            total: delivery.fetched.elapsed().as_secs_f64() * 1e3,
        };
        let mut r = result::ok_result(&delivery.entry.id, echo, prepared.image_size, people, timings, &ctx.origin);
        r.detected = prepared.detected;
        let json = r.to_json();
        let record = prepared
            .video
            .as_ref()
            .map(|_| video::ok_record(&r.people, prepared.image_size, vertices).encode());
        histogram!(m::STAGE_DURATION, "stage" => m::stage::POSTPROCESS).record(t.elapsed().as_secs_f64());
        let shard = delivery.entry.shard;
        let reply = ctx.queue.shard(shard).keys().reply_stream(echo.reply_to.as_deref()).to_string();
        let job_id = echo.job_id.clone().unwrap_or_default();
        let t = Instant::now();
        // Each attempt counts as work in progress for the stall watch; waiting out an outage
        // between attempts does not.
        let published = retry(
            &ctx.health,
            &ctx.stops.hard,
            "publish",
            || async {
                let _busy = ctx.health.busy("publish");
                let frame = prepared.video.as_ref().zip(record.as_deref()).map(|(v, r)| v.record_frame(r));
                ctx.queue.shard(shard).publish(&delivery.entry, &reply, &job_id, &json, frame.as_ref()).await
            },
            || ctx.queue.shard(shard).ensure_group(),
        )
        .await;
        histogram!(m::STAGE_DURATION, "stage" => m::stage::PUBLISH).record(t.elapsed().as_secs_f64());
        // A frame whose video disagrees is no frame of that video: it is not recorded.
        let (error, video) = match published {
            Some(Written::Done) => {
                tracing::debug!(reply = %reply, people = prepared.people.len(), "published");
                Outcome::Ok.count();
                histogram!(m::PEOPLE_PER_FRAME, "source" => prepared.source.as_str())
                    .record(prepared.people.len() as f64);
                histogram!(m::JOB_DURATION).record(delivery.fetched.elapsed().as_secs_f64());
                return;
            }
            Some(Written::NotPending) => {
                tracing::debug!("another worker finished this job first; result dropped");
                return;
            }
            None => return,
            Some(Written::ReplyUnusable(why)) => (
                InputError::InvalidJob(format!("reply_to {reply:?} cannot take the result: {why}")),
                prepared.video.clone(),
            ),
            Some(Written::VideoDisagrees(first)) => (video_disagrees(&prepared.video, &first), None),
        };
        let rejected = Rejected { error, echo: echo.clone(), image_size: Some(prepared.image_size), video };
        reject_in_span(ctx.clone(), delivery, Box::new(rejected)).await;
    }
    .instrument(span)
    .await
}

/// Bad input: error result + dead letter + ack, at once.
pub(super) async fn reject(ctx: Arc<Ctx>, d: Delivery, r: Box<Rejected>) {
    let span = d.span.clone();
    reject_in_span(ctx, d, r).instrument(span).await
}

async fn reject_in_span(ctx: Arc<Ctx>, d: Delivery, r: Box<Rejected>) {
    let code = r.error.code();
    let message = r.error.to_string();
    tracing::info!(entry = %d.entry.id, job_id = r.echo.job_id.as_deref().unwrap_or(""), code = %code, "rejected bad input");
    let mut result = error_result(&ctx, &d, &r.echo, code, message.clone());
    result.image_size = r.image_size;
    if dead_letter(&ctx, &d, &r.echo, &result, &message, r.video.as_ref()).await {
        Outcome::InvalidInput.count();
    }
}

/// The answer to a frame whose `video` object disagrees with its video's (`first`).
fn video_disagrees(v: &Option<VideoTag>, first: &str) -> InputError {
    let this = v.as_ref().map_or("", |v| v.spec.as_str());
    InputError::InvalidJob(format!(
        "the video object disagrees with the one the video's first recorded frame carried: {this} vs {first}"
    ))
}

/// Delivered too often: dead letter with `too_many_deliveries`.
pub(super) async fn too_many_deliveries(ctx: Arc<Ctx>, d: Delivery) {
    let span = d.span.clone();
    too_many_in_span(ctx, d).instrument(span).await
}

async fn too_many_in_span(ctx: Arc<Ctx>, d: Delivery) {
    let keys = ctx.queue.shard(d.entry.shard).keys();
    let max_frames = ctx.config.limits.max_video_frames;
    let (echo, video) = d
        .entry
        .parse_job(true, &ctx.config.limits.job())
        .map(|parsed| match parsed {
            Ok(j) => (j.echo(), VideoTag::of(&j, keys, max_frames).ok().flatten()),
            Err(e) => {
                let video = VideoTag::of_echo(&e.echo, keys, max_frames);
                (e.echo, video)
            }
        })
        .unwrap_or_default();
    d.record_job_id(echo.job_id.as_deref());
    let message = format!(
        "delivered {} times (max_deliveries = {}); giving up",
        d.entry.deliveries, ctx.config.queue.max_deliveries
    );
    tracing::warn!(entry = %d.entry.id, deliveries = d.entry.deliveries, "dead-lettering a job delivered too often");
    let result = error_result(
        &ctx,
        &d,
        &echo,
        ErrorCode::TooManyDeliveries,
        message.clone(),
    );
    if dead_letter(&ctx, &d, &echo, &result, &message, video.as_ref()).await {
        Outcome::DeadLettered.count();
    }
}

/// An error result from this worker, with the time the job spent here.
fn error_result(
    ctx: &Ctx,
    d: &Delivery,
    echo: &Echo,
    code: ErrorCode,
    message: String,
) -> JobResult {
    let Origin {
        worker,
        device,
        model,
    } = ctx.origin.clone();
    let mut r = JobResult {
        worker,
        device,
        model,
        ..JobResult::error(&d.entry.id, echo, code, message)
    };
    r.timings_ms.queue_wait = d.queue_wait_ms;
    r.timings_ms.total = d.fetched.elapsed().as_secs_f64() * 1e3;
    r
}

/// Writes the dead letter, answering on the job's `reply_to` or, when that stream cannot take
/// it, on the default results stream, and recording the frame for its video, if any (as an
/// error frame). False when nothing was written.
async fn dead_letter(
    ctx: &Ctx,
    d: &Delivery,
    echo: &Echo,
    result: &JobResult,
    message: &str,
    video: Option<&VideoTag>,
) -> bool {
    let mut json = result.to_json();
    let mut message = message.to_string();
    let mut video = video;
    let record = video.map(|_| {
        video::error_record(
            result.error.as_ref().map_or("", |e| e.code.as_str()),
            &message,
            result.image_size,
        )
        .encode()
    });
    let mut code = result
        .error
        .as_ref()
        .map_or(String::new(), |e| e.code.as_str().to_string());
    let job_id = echo.job_id.clone().unwrap_or_default();
    let keys = ctx.queue.shard(d.entry.shard).keys();
    let default = keys.results.clone();
    let mut reply = keys.reply_stream(echo.reply_to.as_deref()).to_string();
    loop {
        let letter = || {
            ctx.queue.dead_letter(DeadLetter {
                entry: &d.entry,
                reply_to: &reply,
                job_id: &job_id,
                result_json: &json,
                code: &code,
                message: &message,
                worker: &ctx.origin.worker,
                video: video.zip(record.as_deref()).map(|(v, r)| v.record_frame(r)),
            })
        };
        let regroup = || ctx.queue.shard(d.entry.shard).ensure_group();
        let why = match retry(&ctx.health, &ctx.stops.hard, "dead_letter", letter, regroup).await {
            Some(Written::Done) => return true,
            Some(Written::NotPending) | None => return false,
            Some(Written::ReplyUnusable(why)) => why,
            Some(Written::VideoDisagrees(first)) => {
                // Not a frame of that video after all: answered invalid_job, not recorded.
                let error = video_disagrees(&video.cloned(), &first);
                let mut r = result.clone();
                r.error = Some(hmr2_client::ErrorBody {
                    code: error.code(),
                    message: error.to_string(),
                });
                json = r.to_json();
                message = error.to_string();
                code = error.code().as_str().to_string();
                video = None;
                continue;
            }
        };
        if reply == default {
            tracing::error!(
                entry = %d.entry.id,
                %why,
                "the default results stream cannot take the dead letter's answer; the job stays pending"
            );
            return false;
        }
        // The job's reply_to is unusable: answer on the default stream instead.
        tracing::info!(reply_to = %reply, %why, "reply_to cannot take the answer; answering on the default results stream");
        reply = default.clone();
    }
}
