"""The person-detector contract (``person-detector/1``, DESIGN.md §12) and its exporter.

A detector file is TorchScript: ``forward(images: uint8 [B,S,S,3] RGB) -> {"boxes": float32
[B,K,4] x1,y1,x2,y2 in pixels of the S×S input, "scores": float32 [B,K] person confidence 0..1}``,
rows sorted by score, non-maximum suppression applied, unused rows zero; ``meta()`` returns JSON
with ``"contract": "person-detector/1"``, ``"name"``, ``"input_size"``, ``"dtype"``, ``"max_det"``.
All post-processing is plain torch: the worker needs no torchvision operators.

- :func:`letterbox`: what the worker does to a frame before detection (reference for tests and
  training).
- :func:`nms`: greedy non-maximum suppression in plain, scriptable torch.
- :class:`PersonDetector`: wraps any ``core`` (float images in, candidate boxes and person scores
  out) into the contract.
- :func:`export`: scripts, saves, reloads and runs the file once.

Shared by ``models/tiny_detector.py`` (the small detector trained on the demo's synthetic frames)
and ``models/export_detector.py`` (real architectures).
"""

import json
import math
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

CONTRACT = "person-detector/1"

#: Grey of the letterbox padding (as YOLO's letterbox).
PAD_VALUE = 114


def letterbox_size(width: int, height: int, size: int) -> Tuple[int, int, float]:
    """``(new_width, new_height, r)`` of a ``width × height`` frame letterboxed to ``size``:
    r = size / max(W, H), sides round(W·r), round(H·r) (halves away from zero, as Rust's
    ``f64::round``), at least 1 pixel."""
    r = size / max(width, height)
    side = lambda v: min(size, max(1, int(math.floor(v * r + 0.5))))  # noqa: E731
    return side(width), side(height), r


def letterbox(img: np.ndarray, size: int) -> Tuple[np.ndarray, float]:
    """A frame (uint8 HxWx3 RGB) as the detector sees it: resized by r = size / max(W, H)
    (bilinear, PIL) to (round(W·r), round(H·r)) at the top-left corner of a size×size canvas
    of grey 114. Returns the canvas and r; a box maps back to the frame as x / r, y / r."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    nw, nh = letterbox_size(w, h, size)[:2]
    r = size / max(w, h)
    if (nw, nh) != (w, h):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[:nh, :nw] = img
    return out, r


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices (int64) of the boxes kept, highest score first.
    A box is dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold``
    (as ``torchvision.ops.nms``). ``boxes`` [N,4] x1,y1,x2,y2, ``scores`` [N]."""
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
    # One transfer, then the greedy pass on the host over an N×N boolean matrix.
    over = (iou > iou_threshold).cpu()
    keep = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        if bool(keep[i]):
            # (Not `&=`: TorchScript does not write an augmented assignment back to a slice.)
            keep[i + 1 :] = keep[i + 1 :] & ~over[i, i + 1 :]
    return order[keep.to(order.device)]


class PersonDetector(nn.Module):
    """The contract around a detection ``core``.

    ``core(x)``: float ``[B,3,S,S]`` RGB in 0..1 (of ``dtype``) -> ``(boxes [B,N,4] x1,y1,x2,y2
    in input pixels, scores [B,N] person confidence 0..1)``, any N. This module converts the
    uint8 images, clamps boxes to the input, keeps non-empty candidates with score ≥
    ``score_floor`` (at most ``pre_nms`` of them, best first), applies NMS per image, and returns
    the best ``max_det`` padded with zeros.
    """

    def __init__(
        self,
        core: nn.Module,
        input_size: int,
        name: str,
        max_det: int = 100,
        iou_threshold: float = 0.45,
        score_floor: float = 0.05,
        dtype: torch.dtype = torch.float32,
        pre_nms: int = 1000,
    ):
        super().__init__()
        self.core = core
        self.input_size = int(input_size)
        self.max_det = int(max_det)
        self.iou_threshold = float(iou_threshold)
        self.score_floor = float(score_floor)
        self.pre_nms = int(pre_nms)
        self.dtype = dtype
        self.meta_json = json.dumps(
            {
                "contract": CONTRACT,
                "name": name,
                "input_size": self.input_size,
                "dtype": str(dtype).replace("torch.", ""),
                "max_det": self.max_det,
                "iou_threshold": self.iou_threshold,
                "score_floor": self.score_floor,
                "classes": ["person"],
                "input": "uint8 [B,S,S,3] RGB, letterboxed: r = S / max(W, H), top-left, fill 114",
            }
        )

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        s = self.input_size
        if images.dim() != 4 or images.shape[1] != s or images.shape[2] != s or images.shape[3] != 3:
            raise RuntimeError(f"person detector: expected images [B,{s},{s},3], got {images.shape}")
        if images.dtype != torch.uint8:
            raise RuntimeError(f"person detector: expected uint8 images, got {images.dtype}")
        with torch.no_grad():
            x = images.permute(0, 3, 1, 2).to(self.dtype).div(255.0)
            boxes, scores = self.core(x)
            boxes = boxes.float().clamp(0.0, float(s))
            scores = scores.float()
            batch, k = images.shape[0], self.max_det
            out_boxes = torch.zeros(batch, k, 4, dtype=torch.float32, device=images.device)
            out_scores = torch.zeros(batch, k, dtype=torch.float32, device=images.device)
            for i in range(batch):
                sc, bx = scores[i], boxes[i]
                # Confident enough, and not empty once clamped to the input.
                sure = (sc >= self.score_floor) & (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
                sc, bx = sc[sure], bx[sure]
                if sc.shape[0] > self.pre_nms:
                    sc, top = sc.topk(self.pre_nms)
                    bx = bx[top]
                keep = nms(bx, sc, self.iou_threshold)[:k]
                n = keep.shape[0]
                out_boxes[i, :n] = bx[keep]
                out_scores[i, :n] = sc[keep]
        return {"boxes": out_boxes, "scores": out_scores}


def export(detector: PersonDetector, out: Path, trace_core: bool = False) -> torch.jit.ScriptModule:
    """Scripts ``detector`` (tracing its core first if ``trace_core``, for cores TorchScript
    cannot compile), saves it to ``out``, reloads the file and runs batches of 1 and 2 through
    it on the detector's device; raises if anything does not meet the contract."""
    detector = detector.eval()
    param = next(detector.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    s = detector.input_size
    if trace_core:
        example = torch.rand(2, 3, s, s, device=device).to(detector.dtype)
        with torch.no_grad():
            detector.core = torch.jit.trace(detector.core, example)
    scripted = torch.jit.script(detector)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(out))
    loaded = torch.jit.load(str(out), map_location=device)
    meta = json.loads(loaded.meta())
    if meta.get("contract") != CONTRACT or meta.get("input_size") != s:
        raise RuntimeError(f"{out}: bad meta {meta}")
    gen = torch.Generator().manual_seed(0)
    for batch in (2, 1):
        images = torch.randint(0, 256, (batch, s, s, 3), generator=gen, dtype=torch.uint8).to(device)
        with torch.no_grad():
            res = loaded(images)
        boxes, scores = res["boxes"], res["scores"]
        k = detector.max_det
        if boxes.shape != (batch, k, 4) or scores.shape != (batch, k):
            raise RuntimeError(f"{out}: outputs {boxes.shape} {scores.shape}, want [{batch},{k},4], [{batch},{k}]")
        if boxes.dtype != torch.float32 or scores.dtype != torch.float32:
            raise RuntimeError(f"{out}: outputs {boxes.dtype} {scores.dtype}, want float32")
    return loaded
