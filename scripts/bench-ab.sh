#!/usr/bin/env bash
# Two builds of the `hmr2` tool side by side: `hmr2 bench` with each, interleaved (A B A B ...),
# on the same synthetic frames, with the tiny model, with the null model (a forward pass that
# costs nothing: the worker's pipeline alone), and with the tiny model behind the tiny detector
# (frames without boxes). Prints every run's frames/s and, per model, the
# ratio of the medians B / A. Use it to show that a change leaves the worker's speed alone (or
# what it gains): build the old revision's tool somewhere (a git worktree), then
#
#   scripts/bench-ab.sh /path/to/old/hmr2 target/release/hmr2
#
# Settings (environment): ROUNDS=3, FRAMES=1000, PEOPLE=2, SIZE=1280x720, OUT=bench-out/ab,
# MODELS="tiny null detect", and A_ARGS / B_ARGS: extra `hmr2 bench` flags for one side. The
# same build with and without tracked videos:
#
#   B_ARGS="--video-frames 300" scripts/bench-ab.sh target/release/hmr2 target/release/hmr2
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 A_HMR2 B_HMR2" >&2; exit 2; }
A=$1 B=$2
ROUNDS=${ROUNDS:-3} FRAMES=${FRAMES:-1000} PEOPLE=${PEOPLE:-2} SIZE=${SIZE:-1280x720}
OUT=${OUT:-bench-out/ab}
PY=.venv/bin/python
mkdir -p "$OUT"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[ -f models/artifacts/hmr2-tiny.pt ] || scripts/setup
"$PY" benches/baseline/null_model.py --out "$OUT/null.pt" >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  for model in ${MODELS:-tiny null detect}; do
    path=models/artifacts/hmr2-tiny.pt extra=
    [ "$model" = null ] && path="$OUT/null.pt"
    [ "$model" = detect ] && extra=--detect
    for side in A B; do
      bin=$A args=${A_ARGS:-}; [ "$side" = B ] && bin=$B args=${B_ARGS:-}
      echo "round $r/$ROUNDS: $side, $model" >&2
      # shellcheck disable=SC2086
      "$bin" --model "$path" bench --frames "$FRAMES" --size "$SIZE" --people "$PEOPLE" $extra $args \
        --json "$OUT/$model-$side-$r.json" >/dev/null 2>"$OUT/$model-$side-$r.log"
    done
  done
done
"$PY" - "$OUT" "$ROUNDS" ${MODELS:-tiny null detect} <<'PY'
import json, statistics, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
for model in sys.argv[3:]:
    rates = {s: [json.loads((out / f"{model}-{s}-{r}.json").read_text())["end_to_end"]["frames_per_s"]
                 for r in range(1, rounds + 1)] for s in "AB"}
    a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
    print(f"{model:6} A {' '.join(f'{x:7.1f}' for x in rates['A'])}   "
          f"B {' '.join(f'{x:7.1f}' for x in rates['B'])}   median B/A = {b / a:.3f}")
PY
