"""The person-detector contract (``person-detector/1``, DESIGN.md §12) and its exporter.

A detector file is TorchScript: ``forward(images: uint8 [B,S,S,3] RGB) -> {"boxes": float32
[B,K,4] x1,y1,x2,y2 in pixels of the S×S input, "scores": float32 [B,K] person confidence 0..1}``,
rows sorted by score, non-maximum suppression applied, unused rows zero; ``meta()`` returns JSON
with ``"contract": "person-detector/1"``, ``"name"``, ``"input_size"``, ``"dtype"``, ``"max_det"``,
``"score_threshold"`` (the keep threshold recommended for the weights) and ``"iou_threshold"``
(the NMS IoU the file applies). All post-processing is plain torch: the worker needs no
torchvision operators.

- :func:`letterbox`: what the worker does to a frame before detection (reference for tests and
  training).
- :func:`postprocess`: score floor, greedy NMS and padding for a whole batch at once, in
  batched, scriptable tensor operations (:func:`batched_nms`; :func:`nms` for one image).
- :class:`PersonDetector`: wraps any ``core`` (float images in, candidate boxes and person scores
  out) into the contract.
- :func:`export`: scripts, saves, reloads and runs the file once.

Shared by ``models/tiny_detector.py`` (the small detector trained on the demo's synthetic frames)
and ``models/export_detector.py`` (real architectures).
"""

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
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
    from PIL import Image  # here: the post-processing needs only torch (GPU hosts may lack PIL)

    h, w = img.shape[:2]
    nw, nh = letterbox_size(w, h, size)[:2]
    r = size / max(w, h)
    if (nw, nh) != (w, h):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[:nh, :nw] = img
    return out, r


#: Largest number of elements of one ``[images, P, P]`` pairwise tensor that NMS builds at once
#: (64 MiB in float32; building the IoU holds up to four of them, 256 MiB): a batch whose P
#: candidates per image would need more is processed in slices of images (1000 candidates: 16
#: images a slice; 300: 186).
NMS_CHUNK_ELEMENTS = 1 << 24


def f32_threshold(threshold: float) -> float:
    """The float32 number T for which ``iou > T`` in float32 holds exactly when ``iou > threshold``
    in double precision, for every float32 ``iou``: ``threshold`` rounded to float32, one step
    lower when rounding went up. (``torchvision.ops.nms`` compares its float IoU with a double
    threshold; a float32 tensor compared with a Python float compares with the float rounded to
    float32, which differs when the IoU equals that rounded value, e.g. IoU 3/10 against 0.3.)"""
    t = torch.tensor(threshold, dtype=torch.float32)
    if float(t) > threshold:
        t = torch.nextafter(t, torch.tensor(-1.0, dtype=torch.float32))
    return float(t)


#: On a CPU, the suppression matrix of a batch bigger than this many elements is built in bands
#: of rows (at least 32 rows a band) whose intermediates fit the cache: 2.5× faster than one pass
#: over 8 images of 1000 candidates on a 2-core Xeon. On a GPU it is built in one pass.
CPU_BAND_ELEMENTS = 1 << 18


def pairwise_iou(boxes: torch.Tensor, start: int = 0, end: int = -1) -> torch.Tensor:
    """IoU of boxes ``start..end`` (default: all) of each image with every box of that image:
    ``boxes`` float32 ``[B,N,4]`` x1,y1,x2,y2 -> ``[B,end−start,N]``. The same float32
    arithmetic as ``torchvision.ops.nms``: area (x2−x1)·(y2−y1), intersection max(0, ·) per side,
    IoU = inter / (area_i + area_j − inter)."""
    if end < 0:
        end = boxes.shape[1]
    # One contiguous row per coordinate: the broadcasts below then read memory in order
    # (2.5× faster on a CPU than strided views of [B,N,4]).
    c = boxes.permute(2, 0, 1).contiguous()
    x1, y1, x2, y2 = c[0], c[1], c[2], c[3]
    area = (x2 - x1) * (y2 - y1)
    w = torch.minimum(x2[:, start:end, None], x2[:, None, :]).sub_(
        torch.maximum(x1[:, start:end, None], x1[:, None, :])).clamp_(min=0.0)
    h = torch.minimum(y2[:, start:end, None], y2[:, None, :]).sub_(
        torch.maximum(y1[:, start:end, None], y1[:, None, :])).clamp_(min=0.0)
    inter = w.mul_(h)
    union = (area[:, start:end, None] + area[:, None, :]).sub_(inter)
    return inter.div_(union)


