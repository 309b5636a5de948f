//! Integration tests: one binary, a real `redis-server` (one shared server, a key prefix per
//! test; tests that restart Redis start their own), the tiny TorchScript model on the CPU.

mod broken;
mod cluster;
mod crop;
mod detector;
mod fuzz;
mod hardening;
mod lifecycle;
mod memory;
mod observability;
mod readme;
mod seam;
mod security;
mod shards;
mod support;
mod video;
mod worker;
