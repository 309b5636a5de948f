#!/usr/bin/env bash
# The queue on one redis-server against a Redis Cluster (3 masters, no replicas) with 1, 3 and 6
# shards, side by side in one invocation: `hmr2 bench-cluster` with the null model (its forward
# pass costs nothing), so what is measured is the queue and the worker's pipeline around it.
# Prints the table (every run, then each topology against the single node) and writes
# $OUT/cluster.json.
#
# Settings (environment variables):
#   JOBS=6000        jobs per run
#   SIZE=160x120     frame size (small: the cost per job of the queue is what is compared)
#   VIDEOS=64        videos the jobs are frames of (a job's shard is that of its video)
#   SHARDS=1,3,6     shard counts run on the cluster
#   ROUNDS=3         the whole series this many times, interleaved (the spread is the noise)
#   DEVICE=cpu       device of the worker (cpu, cuda, cuda:N or auto)
#   EXTRA=           more flags for hmr2 bench-cluster, e.g. "--raw" or "--masters 4"
#   OUT=bench-out    where null.pt and cluster.json go
#   NO_BUILD=1       use the existing release binary of `hmr2`
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-6000}
SIZE=${SIZE:-160x120}
VIDEOS=${VIDEOS:-64}
SHARDS=${SHARDS:-1,3,6}
ROUNDS=${ROUNDS:-3}
DEVICE=${DEVICE:-cpu}
EXTRA=${EXTRA:-}
OUT=${OUT:-bench-out}
PY=${PYTHON:-.venv/bin/python}
BIN=${HMR2_TOOL:-target/release/hmr2}
# libgomp spin-waits after every CPU forward pass unless told otherwise.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

say() { printf '\033[1mbench-cluster.sh:\033[0m %s\n' "$*" >&2; }

command -v "$PY" >/dev/null || { echo "bench-cluster.sh: no $PY (run make setup, or set PYTHON)" >&2; exit 1; }
for b in redis-server redis-cli; do
  command -v "$b" >/dev/null || { echo "bench-cluster.sh: no $b (run make setup)" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
  say "building the release binary (hmr2)"
  cargo build --release -q -p hmr2-tools --bin hmr2
fi
mkdir -p "$OUT"

say "the null model (its forward pass costs nothing)"
"$PY" benches/baseline/null_model.py --out "$OUT/null.pt" >/dev/null

say "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
"$BIN" --device "$DEVICE" --model "$OUT/null.pt" bench-cluster --jobs "$JOBS" --size "$SIZE" \
  --videos "$VIDEOS" --shards "$SHARDS" --rounds "$ROUNDS" --json "$OUT/cluster.json" $EXTRA
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
