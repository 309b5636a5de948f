"""What the NMS IoU threshold costs on overlapping people: recall and false positives at IoU 0.45
and 0.7 on frames of groups of the demo's figures standing close together.

    .venv/bin/python benches/detector_overlap.py [--frames 120] [--json OUT]

Each frame (640×480) shows a group of 2–4 figures of about the same height (45–80 % of the
frame, ±15 % for depth), each 14–40 % of a figure's height right of the previous one, drawn back
to front, so they overlap and partly hide each other (``models.figures.render_people``). Two
figures:

- geometry alone: the share of pairs of people in a group whose boxes overlap with IoU above
  0.45 and above 0.7. Greedy NMS at threshold t keeps only one of two detections whose IoU is
  above t, so even a perfect detector loses one of those people at that t;
- the committed tiny detector's weights with NMS at each IoU (same network, same candidates):
  people found at score ≥ 0.5 (IoU ≥ 0.5 with their box, each matched once) and detections that
  match nobody (duplicates and misses alike).

The tiny detector produces few duplicate boxes by construction (one candidate per heatmap peak),
so its false-positive column says little about a YOLO head, whose dense anchors give many; it is
the recall side that this measures.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.detector import PersonDetector, letterbox  # noqa: E402
from models.eval_detector import iou_matrix, match_frame  # noqa: E402
from models.figures import Pose, SplitMix64, render_people  # noqa: E402
from models.tiny_detector import INPUT_SIZE  # noqa: E402
from models.train_detector import core_from_file  # noqa: E402

W, H = 640, 480
IOUS = (0.45, 0.7)
THRESHOLD = 0.5


def groups(count: int, seed: int):
    """(letterboxed uint8 [count,S,S,3], r of each frame, boxes of each frame)."""
    rng = SplitMix64(seed)
    images, rs, boxes = [], [], []
    for i in range(count):
        n = 2 + rng.below(3)
        tall = H * rng.range(0.45, 0.8)
        x = rng.range(0.15 * W, 0.45 * W)
        poses = []
        for _ in range(n):
            t = tall * rng.range(0.85, 1.15)
            t = min(t, H * 0.95)
            poses.append(Pose(x, rng.range(t * 1.02, H), t, rng.range(0.0, 6.28)))
            x += tall * rng.range(0.14, 0.4)
        img, b = render_people(W, H, poses, seed=i)
        canvas, r = letterbox(img, INPUT_SIZE)
        images.append(canvas)
        rs.append(r)
        boxes.append(np.array(b, dtype=float).reshape(-1, 4))
    return torch.from_numpy(np.stack(images)), rs, boxes


def run(frames: int, seed: int, detector_file: Path) -> dict:
    images, rs, boxes = groups(frames, seed)
    pairs, over = 0, {t: 0 for t in IOUS}
    for b in boxes:
        iou = iou_matrix(b, b)
        upper = iou[np.triu_indices(len(b), 1)]
        pairs += len(upper)
        for t in IOUS:
            over[t] += int((upper > t).sum())
    people = sum(len(b) for b in boxes)
    core = core_from_file(detector_file)
    rows = []
    for t in IOUS:
        det = PersonDetector(core, INPUT_SIZE, "overlap", max_det=20, iou_threshold=t, score_floor=0.05,
                             score_threshold=THRESHOLD)
        tp = fp = 0
        with torch.no_grad():
            for start in range(0, frames, 16):
                out = det(images[start : start + 16])
                for k in range(out["scores"].shape[0]):
                    i = start + k
                    keep = out["scores"][k] >= THRESHOLD
                    d = (out["boxes"][k][keep] / rs[i]).numpy().astype(float)
                    d[:, 0::2] = d[:, 0::2].clip(0, W)
                    d[:, 1::2] = d[:, 1::2].clip(0, H)
                    gt = [([x1, y1, x2 - x1, y2 - y1], False) for x1, y1, x2, y2 in boxes[i]]
                    a, f, _ = match_frame(d, out["scores"][k][keep].numpy(), gt, 0.5)
                    tp, fp = tp + a, fp + f
        rows.append({"nms_iou": t, "found": tp, "recall": round(tp / people, 4), "false_positives": fp,
                     "pairs_above": over[t]})
    return {"frames": frames, "people": people, "pairs": pairs, "score_threshold": THRESHOLD, "rows": rows}


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="benches/detector_overlap.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--detector", type=Path, default=ROOT / "models" / "detector-tiny.pt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    r = run(args.frames, args.seed, args.detector)
    print(f"{r['frames']} frames, {r['people']} people in groups, {r['pairs']} pairs in a group")
    print("| NMS IoU | pairs of people with box IoU above it (a perfect detector loses one of each) "
          "| people found (score ≥ 0.5) | false positives |")
    print("|---|---|---|---|")
    for row in r["rows"]:
        print(f"| {row['nms_iou']} | {row['pairs_above']} of {r['pairs']} ({100 * row['pairs_above'] / r['pairs']:.1f} %) "
              f"| {row['found']} of {r['people']} ({100 * row['recall']:.1f} %) | {row['false_positives']} |")
    print(f"{time.monotonic() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
