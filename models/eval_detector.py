"""How well a person-detector file finds the people of a set of annotated frames.

    python -m models.eval_detector --detector FILE --coco ANNOTATIONS.json --images DIR
        [--score-threshold T] [--match-iou 0.5] [--min-box-px 0] [--limit N] [--batch 16]
        [--device auto|cpu|cuda|cuda:N] [--threads N] [--workers 2] [--json OUT]

The frames are those the COCO-format annotations file lists (``images[].file_name``, relative
to ``--images``), their people the annotations of the category named "person". Each frame goes
through the detector as it does in the worker (DESIGN.md §12): letterboxed with
:func:`models.detector.letterbox`, boxes mapped back as x / r, y / r and clamped to the frame.

Reported:

- at the keep threshold (``--score-threshold``, by default the file's recommended
  ``meta()["score_threshold"]``): person recall and precision, a detection matching a person
  when their IoU is at least ``--match-iou`` (0.5; each person matched once, best scores first;
  a detection inside a region marked ``iscrowd`` is not counted), the share of frames with
  people in which at least one was found, and the share of frames without people in which the
  detector still found someone;
- over all the file's detections (every score above its floor): COCO AP@[.5:.95] and AP50 of
  the person category, computed by ``pycocotools``' COCOeval.

Progress goes to stderr on long runs; the summary to stdout, and with ``--json`` to a file.
docs/detection.md says how to make an annotations file for one's own frames.
"""

import argparse
import contextlib
import io
import json
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .detector import CONTRACT, letterbox

PERSON = "person"
#: Without a recommendation in the file: the worker's default ``detector.score_threshold``.
DEFAULT_THRESHOLD = 0.5
PROGRESS_EVERY_S = 10.0


class EvalError(Exception):
    """A problem with the inputs, said in one line for the user."""


def log(msg: str) -> None:
    print(f"eval_detector: {msg}", file=sys.stderr, flush=True)


@dataclass
class Annotations:
    """The frames and person boxes of a COCO file."""

    path: Path
    data: dict  # the file's JSON, with defaults filled in for COCOeval
    person_id: int
    images: List[dict]  # the frames to evaluate, in file order
    people: Dict[int, List[Tuple[List[float], bool]]] = field(default_factory=dict)  # image id -> (xywh, crowd)


def load_annotations(path: Path, limit: Optional[int] = None) -> Annotations:
    """Reads and checks a COCO-format detection file: ``images`` (``id``, ``file_name``),
    ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h]) and ``categories``
    with one named "person". Fills in what COCOeval needs and exports may leave out (``id``,
    ``area``, ``iscrowd``)."""
    if not path.is_file():
        raise EvalError(f"no such annotations file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{path} is not a UTF-8 text file: {e}") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path} is not a COCO annotations file: the top level is not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvalError(f"{path} is not a COCO annotations file: no {key!r} list")
    persons = [c for c in data["categories"] if isinstance(c, dict) and str(c.get("name", "")).strip().lower() == PERSON]
    if not persons:
        names = ", ".join(repr(c.get("name")) for c in data["categories"][:12] if isinstance(c, dict)) or "none"
        raise EvalError(f"{path} has no category named 'person' (its categories: {names})")
    if len(persons) > 1:
        raise EvalError(f"{path} has {len(persons)} categories named 'person' (ids {[c.get('id') for c in persons]}): "
                        "keep one")
    person_id = persons[0].get("id")
    if not isinstance(person_id, int):
        raise EvalError(f"{path}: the 'person' category has no integer id")
    images = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise EvalError(f"{path}: images[{i}] needs an integer 'id' and a 'file_name'")
        images.append(img)
    ids = [img["id"] for img in images]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{path}: image ids repeat")
    if not images:
        raise EvalError(f"{path} lists no images")
    if limit is not None:
        images = images[:limit]
    wanted = {img["id"] for img in images}
    known = set(ids)
    people: Dict[int, List[Tuple[List[float], bool]]] = {img["id"]: [] for img in images}
    next_id = 1 + max((a.get("id", 0) for a in data["annotations"] if isinstance(a, dict) and isinstance(a.get("id"), int)),
                      default=0)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise EvalError(f"{path}: annotations[{i}] is not an object")
        bbox = ann.get("bbox")
        if ann.get("image_id") not in known:
            raise EvalError(f"{path}: annotations[{i}] refers to image {ann.get('image_id')!r}, which images does not list")
        if ann.get("category_id") != person_id:
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise EvalError(f"{path}: annotations[{i}] has no bbox [x, y, width, height]")
        if not isinstance(ann.get("id"), int):
            ann["id"], next_id = next_id, next_id + 1
        ann.setdefault("area", float(bbox[2] * bbox[3]))
        ann.setdefault("iscrowd", 0)
        if ann["image_id"] in wanted:
            people[ann["image_id"]].append((list(map(float, bbox)), bool(ann["iscrowd"])))
    return Annotations(path, data, person_id, images, people)


