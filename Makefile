# hmr2-worker — every entry point is a target here.
#   make demo    set-up, then the demo (throwaway redis-server, tiny model, overlays in demo-out/)
#   make test    set-up, then every check: fmt, clippy, Rust tests, Python tests, the Python and
#                Node clients' tests, deploy tests
#   make bench-cluster  the queue on one redis node vs a 3-master Redis Cluster, 1/3/6 shards
.DEFAULT_GOAL := help
SHELL := /bin/bash
# libgomp spin-waits after every CPU forward pass unless told otherwise.
export OMP_WAIT_POLICY ?= PASSIVE
CARGO ?= cargo
PY := .venv/bin/python

.PHONY: help setup build release demo test test-rust test-python test-clients test-reliability test-deploy lint fmt bench chaos gpu-check clean

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

setup:
	@scripts/setup

build: setup
	$(CARGO) build

release: setup
	$(CARGO) build --release --workspace

demo: release
	./target/release/hmr2 demo $(ARGS)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: setup lint test-python test-rust test-clients test-reliability test-deploy

test-rust: setup
	@# The README's Rust producer (tests/it/readme.rs runs it against a worker).
	$(CARGO) build -p hmr2-client --features redis --example track_video
	$(CARGO) test --workspace --lib --bins --tests -- --test-threads=$${TEST_THREADS:-2}
	$(CARGO) test -p hmr2-worker --bench codec --bench pipeline

test-python: setup
	$(PY) -m pytest -q models/tests benches/baseline

# The producer clients against a real redis-server, a real Redis Cluster and the worker binary
# of the test build (target/debug/hmr2-worker, made by test-rust).
test-clients: setup
	clients/python/run-tests
	clients/node/run-tests

test-reliability: setup
	@# The worker binary of the test build (target/debug/hmr2-worker): after test-rust nothing is
	@# rebuilt, where `cargo build --bin hmr2-worker` alone resolves other features and rebuilds
	@# most dependencies (about 6 minutes on 2 cores).
	$(CARGO) test --workspace --lib --bins --tests --no-run
	scripts/chaos.sh --quick

test-deploy: setup
	@if [ -x deploy/tests/run ]; then deploy/tests/run; fi

fmt:
	$(CARGO) fmt --all

bench: release
	./target/release/hmr2 bench $(ARGS)

.PHONY: bench-cluster
bench-cluster: setup
	scripts/bench-cluster.sh

chaos: release
	scripts/chaos.sh

gpu-check:
	scripts/gpu-check.sh

clean:
	$(CARGO) clean
