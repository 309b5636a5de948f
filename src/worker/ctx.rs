//! What the stages of one worker share ([`Ctx`]), its cancellation tree ([`Stops`]), and the
//! job as it travels between decoding and publishing ([`Held`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decode::WholeFrames;
use super::delivery::{Delivery, PixelBudget};
use super::prepare::Prepared;
use super::result::Origin;
use crate::config::Config;
use crate::health::Health;
use crate::queue::Queue;

/// What the stages share.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) queue: Queue,
    pub(crate) health: Arc<Health>,
    pub(crate) origin: Origin,
    pub(crate) stops: Stops,
    /// Every task that holds a job (fetch, decode, coordinate, publish, dead-letter): the
    /// drain waits for it to empty.
    pub(crate) jobs: TaskTracker,
    /// The detector's input side, when a detector is loaded.
    pub(crate) detector_input: Option<u32>,
    /// Jobs without boxes answered with a whole-frame person because no detector is loaded,
    /// reported once a minute (see `decode::warn_whole_frames`).
    pub(crate) whole_frames: WholeFrames,
    /// Decoded pixels in flight (`limits.max_decoded_bytes_in_flight`): charged by the
    /// decoders, waited for by the fetcher.
    pub(crate) pixels: PixelBudget,
}

/// The cancellation tree of one worker: cancelling a token cancels every token below it.
///
/// ```text
/// all          the HTTP listener (last to go)
/// └ background gauges, consumer pruning, lease renewal (after the drain)
///   └ hard     the grace period is over: publishers stop retrying
///     └ intake stop taking work (shutdown asked, or the worker is broken)
/// ```
pub(crate) struct Stops {
    pub(crate) all: CancellationToken,
    pub(crate) background: CancellationToken,
    pub(crate) hard: CancellationToken,
    pub(crate) intake: CancellationToken,
}

impl Stops {
    pub(crate) fn new() -> Self {
        let all = CancellationToken::new();
        let background = all.child_token();
        let hard = background.child_token();
        let intake = hard.child_token();
        Stops {
            all,
            background,
            hard,
            intake,
        }
    }
}

/// A job between decoding and publishing: its delivery (permit, lease, span) and what the
/// result needs. Its crops (or its letterbox) live in the scheduler meanwhile.
pub(crate) struct Held {
    pub(crate) delivery: Delivery,
    pub(crate) prepared: Prepared,
    /// Its share of the detector's forward passes, milliseconds.
    pub(crate) detect_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelling_a_stop_cancels_those_below_it_only() {
        let s = Stops::new();
        s.intake.cancel();
        assert!(
            !s.hard.is_cancelled(),
            "shutdown does not end the grace period"
        );
        let s = Stops::new();
        s.background.cancel();
        assert!(s.hard.is_cancelled() && s.intake.is_cancelled());
        assert!(
            !s.all.is_cancelled(),
            "the listener outlives the background tasks"
        );
        s.all.cancel();
        assert!(s.all.is_cancelled());
    }
}
