"""The person detector's post-processing, before and after batching, side by side.

    .venv/bin/python benches/detector_post.py [--device cpu|cuda] [--candidates 1000]
        [--batches 1,8] [--repeats 30] [--threads 1] [--json OUT]

What a detector file does after its network (``models.detector.postprocess``): clamp, score
floor, the best ``pre_nms``, greedy NMS, the best ``max_det`` rows padded with zeros. Two
implementations, both compiled with ``torch.jit.script`` as in an exported file, on the same
synthetic raw head output:

- ``legacy_postprocess`` (below, kept here only as the reference): the file's post-processing
  before it was batched: a loop over the images, and per image greedy NMS as a loop over the
  boxes on the host, after one device-to-host copy of the image's overlap matrix;
- ``models.detector.postprocess``: the whole batch at once in tensor operations (NMS as the
  fixed point of a batched matrix product, see ``models.detector.greedy_keep``).

The raw output imitates a detection head on a frame with people in it: per image a few people,
each with a cluster of jittered boxes around it (score falling with the jitter, 0.3–0.99), plus
scattered low-score boxes (0.05–0.3): every candidate sits above the 0.05 score floor, as on real
weights, so all ``--candidates`` of them reach NMS. Both implementations must give the same
rows (checked on every batch size; the run fails otherwise). Times are wall-clock per call,
median of ``--repeats`` after warm-up calls, the two implementations called in turn, with a CUDA
synchronisation before each clock read on ``--device cuda``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.detector import postprocess  # noqa: E402

SIZE = 640  # input side of the synthetic detector (YOLO's usual)
SCORE_FLOOR = 0.05
PRE_NMS = 1000
IOU = 0.7
MAX_DET = 100


def legacy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """The reference: greedy NMS of one image as it was, a loop over the boxes on the host."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)
    over = (iou > iou_threshold).cpu()
    keep = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        if bool(keep[i]):
            keep[i + 1 :] = keep[i + 1 :] & ~over[i, i + 1 :]
    return order[keep.to(order.device)]


