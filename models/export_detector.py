"""Export a person detector to a TorchScript file of contract ``person-detector/1`` (DESIGN §12).

    python -m models.export_detector --arch yolo (--weights FILE.pt | --config NAME.yaml)
        --input-size S --dtype fp32|fp16|bf16 --device cpu|cuda --out FILE
        [--class-id N] [--max-det 100] [--score-threshold T] [--iou T] [--score-floor 0.05] [--name NAME]
        [--seed N] [--no-check]
    python -m models.export_detector --arch rtdetr (--weights DIR | --config tiny)
        --input-size S --dtype fp32|fp16|bf16 --device cpu|cuda --out FILE
        [--class-id N] [--max-det 100] [--score-threshold 0.5] [--score-floor 0.05] [--name NAME]
        [--seed N] [--no-check]

``--arch yolo``: an Ultralytics YOLOv8 / YOLO11 detection model, from a local checkpoint
(``yolo11m.pt``; never downloaded) or built from one of the package's model definitions
(``yolo11n.yaml``) with random weights for tests and benchmarks. The export needs the
``ultralytics`` package; the file does not (plain ``torch.jit.load``, aten operators only).

The network and box decoding are traced at the one input size S (a multiple of 32); the wrapper
(uint8 input, score floor, NMS, padding to ``--max-det`` rows) is scripted by ``models.detector``.
``--score-threshold`` is the keep threshold the file recommends (``meta()["score_threshold"]``)
and ``--iou`` the NMS IoU it applies; both default per architecture (:data:`THRESHOLDS`, the
reasons in models/README.md, "Thresholds"). ``--dtype`` sets the network's weights and compute; the input is converted inside, and box
decoding, scores and NMS run in float32. Unless ``--no-check``, the file is reloaded in a fresh
interpreter with ultralytics and torchvision blocked from import and run once, and the decoded
boxes and scores are compared with the package's own float32 forward pass on two letterbox-like
random images.

Ultralytics code and weights are AGPL-3.0, and so is a file exported from them (models/README.md,
"Detectors"); ``meta()`` says so.

``--arch rtdetr``: RT-DETR from Hugging Face ``transformers`` (Apache-2.0 code and weights), from a
local ``save_pretrained`` / Hub snapshot folder (``PekingU/rtdetr_r50vd``; never downloaded) or
built from ``--config tiny`` with random weights. NMS-free: ``--iou`` does not apply, and
``meta()`` records ``--score-threshold`` (default 0.5) as the recommended threshold and
``"iou_threshold": null``. See ``models/rtdetr.py``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from . import rtdetr
from .detector import PersonDetector, export
from .hmr2 import DTYPES
from .yolo import ARCHS, calibration_images, load_yolo, person_class, trace_core


#: (recommended score threshold, NMS IoU) of each architecture when not given; others get
#: :data:`FALLBACK_THRESHOLDS`. YOLO: Ultralytics' own predict defaults (conf 0.25, IoU 0.7).
THRESHOLDS = {"yolo": (0.25, 0.7)}
FALLBACK_THRESHOLDS = (0.5, 0.45)


def log(msg: str) -> None:
    print(f"export_detector: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m models.export_detector",
                                 description="Export a person detector (contract person-detector/1) to TorchScript.")
    ap.add_argument("--arch", choices=ARCHS + rtdetr.ARCHS, required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, help="Ultralytics checkpoint, e.g. yolo11m.pt (a local file); "
                     "rtdetr: a local model folder, e.g. from `hf download PekingU/rtdetr_r50vd --local-dir DIR`")
    src.add_argument("--config", help="model definition, e.g. yolo11n.yaml; rtdetr: tiny, r50vd or a config.json: "
                     "random weights (tests, benchmarks)")
    ap.add_argument("--input-size", type=int, default=640, help="S of the S×S letterboxed input (multiple of 32)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="network weights and compute")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--class-id", type=int,
                    help="the person class (default: the class named 'person'; 0 with --config)")
    ap.add_argument("--max-det", type=int, default=100, help="K, rows of the output")
    ap.add_argument("--score-threshold", type=float,
                    help="keep threshold recommended in meta(), 0-1 (default per arch: yolo 0.25, rtdetr 0.5)")
    ap.add_argument("--iou", type=float, help="NMS IoU threshold (default per arch: yolo 0.7)")
    ap.add_argument("--score-floor", type=float, default=0.05, help="boxes scoring below never leave the file")
    ap.add_argument("--name", help="meta() name (default: the weights' or config's file stem)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (--config)")
    ap.add_argument("--no-check", action="store_true", help="skip the reload and package comparison")
    args = ap.parse_args(argv)
    if args.arch in rtdetr.ARCHS:
        rtdetr.check_args(ap, args)
        return args
    if args.weights is not None and not args.weights.is_file():
        ap.error(f"--weights: no such file: {args.weights} (weights are never downloaded; see models/README.md)")
    if args.input_size < 32 or args.input_size % 32:
        ap.error(f"--input-size {args.input_size}: must be a positive multiple of 32")
    if args.max_det < 1:
        ap.error("--max-det must be ≥ 1")
    score_default, iou_default = THRESHOLDS.get(args.arch, FALLBACK_THRESHOLDS)
    args.score_threshold = score_default if args.score_threshold is None else args.score_threshold
    args.iou = iou_default if args.iou is None else args.iou
    if not 0 < args.iou <= 1 or not 0 <= args.score_floor < 1:
        ap.error("--iou must be in (0, 1] and --score-floor in [0, 1)")
    if not args.score_floor <= args.score_threshold <= 1:
        ap.error(f"--score-threshold {args.score_threshold} must be in [--score-floor ({args.score_floor}), 1]")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")
    return args


def resolve_class(model: torch.nn.Module, args: argparse.Namespace) -> int:
    """The class whose score becomes the person score."""
    found = person_class(model)
    if args.class_id is not None:
        if found is not None and found != args.class_id:
            log(f"warning: --class-id {args.class_id}, but the model names class {found} 'person'")
        return args.class_id
    if found is not None:
        return found
    if args.config is not None:
        return 0  # a freshly built model has numbered classes; COCO's person is 0
    raise SystemExit(f"export_detector: the model has no class named 'person' "
                     f"(names: {dict(list(getattr(model, 'names', {}).items())[:8])}...); pass --class-id")


def build(args: argparse.Namespace):
    """(detector, the float32 Ultralytics model it came from, class id, name)."""
    log(f"loading {args.weights}" if args.weights else f"building {args.config} with random weights (seed {args.seed})")
    model = load_yolo(weights=args.weights, config=args.config, seed=args.seed)
    class_id = resolve_class(model, args)
    name = args.name or Path(str(args.weights or args.config)).stem
    dtype = DTYPES[args.dtype]
    log(f"tracing the network at {args.input_size}×{args.input_size}, {args.dtype}, {args.device}, "
        f"person = class {class_id}")
    core = trace_core(model, args.input_size, class_id, dtype, args.device)
    detector = PersonDetector(core, args.input_size, name, max_det=args.max_det, iou_threshold=args.iou,
                              score_floor=args.score_floor, dtype=dtype, score_threshold=args.score_threshold)
    meta = json.loads(detector.meta_json)
    meta.update({
        "arch": "ultralytics-yolo",
        "weights": args.weights.name if args.weights else f"random seed {args.seed} ({args.config})",
        "class_id": class_id,
        "params": sum(p.numel() for p in model.parameters()),
        "license": "AGPL-3.0 (Ultralytics YOLO code and weights)",
    })
    detector.meta_json = json.dumps(meta)
    return detector.to(args.device).eval(), model, class_id, name


def compare_with_package(loaded: torch.jit.ScriptModule, model: torch.nn.Module, class_id: int, size: int,
                         device: str) -> str:
    """Decoded boxes and person scores of the exported network (the reloaded file's core) vs
    Ultralytics' own float32 forward pass (``[B, 4+nc, A]``, xywh + class probabilities) on two
    letterbox-like images: max differences (bf16 and fp16 differ by their rounding)."""
    x = calibration_images(torch.Generator().manual_seed(1), 2, size)
    core = loaded.core
    with torch.no_grad():
        y = model(x)[0]
        boxes, scores = core(x.to(device).to(next(iter(core.parameters())).dtype))
    p = y[:, 4:]
    ref_scores = torch.where(p[:, class_id] >= p.max(1).values, p[:, class_id], torch.zeros(()))
    xy, wh = y[:, :2], y[:, 2:4]
    ref_boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1).transpose(1, 2)
    box_diff = (ref_boxes - boxes.float().cpu()).abs().amax(-1)
    score_diff = float((ref_scores - scores.float().cpu()).abs().max())
    return (f"vs the package in fp32: |Δbox| median {float(box_diff.median()):.3g} px, "
            f"max {float(box_diff.max()):.3g} px; max |Δscore| {score_diff:.3g}")


LOAD_WITHOUT_ULTRALYTICS = r"""
import json, sys
sys.modules["ultralytics"] = None  # any import of them fails
sys.modules["torchvision"] = None
import torch
m = torch.jit.load(sys.argv[1], map_location=sys.argv[2])
meta = json.loads(m.meta())
s = int(meta["input_size"])
x = torch.randint(0, 256, (2, s, s, 3), dtype=torch.uint8, device=sys.argv[2])
with torch.no_grad():
    out = m(x)
assert not any(k == "ultralytics" or k.startswith("ultralytics.") for k in sys.modules if sys.modules[k] is not None)
print(json.dumps({k: [list(v.shape), str(v.dtype)] for k, v in out.items()}))
"""


def check_standalone(file: Path, device: str) -> dict:
    """Load and run ``file`` in a fresh interpreter that cannot import ultralytics or torchvision
    (so no torchvision operator can hide in the graph); output shapes and dtypes."""
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_ULTRALYTICS, str(file), device],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{file} does not load and run without ultralytics and torchvision:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.arch in rtdetr.ARCHS:
        return rtdetr.main(args)
    start = time.monotonic()
    detector, model, class_id, name = build(args)
    params = sum(p.numel() for p in model.parameters())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    log("scripting, saving and reloading")
    loaded = export(detector, tmp)  # also runs batches of 1 and 2 through the reloaded file
    if not args.no_check:
        log("checking: reload without ultralytics, and the network against the package's forward pass")
        shapes = check_standalone(tmp, args.device)
        diff = compare_with_package(loaded, model, class_id, args.input_size, args.device)
        log(f"standalone outputs {shapes}; {diff}")
    os.replace(tmp, args.out)
    meta = json.loads(loaded.meta())
    print(
        f"exported {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {params:,} params, {name}, "
        f"{meta.get('contract')}, input {args.input_size}, {args.dtype}, {args.device}, "
        f"person class {class_id}, score threshold {meta.get('score_threshold')}, NMS IoU {meta.get('iou_threshold')}, "
        f"{time.monotonic() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
