"""Ultralytics YOLO detection models (YOLOv8, YOLO11) as the core of a person detector.

The export needs the ``ultralytics`` package; the exported file does not. The network is built or
loaded with Ultralytics' own code, then traced (``torch.jit.trace``) together with a box decoder
written here, so the saved graph holds only aten operators.

What the Ultralytics head computes, and what :class:`YoloCore` reproduces (checked against
ultralytics 8.4's ``nn/modules/head.py`` ``Detect`` and ``utils/tal.py``):

- ``Detect.forward_head(feats, cv2, cv3)`` gives, over the A anchors of all levels (A = Σ h·w,
  level by level, row-major), ``boxes`` ``[B, 4·reg_max, A]`` (distance logits, left/top/right/
  bottom, reg_max bins each) and ``scores`` ``[B, nc, A]`` (class logits).
- ``Detect._inference``: DFL (softmax over the bins, expectation over 0..reg_max−1), then
  ``dist2bbox`` around the anchor points ``(col + 0.5, row + 0.5)`` in grid units, times the
  level's stride; the result is ``[B, 4 + nc, A]``: xywh box in input pixels, then the class
  sigmoids. ``model(x)`` in eval mode returns that tensor (with the raw dict beside it).
- ``utils.nms.non_max_suppression(..., classes=[0])`` (what ``predict`` does) keeps an anchor only
  when its best class is the wanted one (``cls.max(1)``, first index on ties), with that class's
  probability as the confidence.

:class:`YoloCore` does the same from ``forward_head``'s logits, in float32 whatever the network's
dtype (the package decodes in the network's dtype: in bf16, coordinates above 256 px are multiples
of 2 px and above 512 px of 4 px), and returns only the person column: ``score = p[class_id]`` if
it is the anchor's best class, else 0.
"""

import copy
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

ARCHS = ("yolo",)
LOGIT_STD = 1.5  # spread of the head's logits in randomized models
BN_GAIN = 0.3  # pre-activation spread of every Conv+BN block in randomized models
PERSON = "person"