def legacy_postprocess(
    boxes: torch.Tensor, scores: torch.Tensor, size: int, score_floor: float, pre_nms: int, iou_threshold: float,
    max_det: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference: the file's post-processing as it was, one image at a time."""
    boxes = boxes.float().clamp(0.0, float(size))
    scores = scores.float()
    batch = scores.shape[0]
    out_boxes = torch.zeros(batch, max_det, 4, dtype=torch.float32, device=scores.device)
    out_scores = torch.zeros(batch, max_det, dtype=torch.float32, device=scores.device)
    for i in range(batch):
        sc, bx = scores[i], boxes[i]
        sure = (sc >= score_floor) & (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        sc, bx = sc[sure], bx[sure]
        if sc.shape[0] > pre_nms:
            sc, top = sc.topk(pre_nms)
            bx = bx[top]
        keep = legacy_nms(bx, sc, iou_threshold)[:max_det]
        n = keep.shape[0]
        out_boxes[i, :n] = bx[keep]
        out_scores[i, :n] = sc[keep]
    return out_boxes, out_scores


def synthetic_head_output(batch: int, candidates: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw candidates of ``batch`` images, ``candidates`` each: boxes ``[B,N,4]`` in the
    SIZE×SIZE input, scores ``[B,N]`` in 0.05..0.99, in a shuffled (anchor-like) order.

    Per image 2–6 people (standing boxes 60–420 px tall, 0.35–0.5 as wide, some overlapping);
    70 % of the candidates are jittered copies of a person's box (centre moved by up to 15 % of
    its side, sides scaled by 0.8–1.25) scoring 0.99 − 2·jitter (at least 0.3), the rest
    random boxes scoring 0.05–0.3."""
    g = torch.Generator().manual_seed(seed)
    all_boxes, all_scores = [], []
    for _ in range(batch):
        people = int(torch.randint(2, 7, (1,), generator=g))
        h = 60 + 360 * torch.rand(people, generator=g)
        w = h * (0.35 + 0.15 * torch.rand(people, generator=g))
        cx = w / 2 + (SIZE - w) * torch.rand(people, generator=g)
        cy = h / 2 + (SIZE - h) * torch.rand(people, generator=g)
        n_near = int(candidates * 0.7)
        who = torch.randint(0, people, (n_near,), generator=g)
        shift = (torch.rand(n_near, 2, generator=g) * 2 - 1) * 0.15
        scale = 0.8 + 0.45 * torch.rand(n_near, 2, generator=g)
        jitter = shift.abs().amax(1) + (scale - 1).abs().amax(1) / 2
        bw, bh = w[who] * scale[:, 0], h[who] * scale[:, 1]
        bx = cx[who] + shift[:, 0] * w[who]
        by = cy[who] + shift[:, 1] * h[who]
        near = torch.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], 1)
        near_scores = (0.99 - 2 * jitter).clamp(0.3, 0.99)
        n_far = candidates - n_near
        fw = 10 + 200 * torch.rand(n_far, generator=g)
        fh = 10 + 300 * torch.rand(n_far, generator=g)
        fx = torch.rand(n_far, generator=g) * SIZE
        fy = torch.rand(n_far, generator=g) * SIZE
        far = torch.stack([fx - fw / 2, fy - fh / 2, fx + fw / 2, fy + fh / 2], 1)
        far_scores = 0.05 + 0.25 * torch.rand(n_far, generator=g)
        perm = torch.randperm(candidates, generator=g)
        all_boxes.append(torch.cat([near, far])[perm])
        all_scores.append(torch.cat([near_scores, far_scores])[perm])
    return torch.stack(all_boxes), torch.stack(all_scores)


def timed_pair(first, second, args, repeats: int, device: torch.device, warmup: int = 3) -> Tuple[float, float]:
    """Median wall times, in milliseconds, of ``first(*args)`` and ``second(*args)``, called in
    turn (so that a change in the machine's load hits both alike)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: Tuple[List[float], List[float]] = ([], [])
    with torch.no_grad():
        for _ in range(warmup):
            first(*args)
            second(*args)
        sync()
        for _ in range(repeats):
            for fn, out in ((first, times[0]), (second, times[1])):
                start = time.perf_counter()
                fn(*args)
                sync()
                out.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(device: torch.device, candidates: int, batches: List[int], repeats: int, seed: int) -> Dict:
    legacy = torch.jit.script(legacy_postprocess)
    batched = torch.jit.script(postprocess)
    rows = []
    for batch in batches:
        boxes, scores = synthetic_head_output(batch, candidates, seed)
        boxes, scores = boxes.to(device), scores.to(device)
        args = (boxes, scores, SIZE, SCORE_FLOOR, PRE_NMS, IOU, MAX_DET)
        with torch.no_grad():
            old_boxes, old_scores = legacy(*args)
            new_boxes, new_scores = batched(*args)
        if not (torch.equal(old_boxes, new_boxes) and torch.equal(old_scores, new_scores)):
            raise SystemExit(f"detector_post: batch {batch}: the batched post-processing differs from the reference")
        kept = int((new_scores > 0).sum())
        old, new = timed_pair(legacy, batched, args, repeats, device)
        rows.append({"batch": batch, "candidates_per_image": candidates, "kept_rows": kept,
                     "legacy_ms": round(old, 3), "batched_ms": round(new, 3),
                     "legacy_ms_per_image": round(old / batch, 3), "batched_ms_per_image": round(new / batch, 3),
                     "speedup": round(old / new, 2)})
    return {
        "benchmark": "detector post-processing (clamp, score floor, pre-NMS top-k, greedy NMS, max_det rows)",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": {"input_size": SIZE, "score_floor": SCORE_FLOOR, "pre_nms": PRE_NMS, "iou_threshold": IOU,
                     "max_det": MAX_DET, "repeats": repeats, "seed": seed},
        "identical_outputs": True,
        "rows": rows,
    }


def table(report: Dict) -> str:
    lines = [
        f"detector post-processing on {report['device']} ({report['device_name']}, {report['threads']} threads, "
        f"torch {report['torch']}), {report['rows'][0]['candidates_per_image']} candidates per image, "
        f"median of {report['settings']['repeats']}",
        "| batch | legacy (per image loop) | batched | per image: legacy / batched | speedup | kept rows |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['batch']} | {r['legacy_ms']:.2f} ms | {r['batched_ms']:.2f} ms | "
                     f"{r['legacy_ms_per_image']:.2f} / {r['batched_ms_per_image']:.2f} ms | "
                     f"{r['speedup']:.2f}× | {r['kept_rows']} |")
    lines.append("outputs of the two implementations identical on every batch")
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benches/detector_post.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--candidates", type=int, default=1000, help="raw candidates per image (all above the floor)")
    ap.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per implementation and batch size")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "1")),
                    help="torch CPU threads (default 1, or BENCH_THREADS): one thread keeps the figures steady on a shared machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batches {args.batches!r}: expected numbers like 1,8")
    if not args.batches or min(args.batches) < 1 or args.candidates < 1 or args.repeats < 1:
        ap.error("--batches, --candidates and --repeats must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(torch.device(args.device), args.candidates, args.batches, args.repeats, args.seed)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