def suppression_matrix(boxes: torch.Tensor, iou_threshold: float, band_elements: int = CPU_BAND_ELEMENTS) -> torch.Tensor:
    """``over`` float32 ``[B,P,P]``: 1.0 where row i would suppress row j (i before j, so i
    scores higher, and IoU above ``iou_threshold``), else 0.0; ``boxes`` ``[B,P,4]`` sorted by
    score in every image. On a CPU built in bands of rows (:data:`CPU_BAND_ELEMENTS`)."""
    b, p = boxes.shape[0], boxes.shape[1]
    thr = f32_threshold(iou_threshold)
    if boxes.device.type != "cpu" or b * p * p <= band_elements:
        return pairwise_iou(boxes).gt_(thr).triu_(1)
    rows = max(32, band_elements // max(1, b * p))
    over = torch.empty(b, p, p, dtype=torch.float32, device=boxes.device)
    for start in range(0, p, rows):
        end = min(p, start + rows)
        over[:, start:end] = pairwise_iou(boxes, start, end).gt_(thr)
    return over.triu_(1)


def greedy_keep(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of each image at once: ``boxes`` ``[B,P,4]`` sorted by score, highest first,
    in every image; ``valid`` ``[B,P]`` bool, the rows that take part (a row that does not never
    suppresses another). Returns ``keep`` ``[B,P]`` bool: row j is kept when it is valid and no
    kept row i < j has IoU > ``iou_threshold`` with it, which is exactly greedy NMS.

    Computed as a fixed point, not box by box: with S[i,j] = (i < j and IoU > threshold),
    keep ← valid ∧ ¬(∃ i: keep[i] ∧ S[i,j]), starting from all valid (the first step is "fast
    NMS", which also drops boxes whose suppressor is itself suppressed). Row j depends only on
    the rows before it, so after t steps the first t rows are final, and the one fixed point is
    greedy NMS: the loop stops at the first step that changes nothing, at most P steps, in
    practice a few (one more than the longest chain of boxes, in score order, each overlapping
    the next above the threshold). Each step is one batched matrix product of 0/1 float32
    values: exact (also with TF32 matmuls on a GPU), since a sum of such terms is above 0 exactly
    when one of them is 1."""
    p = valid.shape[1]
    over = suppression_matrix(boxes, iou_threshold)
    keep = valid
    for _ in range(p):
        suppressed = torch.bmm(keep.to(torch.float32).unsqueeze(1), over).squeeze(1) > 0.0
        step = valid & ~suppressed
        if torch.equal(step, keep):
            break
        keep = step
    return keep


def batched_nms(
    boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float, chunk_elements: int = NMS_CHUNK_ELEMENTS
) -> torch.Tensor:
    """:func:`greedy_keep` over a batch, in slices of images small enough that one ``[n,P,P]``
    tensor holds at most ``chunk_elements`` elements (one image a slice at least)."""
    b, p = valid.shape[0], valid.shape[1]
    per = max(1, chunk_elements // max(1, p * p))
    if per >= b:
        return greedy_keep(boxes, valid, iou_threshold)
    parts: List[torch.Tensor] = []
    for start in range(0, b, per):
        parts.append(greedy_keep(boxes[start : start + per], valid[start : start + per], iou_threshold))
    return torch.cat(parts)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of one image: indices (int64) of the boxes kept, highest
    score first, ties in index order. A box is dropped when its IoU with a kept, higher-scoring
    box is above ``iou_threshold``: the same kept set as ``torchvision.ops.nms`` (which also
    sorts stably). ``boxes`` [N,4] x1,y1,x2,y2, ``scores`` [N]. :func:`postprocess` does the
    same for a whole batch at once."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True)[1]
    valid = torch.ones(1, n, dtype=torch.bool, device=boxes.device)
    keep = batched_nms(boxes[order].float().unsqueeze(0), valid, iou_threshold)[0]
    return order[keep]


def postprocess(
    boxes: torch.Tensor, scores: torch.Tensor, size: int, score_floor: float, pre_nms: int, iou_threshold: float,
    max_det: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The contract's output from a core's raw candidates, for the whole batch at once, on the
    candidates' device: ``boxes`` ``[B,N,4]`` (input pixels), ``scores`` ``[B,N]`` ->
    ``(boxes float32 [B,max_det,4], scores float32 [B,max_det])``.

    Boxes are clamped to the ``size``×``size`` input; candidates with score ≥ ``score_floor``
    that are not empty once clamped take part, the best ``pre_nms`` of them per image (ties in
    candidate order); greedy NMS at ``iou_threshold`` per image (:func:`batched_nms`); the kept
    ones fill the first rows, highest score first, the rest is zero. No loop over images or
    boxes; one host synchronisation per batch (the largest candidate count, which sizes the
    pairwise matrices) and one per NMS step."""
    boxes = boxes.float().clamp(0.0, float(size))
    scores = scores.float()
    b, n = scores.shape[0], scores.shape[1]
    out_boxes = torch.zeros(b, max_det, 4, dtype=torch.float32, device=scores.device)
    out_scores = torch.zeros(b, max_det, dtype=torch.float32, device=scores.device)
    if b == 0 or n == 0:
        return out_boxes, out_scores
    # Confident enough, and not empty once clamped to the input (NaN fails both).
    valid = (scores >= score_floor) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    p = min(int(valid.sum(1).max()), pre_nms)
    if p == 0:
        return out_boxes, out_scores
    # Valid candidates by score, highest first, the others after them.
    key = torch.where(valid, scores, torch.full_like(scores, -math.inf))
    order = torch.sort(key, dim=1, descending=True, stable=True)[1][:, :p]
    sc = scores.gather(1, order)
    bx = boxes.gather(1, order.unsqueeze(2).expand(b, p, 4))
    ok = valid.gather(1, order)
    keep = batched_nms(bx, ok, iou_threshold)
    # Kept rows first, in score order, then the others: the first max_det of that order, the
    # ones not kept zeroed.
    pos = torch.arange(p, device=scores.device).unsqueeze(0).expand(b, p)
    src = torch.sort(torch.where(keep, pos, pos + p), dim=1)[1]
    m = min(p, max_det)
    src = src[:, :m]
    kept = keep.gather(1, src)
    out_scores[:, :m] = torch.where(kept, sc.gather(1, src), torch.zeros_like(kept, dtype=torch.float32))
    top = bx.gather(1, src.unsqueeze(2).expand(b, m, 4))
    out_boxes[:, :m] = torch.where(kept.unsqueeze(2), top, torch.zeros_like(top))
    return out_boxes, out_scores


class PersonDetector(nn.Module):
    """The contract around a detection ``core``.

    ``core(x)``: float ``[B,3,S,S]`` RGB in 0..1 (of ``dtype``) -> ``(boxes [B,N,4] x1,y1,x2,y2
    in input pixels, scores [B,N] person confidence 0..1)``, any N. This module converts the
    uint8 images and hands the candidates to :func:`postprocess` (clamp to the input, score
    floor, the best ``pre_nms``, NMS at ``iou_threshold``, the best ``max_det`` padded with
    zeros), for the whole batch at once.

    ``score_threshold`` is the keep threshold the exporter recommends for these weights (0–1,
    at least ``score_floor``): it changes no output, ``meta()`` carries it to whoever reads the
    boxes (the worker has its own ``detector.score_threshold``). ``meta_extra`` adds fields to
    ``meta()`` (an architecture's ``arch``, ``weights``, ``license``...).
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
        score_threshold: float = 0.5,
        meta_extra: Optional[Dict[str, object]] = None,
    ):
        super().__init__()
        if not 0.0 <= score_floor <= score_threshold <= 1.0:
            raise ValueError(f"need 0 <= score_floor ({score_floor}) <= score_threshold ({score_threshold}) <= 1")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold {iou_threshold} must be in (0, 1]")
        if max_det < 1 or pre_nms < 1:
            raise ValueError(f"max_det ({max_det}) and pre_nms ({pre_nms}) must be at least 1")
        self.core = core
        self.input_size = int(input_size)
        self.max_det = int(max_det)
        self.iou_threshold = float(iou_threshold)
        self.score_floor = float(score_floor)
        self.score_threshold = float(score_threshold)
        self.pre_nms = int(pre_nms)
        self.dtype = dtype
        meta: Dict[str, object] = {
            "contract": CONTRACT,
            "name": name,
            "input_size": self.input_size,
            "dtype": str(dtype).replace("torch.", ""),
            "max_det": self.max_det,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "score_floor": self.score_floor,
            "classes": ["person"],
            "input": "uint8 [B,S,S,3] RGB, letterboxed: r = S / max(W, H), top-left, fill 114",
        }
        meta.update(meta_extra or {})
        self.meta_json = json.dumps(meta)

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
            out_boxes, out_scores = postprocess(
                boxes, scores, s, self.score_floor, self.pre_nms, self.iou_threshold, self.max_det
            )
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
