//! Liveness and readiness of one worker, read by `/healthz`, `/readyz` and the
//! `hmr2_worker_ready` gauge.
//!
//! Readiness is computed here and only here, from named [`Input`]s, each with one writer and,
//! when it is down, the reason (which `/readyz` returns): warm-up done (start-up), the job
//! streams readable (the fetcher), results publishable (the publishers), batches succeeding
//! (the inference thread).
//!
//! Two conditions make a worker not live, so the orchestrator replaces it:
//! - **broken**: the model or the device failed in a way a retry cannot fix (a panic in the
//!   inference thread, a forward error other than out-of-memory). It is final:
//!   [`Health::broken_token`] is cancelled so fetching and lease renewal stop at once, and the
//!   jobs this worker holds stay pending for other workers.
//! - **stalled**: an operation held with [`Health::busy`] (a forward pass, a publish) has run
//!   longer than the stall timeout (`gpu.stall_timeout_s`): a hung device. It clears itself
//!   when the operation ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::{READY_INPUT, WORKER_READY};

/// The stall timeout of [`Health::default`].
pub(crate) const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What readiness is computed from. Each input has one writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The warm-up forward pass is done (written once, at start-up).
    Warm,
    /// The job streams can be read: the consumer groups exist and the last read or claim
    /// answered (written by start-up, then by the fetcher).
    RedisRead,
    /// Results can be published: the last publish or dead letter answered, after retries
    /// (written by the publishers).
    RedisPublish,
    /// Batches succeed: fewer than `gpu.max_consecutive_failures` failed in a row (written by
    /// the inference thread).
    Batches,
}

impl Input {
    const ALL: [Input; 4] = [
        Input::Warm,
        Input::RedisRead,
        Input::RedisPublish,
        Input::Batches,
    ];

    /// The name `/readyz` gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Input::Warm => "warm",
            Input::RedisRead => "redis_read",
            Input::RedisPublish => "redis_publish",
            Input::Batches => "batches",
        }
    }
}

/// Liveness and readiness, shared by the pipeline and the listener.
#[derive(Debug)]
pub(crate) struct Health {
    /// The inference thread is running (false once it exits or panics).
    inference_alive: AtomicBool,
    /// Per [`Input`] (in `Input::ALL` order): `None` when up, else why it is down.
    inputs: Mutex<[Option<String>; 4]>,
    /// Why the worker is broken, once it is.
    broken: OnceLock<String>,
    broken_token: CancellationToken,
    stall_timeout: Duration,
    /// Operations in progress: id → (what, since when).
    busy: Mutex<BTreeMap<u64, (&'static str, Instant)>>,
    next_busy: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_STALL_TIMEOUT)
    }
}

/// An operation in progress (see [`Health::busy`]); it ends when this is dropped.
#[must_use = "the operation counts as in progress only while the guard lives"]
#[derive(Debug)]
pub(crate) struct Busy<'a> {
    health: &'a Health,
    id: u64,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.health.busy_ops().remove(&self.id);
    }
}

impl Health {
    /// Every flag down; an operation longer than `stall_timeout` makes the worker not live.
    pub(crate) fn new(stall_timeout: Duration) -> Self {
        Health {
            inference_alive: AtomicBool::new(false),
            inputs: Mutex::new([
                Some("warming up".into()),
                Some("not connected to Redis yet".into()),
                None,
                None,
            ]),
            broken: OnceLock::new(),
            broken_token: CancellationToken::new(),
            stall_timeout,
            busy: Mutex::new(BTreeMap::new()),
            next_busy: AtomicU64::new(0),
        }
    }

    /// Marks the worker broken (once; logs the reason at error level once); cancels
    /// [`Health::broken_token`]; refreshes the ready gauge.
    pub(crate) fn mark_broken(&self, reason: &str) {
        if self.broken.set(reason.to_string()).is_ok() {
            tracing::error!(
                reason,
                "the worker is broken: it stops taking work, its jobs stay pending for other workers"
            );
        }
        self.broken_token.cancel();
        self.refresh_gauge();
    }

    /// True once [`Health::mark_broken`] was called.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    /// Why the worker is broken, once it is.
    pub(crate) fn broken_reason(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }

    /// Cancelled when the worker is broken: fetching and lease renewal stop at once.
    pub(crate) fn broken_token(&self) -> CancellationToken {
        self.broken_token.clone()
    }

