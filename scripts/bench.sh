#!/usr/bin/env bash
# The side-by-side comparison of issue 6, in one invocation, on one machine, on the same frames:
#   1. `hmr2 bench` with the model under test: end to end through Redis, plus the raw
#      decode rate of the same frames on the same cores and the model alone; it also writes the
#      distinct frames it made, for step 3;
#   2. `hmr2 bench` with a null model (its forward pass costs nothing): the worker's
#      whole pipeline except the forward pass, measured directly, beside the raw decode rate;
#   3. the Python baseline (benches/baseline/baseline.py: the old service's way, one frame at a
#      time, batch 1, fp32) on the same frames with the same model file;
# then prints the ratios against the targets and writes $OUT/summary.json and $OUT/summary.md.
#
# Settings (environment variables):
#   FRAMES=2000            jobs for each hmr2 bench run
#   BASELINE_FRAMES=200    jobs for the Python baseline (it is slow; its rate is per frame)
#   SIZE=1280x720          frame size
#   PEOPLE=0               figures per frame sent as boxes (0: no boxes, the whole frame)
#   MODEL=models/artifacts/hmr2-tiny.pt   model of the worker
#   BASELINE_MODEL=$MODEL  model of the baseline (on a GPU: the fp32 export of the same weights)
#   DEVICE=cpu             cpu, cuda, cuda:N or auto (both sides)
#   EXTRA=                 more flags for hmr2 bench, e.g. "--max-batch 64 --sweep 1,16,128"
#   OUT=bench-out          where the JSON reports, frames and summary go
#   SKIP_NULL=1            skip step 2;  NO_BUILD=1  use the existing release binary of `hmr2`
# On the GPU machine (no .venv, no cargo; see scripts/gpu-check.sh): PYTHON (a python3 with
# torch 2.11; its torch/lib goes on LD_LIBRARY_PATH), HMR2_TOOL (the `hmr2` tool binary, default
# .device/hmr2 when present), REDIS_DIR (a redis-server bundle, default .device/redis when present).
set -euo pipefail
cd "$(dirname "$0")/.."

FRAMES=${FRAMES:-2000}
BASELINE_FRAMES=${BASELINE_FRAMES:-200}
SIZE=${SIZE:-1280x720}
PEOPLE=${PEOPLE:-0}
MODEL=${MODEL:-models/artifacts/hmr2-tiny.pt}
BASELINE_MODEL=${BASELINE_MODEL:-$MODEL}
DEVICE=${DEVICE:-cpu}
EXTRA=${EXTRA:-}
OUT=${OUT:-bench-out}
PY=${PYTHON:-.venv/bin/python}
BIN=${HMR2_TOOL:-}
if [ -z "$BIN" ]; then
  if [ -x .device/hmr2 ]; then BIN=.device/hmr2; NO_BUILD=1; else BIN=target/release/hmr2; fi
fi
REDIS_DIR=${REDIS_DIR:-.device/redis}
[ -x "$REDIS_DIR/redis-server" ] && export PATH="$(cd "$REDIS_DIR" && pwd):$PATH"
if [ -n "${PYTHON:-}" ]; then
  TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

say() { printf '\033[1mbench.sh:\033[0m %s\n' "$*" >&2; }

