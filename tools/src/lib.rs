//! # hmr2-tools
//!
//! Everything around the worker that is not the worker, behind the `hmr2` binary
//! (`src/main.rs`):
//!
//! - [`enqueue`]: image files (or synthetic frames) in, job ids out, through the wire contract
//!   of `hmr2-client`, as an upload pipeline does.
//! - [`demo`]: the whole system in one command (throwaway redis-server, the worker in-process,
//!   frames in, results and PNG overlays out).
//! - [`bench`]: the worker end to end through a real Redis, with the raw decode rate and the
//!   model alone measured beside it.
//! - [`redis_server`]: a throwaway local `redis-server` (for `demo`, `bench` and the tests).
//! - [`synth`]: random synthetic frames with their boxes, to train and test the person detector.

pub mod bench;
pub mod demo;
pub mod enqueue;
pub mod redis_server;
pub mod synth;
