"""A tiny single-scale person detector for the demo's synthetic frames (``hmr2 synth``).

CenterNet/TTFNet-style: a small CNN down to stride 32, a top-down path back to stride 8, and two
1×1 heads on the stride-8 grid: a person-centre heatmap and the distances from each cell's centre
to the box's sides (left, top, right, bottom). :meth:`TinyCore.forward` decodes in plain torch:
a cell is a candidate when its heatmap value is the maximum of its 3×3 neighbourhood; its score
is that value (calibrated, see ``TinyCore.calibration``) and its box the cell centre plus the
distances. :class:`models.detector
.PersonDetector` applies the score floor and NMS around it.

Trained by ``models/train_detector.py``; the committed result is ``models/detector-tiny.pt``.
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

#: Input side the detector is trained and exported at.
INPUT_SIZE = 256

#: Output stride of the heads.
STRIDE = 8

#: Box distances are exp(raw) · this many pixels (raw = 0 is a 16 px distance).
DIST_UNIT = 16.0

#: The keep threshold the file recommends (``meta()["score_threshold"]``): scores are calibrated
#: so that 0.5 means "more likely a person than not".
SCORE_THRESHOLD = 0.5

#: NMS IoU of the file. The training frames never let a figure cover more than 40 % of another.
IOU_THRESHOLD = 0.45

#: What the file says about itself beyond the contract: it finds only the demo's stick figures,
#: and it is this repository's own work (trained on frames this repository draws).
META = {
    "arch": "tiny-centernet",
    "synthetic_only": True,
    "license": "MIT (trained by this repository on its own synthetic frames)",
}


def conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    pad = k // 2 if k % 2 else 0
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCore(nn.Module):
    """float ``[B,3,S,S]`` in 0..1 -> ``(boxes [B,N,4], scores [B,N])``, N = (S/8)², or with
    :meth:`raw` the heatmap logits ``[B,1,S/8,S/8]`` and distance logits ``[B,4,S/8,S/8]``."""

    def __init__(self, widths: Tuple[int, int, int, int, int] = (16, 32, 48, 64, 32)):
        super().__init__()
        w2, w3, w4, w5, wp = widths
        self.stride = STRIDE
        self.dist_unit = DIST_UNIT
        self.stem = conv(3, w2, 4, k=4)  # stride 4, patches
        self.c3 = nn.Sequential(conv(w2, w3, 2), conv(w3, w3))  # stride 8
        self.c4 = nn.Sequential(conv(w3, w4, 2), conv(w4, w4))  # stride 16
        self.c5 = nn.Sequential(conv(w4, w5, 2), conv(w5, w5), conv(w5, w5))  # stride 32
        self.lat5 = conv(w5, wp, k=1)
        self.lat4 = conv(w4, wp, k=1)
        self.p4 = conv(wp, wp)
        self.lat3 = conv(w3, wp, k=1)
        self.p3 = nn.Sequential(conv(wp, wp), conv(wp, wp))
        self.heat = nn.Conv2d(wp, 1, 1)
        self.dist = nn.Conv2d(wp, 4, 1)
        # The usual focal-loss prior: start with every cell at p = 0.01.
        nn.init.constant_(self.heat.bias, -4.6)
        nn.init.zeros_(self.dist.bias)
        # Scores are sigmoid(a · heatmap logit + b): fitted after training so that a score is
        # the chance that the box is a person's (Platt scaling); (1, 0) is the plain heatmap.
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    def raw(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p4 = self.p4(F.interpolate(self.lat5(c5), size=c4.shape[-2:], mode="nearest") + self.lat4(c4))
        p3 = self.p3(F.interpolate(p4, size=c3.shape[-2:], mode="nearest") + self.lat3(c3))
        return self.heat(p3), self.dist(p3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        heat, dist = self.raw(x)
        boxes = decode_boxes(dist, self.stride, self.dist_unit)
        logit = heat.float()
        peak = logit == F.max_pool2d(logit, 3, stride=1, padding=1)
        p = torch.sigmoid(self.calibration[0] * logit + self.calibration[1])
        scores = torch.where(peak, p, torch.zeros_like(p))
        return boxes, scores.flatten(1)


def cell_centres(gh: int, gw: int, stride: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """x and y of the centres of a gh×gw grid's cells, in input pixels, each ``[gh, gw]``."""
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * stride
    return xs[None, :].expand(gh, gw), ys[:, None].expand(gh, gw)