    /// RAII guard: while it lives, the named operation (a forward pass, a publish) is in
    /// progress; several may be held at once from several threads/tasks.
    pub(crate) fn busy(&self, what: &'static str) -> Busy<'_> {
        let id = self.next_busy.fetch_add(1, Ordering::Relaxed);
        self.busy_ops().insert(id, (what, Instant::now()));
        Busy { health: self, id }
    }

    /// The oldest operation in progress longer than the stall timeout: (what, for how long).
    pub(crate) fn stalled(&self) -> Option<(&'static str, Duration)> {
        let ops = self.busy_ops();
        let (what, since) = ops.values().min_by_key(|(_, since)| *since)?;
        let running = since.elapsed();
        (running > self.stall_timeout).then_some((*what, running))
    }

    /// Alive = inference thread running && !broken && !stalled. `/healthz` answers 503 when
    /// not alive, and its JSON report names broken/stalled reasons.
    pub(crate) fn alive(&self) -> bool {
        self.inference_alive.load(Ordering::Relaxed)
            && !self.is_broken()
            && self.stalled().is_none()
    }

    /// Ready: alive and every [`Input`] up; what `/readyz` reports and `hmr2_worker_ready`
    /// shows.
    pub(crate) fn ready(&self) -> bool {
        self.alive() && self.inputs().iter().all(Option::is_none)
    }

    /// Marks the inference thread running or stopped.
    pub(crate) fn set_inference_alive(&self, alive: bool) {
        self.inference_alive.store(alive, Ordering::Relaxed);
        self.refresh_gauge();
    }

    /// Sets `input` up (`Ok`) or down with its reason; logs a change of state once.
    pub(crate) fn set(&self, input: Input, state: Result<(), String>) {
        let changed = {
            let mut inputs = self.inputs();
            let slot = &mut inputs[input as usize];
            let changed = slot.is_some() != state.is_err();
            *slot = state.err();
            changed.then(|| slot.clone())
        };
        if let Some(now) = changed {
            match now {
                Some(reason) => tracing::debug!(input = input.name(), %reason, "not ready"),
                None => tracing::debug!(input = input.name(), "ready again"),
            }
        }
        self.refresh_gauge();
    }

    /// Whether `input` is up.
    pub(crate) fn is_up(&self, input: Input) -> bool {
        self.inputs()[input as usize].is_none()
    }

    /// Why `input` is down, when it is.
    pub(crate) fn reason(&self, input: Input) -> Option<String> {
        self.inputs()[input as usize].clone()
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, [Option<String>; 4]> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_gauge(&self) {
        metrics::gauge!(WORKER_READY).set(if self.ready() { 1.0 } else { 0.0 });
        let inputs = self.inputs().clone();
        for (input, state) in Input::ALL.iter().zip(inputs) {
            let up = if state.is_none() { 1.0 } else { 0.0 };
            metrics::gauge!(READY_INPUT, "input" => input.name()).set(up);
        }
    }

    fn busy_ops(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (&'static str, Instant)>> {
        // The map stays consistent whatever panicked while holding the lock.
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every flag as one JSON line, so an operator sees why a probe fails: `broken` holds the
    /// reason (or null), `stalled` the operation and its seconds so far (or null),
    /// `not_ready` each readiness input that is down with its reason (the server's own words
    /// for Redis).
    pub(crate) fn report(&self) -> String {
        let stalled = self.stalled().map(|(what, running)| {
            serde_json::json!({ "operation": what, "seconds": running.as_secs_f64() })
        });
        let not_ready: serde_json::Map<String, serde_json::Value> = Input::ALL
            .iter()
            .filter_map(|&i| Some((i.name().to_string(), self.reason(i)?.into())))
            .collect();
        let report = serde_json::json!({
            "ready": self.ready(),
            "alive": self.alive(),
            "inference_alive": self.inference_alive.load(Ordering::Relaxed),
            "warm": self.is_up(Input::Warm),
            "redis_ok": self.is_up(Input::RedisRead) && self.is_up(Input::RedisPublish),
            "failing": !self.is_up(Input::Batches),
            "broken": self.broken_reason(),
            "stalled": stalled,
            "not_ready": not_ready,
        });
        format!("{report}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(stall: Duration) -> Health {
        let h = Health::new(stall);
        h.set_inference_alive(true);
        h.set(Input::Warm, Ok(()));
        h.set(Input::RedisRead, Ok(()));
        h
    }

    fn report(h: &Health) -> serde_json::Value {
        serde_json::from_str(&h.report()).unwrap()
    }

    #[test]
    fn broken_is_final_cancels_the_token_and_keeps_the_first_reason() {
        let h = live(DEFAULT_STALL_TIMEOUT);
        let token = h.broken_token();
        assert!(h.alive() && h.ready() && !h.is_broken());
        assert!(!token.is_cancelled());
        h.mark_broken("forward pass panicked: CUDA error: an illegal memory access");
        h.mark_broken("a second reason");
        assert!(h.is_broken() && token.is_cancelled() && h.broken_token().is_cancelled());
        assert!(!h.alive() && !h.ready());
        let r = report(&h);
        assert_eq!(r["alive"], false);
        assert_eq!(
            r["broken"],
            "forward pass panicked: CUDA error: an illegal memory access"
        );
        assert!(r["stalled"].is_null());
    }

    /// Polls `stalled()` until it names an operation; fails after a minute.
    fn wait_for_stall(h: &Health) -> (&'static str, Duration) {
        let start = Instant::now();
        loop {
            if let Some(stall) = h.stalled() {
                return stall;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no stall seen");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn an_operation_past_the_stall_timeout_makes_the_worker_not_live_until_it_ends() {
        let stall = Duration::from_millis(20);
        let h = live(stall);
        let publish = h.busy("publish");
        let forward = h.busy("forward");
        let (what, running) = wait_for_stall(&h);
        assert_eq!(what, "publish", "the oldest operation is named");
        assert!(running > stall, "{running:?}");
        assert!(!h.alive() && !h.ready());
        let r = report(&h);
        assert_eq!(r["stalled"]["operation"], "publish");
        assert!(r["stalled"]["seconds"].as_f64().unwrap() > stall.as_secs_f64());
        drop(publish);
        assert_eq!(wait_for_stall(&h).0, "forward");
        drop(forward);
        assert_eq!(h.stalled(), None);
        assert!(h.alive(), "a stall clears when the operation ends");
        assert!(!h.is_broken(), "and is not final");
    }

    #[test]
    fn a_fresh_operation_is_not_a_stall() {
        let h = live(Duration::from_secs(3600));
        let _publish = h.busy("publish");
        assert_eq!(h.stalled(), None);
        assert!(h.alive() && h.ready());
        assert!(report(&h)["stalled"].is_null());
    }

    #[test]
    fn operations_shorter_than_the_timeout_never_stall_whatever_their_number() {
        let h = live(Duration::from_secs(3600));
        let guards: Vec<Busy<'_>> = (0..16).map(|_| h.busy("forward")).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| drop(h.busy("publish")));
            }
        });
        assert_eq!(h.busy_ops().len(), 16);
        assert!(h.alive());
        drop(guards);
        assert!(h.busy_ops().is_empty(), "every guard removed its operation");
    }

    #[test]
    fn a_stopped_inference_thread_is_not_alive() {
        let h = live(DEFAULT_STALL_TIMEOUT);
        h.set_inference_alive(false);
        assert!(!h.alive());
        assert_eq!(report(&h)["inference_alive"], false);
    }

    #[test]
    fn readiness_follows_every_input_and_names_the_reason_of_each_that_is_down() {
        let h = Health::default();
        h.set_inference_alive(true);
        assert!(!h.ready(), "not warm, not connected");
        let r = report(&h);
        assert_eq!(r["not_ready"]["warm"], "warming up");
        assert!(r["not_ready"]["redis_read"].is_string());
        h.set(Input::Warm, Ok(()));
        h.set(Input::RedisRead, Ok(()));
        assert!(h.ready());
        assert_eq!(report(&h)["not_ready"], serde_json::json!({}));
        // Reading works, publishing does not: not ready, and /readyz says why.
        h.set(
            Input::RedisPublish,
            Err("NOPERM no permission to run 'xadd'".into()),
        );
        assert!(!h.ready());
        let r = report(&h);
        assert_eq!(r["redis_ok"], false);
        assert_eq!(
            r["not_ready"]["redis_publish"],
            "NOPERM no permission to run 'xadd'"
        );
        // One input coming back does not hide another that is still down.
        h.set(Input::Batches, Err("5 batches failed in a row".into()));
        h.set(Input::RedisPublish, Ok(()));
        assert!(!h.ready());
        assert_eq!(report(&h)["failing"], true);
        h.set(Input::Batches, Ok(()));
        assert!(h.ready());
    }
}
