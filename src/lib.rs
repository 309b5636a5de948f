//! # hmr2-worker
//!
//! A stateless GPU worker: it takes video-frame jobs from a Redis stream, runs the HMR2.0
//! human-mesh-recovery model (TorchScript, through libtorch) on the device it was given, and
//! publishes one result per frame back to Redis, releasing GPU memory after every batch and
//! exporting what an operator needs to Prometheus.
//!
//! ## Layout
//!
//! - [`config`]: the one `Config`, layered defaults → file → env → flags, validated once.
//! - [`error`]: one error enum per boundary, each with a stable `code()`.
//! - [`job`]: the wire contract v1: parsing jobs, encoding results.
//! - [`image`]: base64, JPEG/PNG decoding with limits, the HMR2 crop.
//! - [`camera`]: full-frame camera and 2D keypoints from the model's crop camera.
//! - [`model`]: the model trait and the TorchScript implementation.
//! - [`gpu`]: the caching allocator (release, statistics) through a small C++ shim.
//! - [`queue`]: the Redis Streams protocol; atomic steps are Lua scripts beside it.
//! - [`worker`]: the pipeline: fetch → decode/crop → batch → infer → publish; [`run`].
//! - [`metrics`], [`http`]: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`.
//! - [`telemetry`] — logging set-up and the worker's identity.
//! - [`check`]: the `check` command behind `src/main.rs`.
//!
//! The binary (`src/main.rs`) only parses the command line and calls into this library.

mod camera;
pub mod check;
pub mod config;
pub mod error;
pub mod gpu;
mod health;
mod http;
pub mod image;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod signal;
pub mod telemetry;
pub mod worker;

pub use worker::{run, run_with, RunError};