def decode_boxes(dist: torch.Tensor, stride: int, unit: float) -> torch.Tensor:
    """Distance logits ``[B,4,H,W]`` on a grid of ``stride`` -> boxes ``[B,H·W,4]`` x1,y1,x2,y2
    in input pixels (a distance is exp(logit) · ``unit``)."""
    d = torch.exp(dist.float().clamp(-6.0, 6.0)) * unit
    cx, cy = cell_centres(dist.shape[2], dist.shape[3], stride, dist.device)
    boxes = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=-1)
    return boxes.flatten(1, 2)


def targets(
    boxes: List[torch.Tensor], grid: int, alpha: float = 0.54
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets of a batch (``boxes[i]`` [n,4] in input pixels) on a grid×grid map:

    - heat ``[B,1,G,G]``: per box an elliptic Gaussian (σ = alpha · side / 6) at its centre, 1 at
      the centre's cell; the maximum where boxes overlap (TTFNet).
    - box ``[B,G,G,4]``: the box a cell regresses to (the smallest box whose Gaussian region,
      values ≥ 0.3 inside the box plus the centre cell, holds the cell).
    - weight ``[B,G,G]``: the Gaussian value there, normalised to sum 1 per box (0 elsewhere).
    """
    b = len(boxes)
    heat = torch.zeros(b, 1, grid, grid)
    target = torch.zeros(b, grid, grid, 4)
    weight = torch.zeros(b, grid, grid)
    cx, cy = cell_centres(grid, grid, STRIDE, torch.device("cpu"))
    for i, bx in enumerate(boxes):
        if bx.numel() == 0:
            continue
        area = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
        for j in torch.argsort(area, descending=True).tolist():  # small boxes win
            x1, y1, x2, y2 = bx[j].tolist()
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            sx = max(alpha * (x2 - x1) / 6, STRIDE / 4)
            sy = max(alpha * (y2 - y1) / 6, STRIDE / 4)
            g = torch.exp(-((cx - mx) ** 2) / (2 * sx * sx) - ((cy - my) ** 2) / (2 * sy * sy))
            ci = min(max(int(mx // STRIDE), 0), grid - 1)
            cj = min(max(int(my // STRIDE), 0), grid - 1)
            g[cj, ci] = 1.0
            heat[i, 0] = torch.maximum(heat[i, 0], g)
            inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
            region = (g >= 0.3) & inside
            region[cj, ci] = True
            w = torch.where(region, g, torch.zeros_like(g))
            w = w / w.sum()
            weight[i][region] = w[region]
            target[i][region] = bx[j]
    return heat, target, weight


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, per positive (cell at 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of box pairs ``[N,4]``."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    elt = torch.minimum(pred[:, :2], target[:, :2])
    erb = torch.maximum(pred[:, 2:], target[:, 2:])
    enclose = (erb - elt).clamp(min=0).prod(1)
    return 1 - iou + (enclose - union) / enclose.clamp(min=1e-6)


def loss(
    core: TinyCore, x: torch.Tensor, boxes: List[torch.Tensor], reg_weight: float = 5.0
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, heatmap, box) loss of a batch: focal loss on the heatmap, and GIoU loss of the
    boxes of the cells near each box's centre, weighted by the Gaussian, per box."""
    heat_logits, dist = core.raw(x)
    grid = heat_logits.shape[-1]
    heat, target, weight = targets(boxes, grid)
    l_heat = focal_loss(heat_logits, heat)
    pred = decode_boxes(dist, STRIDE, DIST_UNIT).reshape(-1, 4)
    w = weight.reshape(-1)
    sel = w > 0
    n_boxes = max(sum(len(b) for b in boxes), 1)
    if sel.any():
        l_box = (giou_loss(pred[sel], target.reshape(-1, 4)[sel]) * w[sel]).sum() / n_boxes
    else:
        l_box = pred.sum() * 0
    return l_heat + reg_weight * l_box, l_heat.detach(), l_box.detach()
