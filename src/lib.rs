//! # hmr2-worker
//!
//! A stateless GPU worker: it takes video-frame jobs from a Redis stream, runs the HMR2.0
//! human-mesh-recovery model (TorchScript, through libtorch) on the device it was given, and
//! publishes one result per frame back to Redis, releasing GPU memory after every batch and
//! exporting what an operator needs to Prometheus.
//!
//! ## Layout
//!
//! Every edge points down this list; nothing here knows about the tools (`tools/`, binary
//! `hmr2`) or the contract's producers (`client/`, crate `hmr2-client`, which owns the wire
//! types, error codes and key names used below).
//!
//! - `main.rs`: the `hmr2-worker` binary: `run`, `check`, `config`.
//! - [`check`]: the `check` command: versions, device, model forward pass.
//! - [`worker`]: the pipeline, [`run`] / [`run_with`] (the model seam):
//!   - `start`: listener, inference thread and warm-up, consumer groups, model hash
//!     (`model_info`); `ctx`: what the stages share, the cancellation tree, the job in flight;
//!   - `fetch`: XREADGROUP per shard / XPENDING + XCLAIM bounded by in-flight permits, lease
//!     renewal, each entry a `delivery` (permit, lease, span);
//!   - `decode` with [`worker::prepare`]: parse, plan (boxes checked, decode scale), decode, crop;
//!   - `coordinator` around the `scheduler` (the I/O-free dispatch policy) over the `batcher`s;
//!   - `infer`: inference thread and OOM ladder; `memory`: the GPU memory policy;
//!   - `publish`, `result`, `retry`: results, dead letters, Redis retries; `gauges`: queue and
//!     GPU gauges, consumer pruning.
//! - `http`: `/metrics`, `/healthz`, `/readyz`; `health`: the flags behind them.
//! - `queue`: the Redis Streams protocol; atomic steps are Lua scripts beside it.
//! - [`model`]: the model trait, the TorchScript implementation, the libtorch version.
//! - [`detector`]: the person detector (contract `person-detector/1`) and its box mapping.
//! - `camera`: full-frame camera and 2D keypoints from the model's crop camera.
//! - [`video`]: tracked videos (DESIGN §13): the compact record each answered frame leaves in
//!   Redis, the tracking stage (in every worker, or alone as `hmr2-worker track`) that tracks
//!   and smooths a complete video with the `hmr2-track` crate and writes its output atomically,
//!   and the SMPL layer for vertices of smoothed parameters.
//! - [`image`]: base64, JPEG/PNG decoding with limits, the HMR2 crop.
//! - [`gpu`]: the caching allocator (release, statistics) through a small C++ shim, and the
//!   device's NVML and allocator gauges.
//! - [`metrics`]: metric names, label sets and the Prometheus recorder; [`telemetry`]: logging;
//!   [`signal`]: SIGTERM/SIGINT handling.
//! - [`error`]: one error enum per boundary; [`config`]: the one `Config`, layered defaults →
//!   file → env → flags, validated once.
//!
//! Measured figures live in `BENCHMARKS.md` and `docs/reliability.md`, not here.

#![warn(unreachable_pub)]

mod camera;
pub mod check;
pub mod cli;
pub mod config;
pub mod detector;
pub mod error;
pub mod gpu;
mod health;
mod http;
pub mod image;
pub mod metrics;
pub mod model;
mod queue;
pub mod signal;
pub mod telemetry;
#[doc(hidden)]
pub mod test_support;
pub mod video;
pub mod worker;

pub use worker::{run, run_with, Models, RunError};

/// Connecting to the configured Redis (one node or a cluster, TLS and credentials as the worker
/// uses them), for tools that talk to the worker's Redis. The queue protocol itself is internal.
pub use queue::{connect, install_tls_provider, Conn};