def load_detector(path: Path, device: torch.device) -> Tuple[torch.jit.ScriptModule, dict]:
    """The detector file and its meta(), checked against the contract."""
    if not path.is_file():
        raise EvalError(f"no such detector file: {path} (python -m models.export_detector makes one)")
    try:
        detector = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch raises RuntimeError or ValueError, with long messages
        raise EvalError(f"{path} is not a TorchScript file torch can load: {str(e).splitlines()[0]}") from None
    if not hasattr(detector, "meta"):
        raise EvalError(f"{path} has no meta(): not a {CONTRACT} file")
    try:
        meta = json.loads(detector.meta())
    except json.JSONDecodeError:
        raise EvalError(f"{path}: meta() is not JSON") from None
    if meta.get("contract") != CONTRACT or not isinstance(meta.get("input_size"), int):
        raise EvalError(f"{path}: meta() names contract {meta.get('contract')!r} (input_size "
                        f"{meta.get('input_size')!r}); expected {CONTRACT!r} with an input_size")
    return detector.eval(), meta


def load_frame(path: Path, size: int) -> Tuple[np.ndarray, float, int, int]:
    """A frame letterboxed as the worker does: (canvas, r, width, height)."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise EvalError(f"{path} cannot be read as an image: {e}") from None
    canvas, r = letterbox(rgb, size)
    return canvas, r, rgb.shape[1], rgb.shape[0]


def to_frame(boxes: np.ndarray, r: float, width: int, height: int) -> np.ndarray:
    """Boxes x1,y1,x2,y2 of the letterboxed input mapped back to the frame: / r, clamped."""
    out = boxes / r
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a [N,4] against b [M,4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(min=0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]).clip(min=0) * (x[:, 3] - x[:, 1]).clip(min=0)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_frame(dets: np.ndarray, scores: np.ndarray, people: List[Tuple[List[float], bool]],
                match_iou: float) -> Tuple[int, int, int]:
    """(true positives, false positives, people) of one frame's kept detections: best score
    first, each detection takes the unmatched person it overlaps most (IoU ≥ ``match_iou``); one
    that matches nobody but lies inside a crowd region (at least ``match_iou`` of its area, as
    COCO counts crowds) is neither."""
    gt = np.array([[x, y, x + w, y + h] for (x, y, w, h), crowd in people if not crowd]).reshape(-1, 4)
    crowd = np.array([[x, y, x + w, y + h] for (x, y, w, h), c in people if c]).reshape(-1, 4)
    order = np.argsort(-scores, kind="stable")
    iou = iou_matrix(dets[order], gt) if len(gt) else np.zeros((len(order), 0))
    free = np.ones(len(gt), dtype=bool)
    tp = fp = 0
    for k in range(len(order)):
        cand = np.where(free, iou[k], -1.0)
        j = int(cand.argmax()) if len(gt) else -1
        if j >= 0 and cand[j] >= match_iou:
            free[j] = False
            tp += 1
            continue
        if len(crowd):
            d = dets[order[k]]
            lt = np.maximum(d[:2], crowd[:, :2])
            rb = np.minimum(d[2:], crowd[:, 2:])
            inside = (rb - lt).clip(min=0).prod(1) / max((d[2] - d[0]) * (d[3] - d[1]), 1e-9)
            if (inside >= match_iou).any():
                continue
        fp += 1
    return tp, fp, len(gt)


def coco_ap(ann: Annotations, detections: List[dict]) -> Tuple[Optional[float], Optional[float]]:
    """(AP@[.5:.95], AP50) of the person category by pycocotools' COCOeval over the evaluated
    frames; (None, None) without annotated people; (0, 0) without detections."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise EvalError("pycocotools is not installed (it is in models/requirements.txt: pip install "
                        "-r models/requirements.txt)") from None
    if not any(not crowd for people in ann.people.values() for _, crowd in people):
        return None, None
    if not detections:
        return 0.0, 0.0
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        gt = COCO()
        gt.dataset = ann.data
        gt.createIndex()
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = [ann.person_id]
        ev.params.imgIds = [img["id"] for img in ann.images]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def evaluate(detector, meta: dict, ann: Annotations, images_dir: Path, threshold: float, match_iou: float = 0.5,
             min_box_px: float = 0.0, batch: int = 16, device: torch.device = torch.device("cpu"),
             workers: int = 2, progress: bool = True) -> dict:
    """Runs the detector over the annotated frames and returns the figures (see the module doc)."""
    size = int(meta["input_size"])
    missing = [img["file_name"] for img in ann.images if not (images_dir / img["file_name"]).is_file()]
    if missing:
        raise EvalError(f"{len(missing)} of the {len(ann.images)} frames {ann.path.name} lists are not under {images_dir} "
                        f"(first: {', '.join(missing[:3])})")
    detections: List[dict] = []
    tp = fp = people = crowd = 0
    frames_people = frames_people_found = frames_empty = frames_empty_alarm = frames_detected = 0
    size_mismatch = 0
    start = last = time.monotonic()
    total = len(ann.images)
    paths = [images_dir / img["file_name"] for img in ann.images]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # Decoding runs at most two batches ahead of the detector (bounded memory).
        pending: Deque[Future] = deque()
        submitted = 0
        done = 0
        while done < total:
            while submitted < min(total, done + 2 * batch):
                pending.append(pool.submit(load_frame, paths[submitted], size))
                submitted += 1
            chunk = ann.images[done : done + batch]
            frames = [pending.popleft().result() for _ in chunk]
            x = torch.from_numpy(np.stack([f[0] for f in frames])).to(device)
            with torch.no_grad():
                out = detector(x)
            all_boxes = out["boxes"].float().cpu().numpy()
            all_scores = out["scores"].float().cpu().numpy()
            for k, (img, (_, r, w, h)) in enumerate(zip(chunk, frames)):
                if (img.get("width"), img.get("height")) not in ((w, h), (None, None)):
                    size_mismatch += 1
                used = all_scores[k] > 0
                boxes = to_frame(all_boxes[k][used], r, w, h)
                scores = all_scores[k][used]
                sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                ok = sides >= max(min_box_px, 1e-6)
                boxes, scores = boxes[ok], scores[ok]
                for b, s in zip(boxes.tolist(), scores.tolist()):
                    detections.append({"image_id": img["id"], "category_id": ann.person_id,
                                       "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
                kept = scores >= threshold
                t, f, n = match_frame(boxes[kept], scores[kept], ann.people[img["id"]], match_iou)
                tp, fp, people = tp + t, fp + f, people + n
                crowd += sum(1 for _, c in ann.people[img["id"]] if c)
                frames_detected += bool(kept.any())
                if n:
                    frames_people += 1
                    frames_people_found += t > 0
                else:
                    frames_empty += 1
                    frames_empty_alarm += f > 0
            done += len(chunk)
            now = time.monotonic()
            if progress and (now - last >= PROGRESS_EVERY_S or done == total) and now - start >= PROGRESS_EVERY_S:
                rate = done / (now - start)
                left = (total - done) / rate if rate > 0 else 0
                log(f"{done:,}/{total:,} frames ({100 * done / total:.1f} %), {rate:.1f} frames/s, "
                    f"about {left / 60:.0f} min {left % 60:.0f} s left")
                last = now
    seconds = time.monotonic() - start
    if size_mismatch:
        log(f"warning: {size_mismatch} frames differ in size from the width/height the annotations give "
            "(boxes are compared in the pixels of the image files)")
    ap, ap50 = coco_ap(ann, detections)

    def ratio(a: int, b: int) -> Optional[float]:
        return a / b if b else None

    return {
        "detector": {"name": meta.get("name"), "input_size": size, "score_threshold_meta": meta.get("score_threshold"),
                     "iou_threshold": meta.get("iou_threshold"), "score_floor": meta.get("score_floor")},
        "annotations": str(ann.path),
        "frames": total,
        "frames_with_people": frames_people,
        "people": people,
        "crowd_regions": crowd,
        "score_threshold": threshold,
        "match_iou": match_iou,
        "min_box_px": min_box_px,
        "true_positives": tp,
        "false_positives": fp,
        "detections_kept": tp + fp,
        "recall": ratio(tp, people),
        "precision": ratio(tp, tp + fp),
        "frames_with_person_found": ratio(frames_people_found, frames_people),
        "frames_with_detection": ratio(frames_detected, total),
        "empty_frames_with_detection": ratio(frames_empty_alarm, frames_empty),
        "ap": ap,
        "ap50": ap50,
        "detections_all_scores": len(detections),
        "seconds": round(seconds, 2),
        "frames_per_s": round(total / seconds, 2) if seconds > 0 else None,
    }


def summary(m: dict, threshold_source: str) -> str:
    def f(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    d = m["detector"]
    return "\n".join([
        f"detector   {d['name']} (input {d['input_size']}, NMS IoU {d['iou_threshold']}, score floor {d['score_floor']})",
        f"frames     {m['frames']} ({m['frames_with_people']} with people), {m['people']} people annotated"
        + (f" (+ {m['crowd_regions']} crowd regions)" if m["crowd_regions"] else ""),
        f"at score ≥ {m['score_threshold']} ({threshold_source}), a match at IoU ≥ {m['match_iou']}:",
        f"  recall                         {f(m['recall'])} ({m['true_positives']} / {m['people']} people)",
        f"  precision                      {f(m['precision'])} ({m['true_positives']} / {m['detections_kept']} detections)",
        f"  frames with a person found     {f(m['frames_with_person_found'])} (of the {m['frames_with_people']} with people)",
        f"  empty frames with a detection  {f(m['empty_frames_with_detection'])} "
        f"(of the {m['frames'] - m['frames_with_people']} without people)",
        f"COCO AP, person, every detection the file returns ({m['detections_all_scores']}):",
        f"  AP@[.5:.95] {f(m['ap'])}   AP50 {f(m['ap50'])}",
        f"{m['seconds']} s, {m['frames_per_s']} frames/s",
    ])


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.eval_detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", type=Path, required=True, help="a person-detector/1 file")
    ap.add_argument("--coco", type=Path, required=True, help="COCO-format annotations with a 'person' category")
    ap.add_argument("--images", type=Path, required=True, help="folder the annotations' file_name values are under")
    ap.add_argument("--score-threshold", type=float,
                    help="keep threshold for recall and precision (default: the file's meta() score_threshold)")
    ap.add_argument("--match-iou", type=float, default=0.5, help="IoU at which a detection matches a person")
    ap.add_argument("--min-box-px", type=float, default=0.0,
                    help="drop detections narrower or shorter than this in frame pixels (the worker's min_box_px is 16)")
    ap.add_argument("--limit", type=int, help="only the first N frames of the file")
    ap.add_argument("--batch", type=int, default=16, help="frames per detector call")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=2, help="threads decoding and letterboxing frames")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.score_threshold is not None and not 0 <= args.score_threshold <= 1:
        ap.error("--score-threshold must be between 0 and 1")
    if not 0 < args.match_iou <= 1:
        ap.error("--match-iou must be in (0, 1]")
    if args.batch < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--batch and --limit must be at least 1")
    if not args.images.is_dir():
        ap.error(f"--images: no such folder: {args.images}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        ann = load_annotations(args.coco, args.limit)
        detector, meta = load_detector(args.detector, device)
        if args.score_threshold is not None:
            threshold, source = args.score_threshold, "--score-threshold"
        elif isinstance(meta.get("score_threshold"), (int, float)):
            threshold, source = float(meta["score_threshold"]), "the file's recommended threshold"
        else:
            threshold, source = DEFAULT_THRESHOLD, "the worker's default: the file recommends none"
        log(f"{args.detector.name} on {len(ann.images)} frames of {args.coco.name}, {device}")
        m = evaluate(detector, meta, ann, args.images, threshold, args.match_iou, args.min_box_px, args.batch, device,
                     args.workers)
    except EvalError as e:
        print(f"eval_detector: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    m["detector"]["file"] = str(args.detector)
    m["score_threshold_source"] = source
    print(summary(m, source))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(m, indent=2) + "\n")
    return m


if __name__ == "__main__":
    main()