def offline_ultralytics():
    """Import ultralytics with everything that could reach the network switched off.

    ``YOLO_OFFLINE`` makes ``is_online()`` false (no update checks, no asset downloads),
    ``YOLO_AUTOINSTALL=false`` stops it from pip-installing missing packages, and the ``sync``
    setting (anonymous usage events) is turned off. Returns the module."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    import ultralytics
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)
    return ultralytics


def _check_head(model: nn.Module) -> nn.Module:
    from ultralytics.nn.modules.head import Detect

    head = model.model[-1]
    if type(head) is not Detect:
        raise ValueError(
            f"the model's last layer is {type(head).__name__}, not a plain Detect head: only YOLO detection "
            "models (YOLOv8, YOLO11) are supported, not segmentation, pose, OBB, RT-DETR or World models"
        )
    if getattr(head, "one2one_cv2", None) is not None:
        raise ValueError(
            "the model has an end-to-end (one-to-one) head (YOLOv10 / YOLO26 style): not supported, "
            "use a YOLOv8 or YOLO11 detection model"
        )
    return head


def load_yolo(weights: Optional[Path] = None, config: Optional[str] = None, seed: int = 0) -> nn.Module:
    """An Ultralytics ``DetectionModel`` in float32, eval mode, Conv+BN fused, on the CPU.

    ``weights``: a local ``.pt`` checkpoint (``yolo11m.pt``; never downloaded: a missing file is an
    error). ``config``: a model definition shipped with the package (``yolo11n.yaml``,
    ``yolov8s.yaml``) or a yaml path, built with random weights (seeded, see :func:`randomize`)."""
    if (weights is None) == (config is None):
        raise ValueError("give exactly one of weights or config")
    offline_ultralytics()
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"no such weights file: {weights} (it is not downloaded; see models/README.md)")
        from ultralytics.nn.tasks import load_checkpoint

        model, _ = load_checkpoint(str(weights), device="cpu", fuse=False)
    else:
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(seed)
        model = DetectionModel(config, verbose=False)
    _check_head(model)
    if config is not None:
        randomize(model, seed)
    model = model.float().eval()
    model.fuse(verbose=False)
    return model.requires_grad_(False)


def randomize(model: nn.Module, seed: int = 0, size: int = 256) -> None:
    """Random weights whose activations neither vanish nor explode, and that a change of
    precision does not scramble, so that boxes and scores vary with the input and bf16 can be
    compared with fp32.

    With Ultralytics' own initialisation every activation decays to ~1e-10 by the head: all
    anchors get the same class scores and nearly the same box. Here every convolution gets
    zero-sum Kaiming-normal filters; each BatchNorm gets scale BN_GAIN and the statistics of its
    input over four random letterbox-like images (one forward pass in training mode), so every
    Conv+BN block feeds its activation pre-activations of spread ~BN_GAIN. At unit spread the random
    network is chaotic (bf16 rounding grows ×1.1–1.5 per layer, and anchor boxes of a bf16 copy
    lose half their overlap with fp32's); at 0.3 the SiLUs work near their linear range and 99 %
    of a bf16 copy's anchor boxes keep IoU ≥ 0.96 with fp32's (yolo11n and yolov8n at 320, on
    letterbox-like frames; on pure noise, which the statistics do not cover, far less). Then the
    head's last convolutions are scaled to logits of spread LOGIT_STD (with raw random weights
    DFL's softmax over the distance bins degenerates to an argmax, and boxes jump by whole bins).
    Class biases stay as Ultralytics sets them (prior probability ~0.01 / 80); the DFL projection
    (a fixed 0..reg_max−1 ramp) is left alone. Seeded: the same seed gives the same weights."""
    gen = torch.Generator().manual_seed(seed)
    dfl = getattr(model.model[-1], "dfl", None)
    for m in model.modules():
        if type(m) is nn.Conv2d and m is not getattr(dfl, "conv", None):
            zero_sum_kaiming_(m, gen)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            with torch.no_grad():
                m.weight.fill_(BN_GAIN)
            m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    images = calibration_images(gen, 4, size)
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()
    head = model.model[-1]
    outputs = {}
    hooks = [branch[-1].register_forward_hook(lambda m, i, o: outputs.__setitem__(m, float(o.std())))
             for branch in (*head.cv2, *head.cv3)]
    with torch.no_grad():
        model(images)
        for hook in hooks:
            hook.remove()
        for conv, std in outputs.items():
            conv.weight.mul_(LOGIT_STD / std)


def zero_sum_kaiming_(conv: nn.Conv2d, gen: torch.Generator) -> None:
    """Kaiming-normal weights for ``conv`` (drawn from ``gen``), each filter shifted to sum to zero
    so that a channel's offset does not leak into the next layer."""
    fan_in = conv.weight[0].numel()
    w = torch.randn(conv.weight.shape, generator=gen)
    if fan_in > 1:
        w = w - w.mean((1, 2, 3), keepdim=True)
    with torch.no_grad():
        conv.weight.copy_(w * (2.0 / fan_in) ** 0.5)


def calibration_images(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """``n`` float images [n,3,size,size] in 0..1 that look like letterboxed frames to a random
    network: noise, flat rectangles of random colours, and a band of letterbox grey (114) along
    the bottom or the right. (BatchNorm statistics taken over noise alone leave flat regions far
    out of range: logits of ±45 on a letterboxed frame.)"""
    images = torch.rand(n, 3, size, size, generator=gen)
    for img in images:
        for _ in range(6):
            y, x = torch.randint(0, size - size // 4, (2,), generator=gen).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=gen).tolist()
            img[:, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=gen)
        band = int(torch.randint(0, size // 2, (1,), generator=gen))
        if band:
            if int(torch.randint(0, 2, (1,), generator=gen)):
                img[:, size - band:] = 114 / 255
            else:
                img[:, :, size - band:] = 114 / 255
    return images


def person_class(model: nn.Module) -> Optional[int]:
    """Index of the class named "person" in the model's names, or None."""
    names = getattr(model, "names", None) or {}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    for i, name in names.items():
        if str(name).strip().lower() == PERSON:
            return int(i)
    return None


def make_anchors(sizes: List[Tuple[int, int]], strides: List[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres ``[A, 2]`` (x, y) in grid units and their strides ``[A, 1]``, float32, in
    Ultralytics' order (level by level, row-major within a level)."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                                torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(s), dtype=torch.float32))
    return torch.cat(points), torch.cat(stride_col)


class YoloCore(nn.Module):
    """``forward(x float [B,3,S,S] in 0..1, in the network's dtype) -> (boxes f32 [B,A,4] xyxy in
    input pixels, scores f32 [B,A])``: the person score of each anchor (0 where another class is
    the anchor's best). For tracing at one input size S (the anchors are fixed at construction)."""

    def __init__(self, model: nn.Module, input_size: int, class_id: int = 0):
        super().__init__()
        head = _check_head(model)
        if not 0 <= class_id < head.nc:
            raise ValueError(f"class {class_id} out of range: the model has {head.nc} classes")
        self.layers = model.model
        self.save = set(int(i) for i in model.save)
        self.class_id = class_id
        self.reg_max = int(head.reg_max)
        strides = [float(s) for s in head.stride]
        if any(input_size % int(s) for s in strides):
            raise ValueError(f"input size {input_size} is not a multiple of the model's strides {strides}")
        sizes = [(input_size // int(s), input_size // int(s)) for s in strides]
        anchors, stride_col = make_anchors(sizes, strides)
        self.register_buffer("anchors", anchors.t().contiguous(), persistent=False)  # [2, A]
        self.register_buffer("strides", stride_col.t().contiguous(), persistent=False)  # [1, A]
        self.register_buffer("bins", torch.arange(self.reg_max, dtype=torch.float32).view(1, 1, -1, 1),
                             persistent=False)

    def raw(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Box-distance logits ``[B, 4·reg_max, A]`` and class logits ``[B, nc, A]``, network dtype."""
        y: List[Optional[torch.Tensor]] = []
        head = self.layers[-1]
        for m in self.layers[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        feats = [x if j == -1 else y[j] for j in head.f]
        out = head.forward_head(feats, **head.one2many)
        return out["boxes"], out["scores"]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        box_logits, cls_logits = self.raw(x)
        box_logits, cls_logits = box_logits.float(), cls_logits.float()
        b, a = box_logits.shape[0], box_logits.shape[2]
        if self.reg_max > 1:  # DFL: expected bin of each side's distribution
            dist = (box_logits.view(b, 4, self.reg_max, a).softmax(2) * self.bins).sum(2)
        else:
            dist = box_logits
        x1y1 = self.anchors - dist[:, :2]
        x2y2 = self.anchors + dist[:, 2:]
        boxes = (torch.cat((x1y1, x2y2), 1) * self.strides).transpose(1, 2)  # [B, A, 4]
        probs = cls_logits.sigmoid()
        person = probs[:, self.class_id]
        best = probs.max(1).values
        scores = torch.where(person >= best, person, torch.zeros_like(person))
        return boxes.contiguous(), scores


def trace_core(model: nn.Module, input_size: int, class_id: int, dtype: torch.dtype, device: str,
               batch: int = 2) -> torch.jit.ScriptModule:
    """:class:`YoloCore` of ``model`` converted to ``dtype`` on ``device``, traced at S = input_size.
    The batch dimension stays free (the graph reads it from the input). ``model`` is not changed."""
    core = YoloCore(copy.deepcopy(model), input_size, class_id).to(device)
    core.layers.to(dtype)
    core.eval()
    example = torch.rand(batch, 3, input_size, input_size, device=device).to(dtype)
    with torch.no_grad():
        traced = torch.jit.trace(core, example, check_trace=False)
    return traced
