#!/usr/bin/env bash
# GPU evidence in one call, on a machine with an NVIDIA GPU, python3 with torch 2.11 and no
# network (see docs/gpu-report.md for the last report):
#   1. exports the full-size HMR2 model in bf16 on the GPU (random weights of the real
#      architecture, or --checkpoint via EXPORT_ARGS);
#   2. starts a bundled redis-server;
#   3. `hmr2-worker check` on cuda:0;
#   4. runs the worker on cuda:0, pushes FRAMES synthetic 1280x720 JPEG frames (`hmr2 enqueue`), scrapes /metrics
#      every second, logs allocator figures after every batch;
#   5. runs `hmr2 bench` (end to end, model-only and raw-decode rates) on the same GPU, then again
#      with frames sent without boxes and a yolo11m-size detector (DETECTOR=FILE, or exported with
#      random weights in bf16 when ultralytics is installed) finding the people;
#   6. (run first: it needs only torch) times the detector's post-processing alone, the old
#      per-image loop vs the batched one (benches/detector_post.py --device cuda,
#      $OUT/detector-post.json);
#   7. writes $OUT/report.md (frames/s, batch sizes, allocated/reserved after every batch, NVML
#      used, OOMs, per-stage times) next to the raw files.
# Environment: OUT (default gpu-out), HMR2_BIN (the worker, default .device/hmr2-worker or
# target/release/hmr2-worker), HMR2_TOOL (the `hmr2` tool, default .device/hmr2 or
# target/release/hmr2), REDIS_DIR (a bundle from shared/device/bundle-redis.sh, default
# .device/redis; else redis-server on PATH), FRAMES (5000), BATCH (64), PYTHON (python3), DEVICE
# (cuda:0), MODEL (exported when missing). A dry run on a CPU machine:
#   DEVICE=cpu MODEL=models/artifacts/hmr2-tiny.pt FRAMES=300 BATCH=16 scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
FRAMES=${FRAMES:-5000}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-cuda:0}
PY=${PYTHON:-python3}
BIN=${HMR2_BIN:-}
[ -n "$BIN" ] || { [ -x .device/hmr2-worker ] && BIN=.device/hmr2-worker || BIN=target/release/hmr2-worker; }
TOOL=${HMR2_TOOL:-}
[ -n "$TOOL" ] || { [ -x .device/hmr2 ] && TOOL=.device/hmr2 || TOOL=target/release/hmr2; }
REDIS_DIR=${REDIS_DIR:-.device/redis}
REDIS=redis-server; [ -x "$REDIS_DIR/redis-server" ] && REDIS="$REDIS_DIR/redis-server"
mkdir -p "$OUT"
log() { printf '[gpu-check %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/steps.log"; }

TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
MODEL=${MODEL:-/tmp/hmr2-full-bf16.pt}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The person detector's post-processing alone (clamp, score floor, NMS, padding; 1,000 candidates
# per image), the old per-image loop against the batched one, side by side on the GPU
# (benches/detector_post.py). Needs only torch; bounded; skipped without CUDA or with DETECTOR_POST=0.
if [ "${DETECTOR_POST:-1}" != 0 ] && [ "${DEVICE#cuda}" != "$DEVICE" ] \
  && $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  log "detector post-processing: per-image loop vs batched, batches 1, 8, 64"
  timeout 300 $PY benches/detector_post.py --device "$DEVICE" --batches 1,8,64 --repeats 15 \
    --json "$OUT/detector-post.json" 2>&1 | tee "$OUT/detector-post.txt" || log "detector post-processing bench failed"
else
  log "detector post-processing bench skipped (no CUDA device, or DETECTOR_POST=0)"
fi

if [ ! -f "$MODEL" ]; then
  log "exporting the full model (bf16, cuda) to $MODEL"
  $PY -m models.export --preset full --dtype bf16 --device cuda --out "$MODEL" ${EXPORT_ARGS:-} 2>&1 | tee "$OUT/export.log"
fi

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$REDIS" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
pids+=($!)
URL="redis://127.0.0.1:$port"
sleep 1

log "check"
"$BIN" check --device "$DEVICE" --model "$MODEL" | tee "$OUT/check.txt"

log "worker on $DEVICE, max_batch $BATCH, $FRAMES frames"
HTTP=127.0.0.1:$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=info,hmr2_worker::worker::infer=debug "$BIN" run --log-format json --model "$MODEL" \
  --device "$DEVICE" --max-batch "$BATCH" --redis-url "$URL" --prefix gpucheck --listen "$HTTP" \
  2>"$OUT/worker.log" &
worker=$!
pids+=($worker)
$PY scripts/gpu_report.py wait-ready "http://$HTTP/readyz" 600
$PY scripts/gpu_report.py scrape "http://$HTTP/metrics" "$OUT/metrics.jsonl" &
pids+=($!)
"$TOOL" enqueue --synthetic "$FRAMES" --size 1280x720 --redis-url "$URL" --prefix gpucheck --raw >/dev/null
$PY scripts/gpu_report.py wait-results "$URL" gpucheck:results "$FRAMES" 900 | tee "$OUT/drain.json"
sleep 2
kill -TERM "$worker"; wait "$worker" || true

log "bench (end to end, model-only, raw decode)"
"$TOOL" bench --frames "$FRAMES" --model "$MODEL" --device "$DEVICE" --max-batch "$BATCH" \
  --redis-url "$URL" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt" || log "bench failed"

# Frames without boxes: a YOLO-size person detector (random weights of yolo11m, bf16) in front of
# HMR2 on the same device. DETECTOR names an exported file; without it one is exported when
# ultralytics is importable (it needs no network: the architecture comes from the package).
DETECTOR=${DETECTOR:-}
if [ -z "$DETECTOR" ] && $PY -c 'import ultralytics' 2>/dev/null; then
  DETECTOR=/tmp/yolo11m-person-bf16.pt
  if [ ! -f "$DETECTOR" ]; then
    log "exporting a yolo11m-size detector (random weights, bf16) to $DETECTOR"
    $PY -m models.export_detector --arch yolo --config yolo11m.yaml --input-size 640 --dtype bf16 \
      --device "${DEVICE%%:*}" --out "$DETECTOR" 2>&1 | tee "$OUT/export-detector.log" || DETECTOR=
  fi
fi
if [ -n "$DETECTOR" ] && [ -f "$DETECTOR" ]; then
  log "bench without boxes: detector $DETECTOR + HMR2, one figure per frame"
  HMR2_DETECTOR__PATH="$DETECTOR" HMR2_DETECTOR__SCORE_THRESHOLD="${DETECTOR_THRESHOLD:-0.5}" \
    "$TOOL" bench --frames "$FRAMES" --model "$MODEL" --device "$DEVICE" --max-batch "$BATCH" \
    --people 1 --detect --redis-url "$URL" --json "$OUT/bench-detect.json" 2>&1 \
    | tee "$OUT/bench-detect.txt" || log "bench with the detector failed"
else
  log "no detector (set DETECTOR=FILE or install ultralytics): the no-boxes run is skipped"
fi

$PY scripts/gpu_report.py report "$OUT" > "$OUT/report.md"
log "report written to $OUT/report.md"
cat "$OUT/report.md"