command -v "$PY" >/dev/null || { echo "bench.sh: no $PY (run make setup, or set PYTHON)" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
  say "building the release binary (hmr2)"
  cargo build --release -q -p hmr2-tools --bin hmr2
fi
mkdir -p "$OUT"
rm -rf "$OUT/frames"

say "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
say "1/3 hmr2 bench, $MODEL on $DEVICE, $FRAMES frames $SIZE"
# shellcheck disable=SC2086
"$BIN" --device "$DEVICE" --model "$MODEL" bench --frames "$FRAMES" --size "$SIZE" \
  --people "$PEOPLE" --save-frames "$OUT/frames" --json "$OUT/worker.json" $EXTRA

if [ -z "${SKIP_NULL:-}" ]; then
  say "2/3 hmr2 bench with the null model (pipeline except the forward pass)"
  "$PY" benches/baseline/null_model.py --out "$OUT/null.pt" >/dev/null
  # shellcheck disable=SC2086
  "$BIN" --device "$DEVICE" --model "$OUT/null.pt" bench --frames "$FRAMES" --size "$SIZE" \
    --people "$PEOPLE" --json "$OUT/worker-null.json" $EXTRA
else
  rm -f "$OUT/worker-null.json"
fi

say "3/3 Python baseline, $BASELINE_MODEL on $DEVICE, $BASELINE_FRAMES of the same frames"
"$PY" benches/baseline/baseline.py --frames "$OUT/frames" --count "$BASELINE_FRAMES" \
  --model "$BASELINE_MODEL" --device "$DEVICE" --json "$OUT/baseline.json"
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
w = json.loads((out / "worker.json").read_text())
b = json.loads((out / "baseline.json").read_text())
null_path = out / "worker-null.json"
n = json.loads(null_path.read_text()) if null_path.exists() else None
gpu = w["setup"]["device"].startswith("cuda")

e2e, base = w["end_to_end"]["frames_per_s"], b["frames_per_s"]
raw = w["raw_decode"]["frames_per_s"]
fwd = w["model_only"][0]
rows, summary = [], {"machine": w["machine"], "setup": w["setup"]}

def row(name, fps, note=""):
    rows.append((name, fps, note))

row("python baseline (batch 1, fp32, one frame at a time)", base,
    f"latency p50 {b['latency_ms']['p50']:.0f} ms")
row("hmr2-worker end to end through Redis", e2e,
    f"= {e2e / base:.1f}x the baseline (target >= {20 if gpu else 5}x)")
row(f"raw decode of the same frames (1/{w['setup']['jpeg_scale']} scale)", raw,
    f"before {w['raw_decode_runs'][0]['frames_per_s']:.0f}, after {w['raw_decode_runs'][1]['frames_per_s']:.0f}")
row(f"model only, batch {fwd['batch']}", fwd["frames_per_s"],
    f"{fwd['ms_per_batch']:.1f} ms/batch" + ("  (target >= 1500 frames/s)" if gpu else ""))
summary["ratio_vs_baseline"] = e2e / base
if n is not None:
    p, nraw = n["end_to_end"]["frames_per_s"], n["raw_decode"]["frames_per_s"]
    row("pipeline except forward (null model), end to end", p,
        f"= {100 * p / nraw:.0f}% of raw decode {nraw:.0f} measured in that run (target >= 80%)")
    summary["pipeline_vs_raw_decode"] = p / nraw
d = w["derived"]
if d.get("pipeline_except_forward_fps"):
    row("pipeline except forward (derived from CPU time)", d["pipeline_except_forward_fps"],
        f"= {100 * d['pipeline_vs_raw_decode']:.0f}% of raw decode")
    summary["pipeline_vs_raw_decode_derived"] = d["pipeline_vs_raw_decode"]
if gpu:
    summary["targets_gpu"] = {"model_only_fps": fwd["frames_per_s"], "e2e_fps": e2e}

m = w["machine"]
head = (f"{m['cpu']}, {m['cores']} cores, load {m['load_before'][0]:.2f} -> {m['load_after'][0]:.2f}; "
        f"{w['setup']['model_label']} on {w['setup']['device']}; "
        f"{w['setup']['size'][0]}x{w['setup']['size'][1]} JPEG q90, {w['setup']['jpeg_bytes_mean'] // 1024} KB, "
        f"{w['setup']['people_per_frame']} box(es)/frame, base64 in the job JSON")
lines = [head, "", "| | frames/s | |", "|---|---:|---|"]
lines += [f"| {name} | {fps:.1f} | {note} |" for name, fps, note in rows]
stages = b["stage_ms_per_frame"]
lines += ["", "Python baseline per frame: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())]
ws = ", ".join(f"{s['stage']} {100 * s['share']:.0f}%" for s in w["stages"] if s["seconds"] > 0)
lines += [f"hmr2-worker stage shares: {ws}; batch sizes mean {w['batch_sizes']['mean']:.1f}; "
          f"latency p50 {w['end_to_end']['latency_ms']['p50']:.0f} ms p99 {w['end_to_end']['latency_ms']['p99']:.0f} ms; "
          f"cores busy {w['end_to_end']['cpu_cores']:.2f} + redis {w['end_to_end']['redis_cpu_cores']:.2f}; "
          f"peak RSS {(w['memory']['peak_rss_bytes'] or 0) / 2**20:.0f} MiB"]
text = "\n".join(lines)
print("\n" + text)
(out / "summary.md").write_text(text + "\n")
summary["rows"] = [{"name": a, "frames_per_s": f, "note": c} for a, f, c in rows]
(out / "summary.json").write_text(json.dumps(summary, indent=2))
names = ["summary.md", "summary.json", "worker.json", "worker-null.json", "baseline.json"]
print("\nwritten: " + ", ".join(str(out / x) for x in names if (out / x).exists()))
EOF
