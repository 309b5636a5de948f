#!/usr/bin/env bash
# Chaos and soak figures (docs/reliability.md): four workers drain one stream while being killed
# and restarted at random; then one job that kills every worker holding it; then the same load
# with no faults while memory is sampled.
#   scripts/chaos.sh            full run (20,000 jobs each)
#   scripts/chaos.sh --quick    the bounded version `make test` runs (2,000 jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=20000; bin=target/release/hmr2-worker; build="cargo build --release --bin hmr2-worker"
if [ "${1:-}" = "--quick" ]; then jobs=2000; bin=target/debug/hmr2-worker; build="cargo build --bin hmr2-worker"; fi
[ -x "$bin" ] || $build
out=${OUT:-bench-out}
.venv/bin/python scripts/chaos.py chaos --jobs "$jobs" --workers 4 --kill-every 2 --bin "$bin" --json "$out/chaos.json"
# One job that kills every worker it reaches: only it may be dead-lettered.
.venv/bin/python scripts/chaos.py chaos --jobs 300 --workers 2 --kill-every 0 --crasher --max-deliveries 3 \
  --bin "$bin" --json "$out/crasher.json"
.venv/bin/python scripts/chaos.py soak --jobs "$jobs" --workers 4 --bin "$bin" --json "$out/soak.json"
