"""RT-DETR (Hugging Face ``transformers``' ``RTDetrForObjectDetection``) as a person detector.

RT-DETR ("DETRs Beat YOLOs on Real-time Object Detection", Lv et al. 2023; code and weights
Apache-2.0) is NMS-free: its decoder gives one box per object query (300 in the released models),
``logits [B, Q, C]`` (one sigmoid per class, focal-loss style) and ``pred_boxes [B, Q, 4]``
(normalised cx, cy, w, h). The export needs the ``transformers`` package; the exported file does
not: the network is traced (``torch.jit.trace``) at one input size S, and the wrapper around it is
plain scripted torch.

What the file reproduces, checked against transformers 5.25's ``RTDetrImageProcessor``:

- preprocessing (``preprocess``): the processor resizes to its ``size`` (640×640 by default;
  an identity for an S×S letterboxed input when S is that size), rescales by ``rescale_factor``
  (1/255) and, by default, does *not* normalise by mean/std (``do_normalize=False``). The file
  does the same arithmetic on the uint8 input (float32, ``x * rescale_factor``, then ``(x - mean) /
  std`` only where the checkpoint's processor asks for it), then converts to the network's dtype.
- post-processing (:class:`RTDetrCore`): ``post_process_object_detection`` turns the boxes into
  corners (``cx - 0.5·w`` …) and multiplies by the target size; the score of a (query, class) pair
  is ``sigmoid(logit)``. The file keeps the person column only: one score per query,
  ``sigmoid(logits[:, :, class_id])``, and its box in pixels of the S×S input.
- the contract (:class:`RTDetrPersonDetector`): boxes clamped to the input, the best ``max_det``
  queries by person score, sorted, rows below ``score_floor`` (and beyond the Q queries) zero. No
  NMS: the model is trained to give each object one query (``meta()``: ``"iou_threshold": null``).

The processor's ``post_process_object_detection`` ranks all Q×C (query, class) pairs and keeps the
top Q of them before its threshold, so a query can appear under several classes, and a person pair
is dropped when Q pairs of any class score higher. This file scores every query as a person
regardless of its other classes (the same pairs, restricted to one class); the two agree on every
person pair above the threshold unless Q pairs score above it (300 pairs above 0.5 in one image,
for the released models).
"""

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .detector import CONTRACT, export

ARCHS = ("rtdetr",)
PERSON = "person"
#: The recommended score threshold written to ``meta()``: the default of the authors' reference
#: inference (PaddleDetection's ``tools/infer.py --draw_threshold``) and of transformers'
#: ``post_process_object_detection``. See models/README.md, "Detectors".
SCORE_THRESHOLD = 0.5
#: Rows scoring below this never leave the file (zeros instead).
SCORE_FLOOR = 0.05
LICENSE = "Apache-2.0 (RT-DETR code and weights by Lv et al.; transformers' implementation)"
#: The first classes of COCO in the order of the released checkpoints' ``id2label``.
TINY_LABELS = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck")
# Randomized models (tests): see randomize().
LOGIT_STD = 2.0  # spread of each class's logits over the queries
POSITIVE_FRACTION = 0.05  # share of the queries scoring above 0.5, for each class, on the calibration images
BN_GAIN = 0.5  # scale of every BatchNorm
BN_BIAS = 0.5  # spread of the BatchNorm shifts
ENC_BOX_STD = 0.5  # spread of the encoder proposals' size logits around the anchors'
ENC_BOX_GROW = 2.0  # the proposals' size logits above the anchors' (boxes of 28-65 % of S)
BOX_STD = 0.2  # spread of each decoder layer's size refinements
CENTRE_STD = 0.02  # spread of the centre refinements (logit space)


def offline_transformers():
    """Import transformers with the Hub switched off (no downloads, no hub kernels); the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import transformers

    return transformers


# --- configurations and loading -------------------------------------------------------------------

def tiny_config(num_queries: int = 50):
    """A small RT-DETR (ResNet-vd basic blocks of 16-128 channels, width 32, 2 decoder layers,
    ``num_queries`` queries, the first 8 COCO classes): the architecture of the released models
    at a size that runs in milliseconds on a CPU, for tests."""
    tf = offline_transformers()
    backbone = tf.RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                     layer_type="basic", out_indices=[2, 3, 4])
    return tf.RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=[32, 64, 128], encoder_hidden_dim=32, encoder_ffn_dim=64,
        encoder_attention_heads=2, d_model=32, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64,
        decoder_attention_heads=2, decoder_layers=2, num_queries=num_queries, num_denoising=0,
        id2label=dict(enumerate(TINY_LABELS)), label2id={n: i for i, n in enumerate(TINY_LABELS)},
    )


def make_config(name: str):
    """``tiny`` (:func:`tiny_config`), ``r50vd`` (the library's defaults: the architecture of
    ``PekingU/rtdetr_r50vd``, without its class names) or the path of a ``config.json``."""
    tf = offline_transformers()
    if name == "tiny":
        return tiny_config()
    if name == "r50vd":
        return tf.RTDetrConfig()
    path = Path(name)
    if path.is_file():
        return tf.RTDetrConfig.from_json_file(str(path))
    raise ValueError(f"unknown RT-DETR config {name!r}: use 'tiny', 'r50vd' or the path of a config.json")


def resolve_weights(path: Path) -> Path:
    """The folder that holds the model: ``path`` itself (``save_pretrained`` output, ``hf download
    --local-dir``), or, for a Hub cache folder (``models--PekingU--rtdetr_r50vd``), its one snapshot.
    Raises FileNotFoundError with what is missing."""
    path = Path(path)
    hint = ("(a local folder with config.json and model.safetensors, e.g. from `hf download PekingU/rtdetr_r50vd "
            "--local-dir DIR`; weights are never downloaded here, see models/README.md)")
    if not path.is_dir():
        raise FileNotFoundError(f"no such weights folder: {path} {hint}")
    if (path / "config.json").is_file():
        return path
    snapshots = sorted(p for p in (path / "snapshots").glob("*") if (p / "config.json").is_file())
    if len(snapshots) == 1:
        return snapshots[0]
    if len(snapshots) > 1:
        raise FileNotFoundError(f"{path} holds {len(snapshots)} snapshots: pass one of {[str(s) for s in snapshots]}")
    raise FileNotFoundError(f"{path} has no config.json {hint}")


def load_rtdetr(weights: Optional[Path] = None, config: Optional[str] = None, seed: int = 0) -> nn.Module:
    """An ``RTDetrForObjectDetection`` in float32, eval mode, on the CPU.

    ``weights``: a local folder (``save_pretrained`` / Hub snapshot), loaded with
    ``from_pretrained(local_files_only=True)``; never downloaded. ``config``: see :func:`make_config`,
    built with seeded random weights (:func:`randomize`)."""
    if (weights is None) == (config is None):
        raise ValueError("give exactly one of weights or config")
    tf = offline_transformers()
    if weights is not None:
        folder = resolve_weights(weights)
        try:
            model = tf.RTDetrForObjectDetection.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load RT-DETR weights from {folder}: {e}") from e
    else:
        cfg = make_config(config)
        torch.manual_seed(seed)
        model = tf.RTDetrForObjectDetection(cfg)
        randomize(model, seed)
    return model.float().eval().requires_grad_(False)


def load_processor(weights: Optional[Path] = None):
    """The checkpoint's ``RTDetrImageProcessor`` (its ``preprocessor_config.json``), or the
    library's defaults where there is none."""
    tf = offline_transformers()
    if weights is not None:
        folder = resolve_weights(weights)
        if (folder / "preprocessor_config.json").is_file():
            return tf.RTDetrImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return tf.RTDetrImageProcessor()


def person_class(config) -> Optional[int]:
    """Index of the class named "person" in ``config.id2label``, or None."""
    for i, name in (getattr(config, "id2label", None) or {}).items():
        if str(name).strip().lower() == PERSON:
            return int(i)
    return None


def resolve_class(config, class_id: Optional[int], random_weights: bool) -> int:
    """The class whose score becomes the person score: ``class_id`` if given (checked against the
    model's classes), else the class named "person", else 0 for random weights; an error otherwise."""
    n = int(config.num_labels)
    found = person_class(config)
    if class_id is not None:
        if not 0 <= class_id < n:
            raise ValueError(f"class {class_id} out of range: the model has {n} classes")
        if found is not None and found != class_id:
            print(f"export_detector: warning: --class-id {class_id}, but the model names class {found} 'person'",
                  file=sys.stderr)
        return class_id
    if found is not None:
        return found
    if random_weights:
        return 0
    names = dict(list(config.id2label.items())[:8])
    raise ValueError(f"the model has no class named 'person' (id2label: {names}...); pass --class-id")


# --- random weights for tests ---------------------------------------------------------------------

def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.BatchNorm2d) or type(m).__name__ == "RTDetrFrozenBatchNorm2d"


def randomize(model: nn.Module, seed: int = 0, size: int = 256) -> None:
    """Random weights whose outputs vary with the input and that a change of precision does not
    scramble: boxes of many sizes and person scores spread over 0..1, so that comparing the file's
    boxes and scores with the library's means something.

    With the library's initialisation the random network is degenerate: convolutions of std 0.01
    and BatchNorm scales of ~0.01 let the image features vanish, every query gets nearly the same
    class logits (the prior bias), and the box heads are zero, so every box is an anchor square.
    Here every convolution gets zero-sum Kaiming-normal filters, and every BatchNorm (the
    backbone's frozen ones too) the statistics of its own input over four ``size``-pixel
    letterbox-like images (one forward pass; each layer is calibrated before the next one sees its
    output), scale BN_GAIN and random shifts of spread BN_BIAS (without them, flat regions give
    near-zero features that the LayerNorms blow up into noise). Then the box heads' last layers,
    in the order they run: the encoder's proposals get size logits of spread ENC_BOX_STD,
    ENC_BOX_GROW above the anchors' (sizes of 28-65 % of S), each decoder layer size refinements
    of spread BOX_STD, and all of them centre shifts of spread CENTRE_STD only (a centre that
    moves by a fraction of a box changes the IoU far more than a size that does). Last, the final
    class head is scaled so that each class's logits spread by LOGIT_STD over the queries, and
    shifted so that POSITIVE_FRACTION of the queries score above 0.5 for each class on the
    calibration images.

    Random weights have no margins: on letterboxed drawings a bf16 copy keeps a median IoU of
    ~0.9 with the float32 boxes, with tails where a query is selected by one and not the other
    (models/README.md). Seeded: the same seed gives the same weights."""
    from .yolo import calibration_images, zero_sum_kaiming_

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if type(m) is nn.Conv2d:
            zero_sum_kaiming_(m, gen)
    model.eval()
    images = calibration_images(gen, 4, size)

    def calibrate(m, inputs):
        x = inputs[0].float()
        with torch.no_grad():
            m.running_mean.copy_(x.mean((0, 2, 3)))
            m.running_var.copy_(x.var((0, 2, 3)))
            m.weight.fill_(BN_GAIN)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * BN_BIAS)

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if _is_batchnorm(m)]
    with torch.no_grad():
        model(pixel_values=images)
    for h in hooks:
        h.remove()

    decoder = model.model.decoder
    # The box heads' last layers, one at a time in the order they run (each moves the reference
    # boxes the later ones see): the encoder's proposals, then each decoder layer's refinement.
    # Outputs are (cx, cy, w, h) in logit space: sizes get the spread, centres a small one.
    heads = [(model.model.enc_bbox_head.layers[-1], ENC_BOX_STD, ENC_BOX_GROW)]
    heads += [(head.layers[-1], BOX_STD, 0.0) for head in decoder.bbox_embed]
    for last, spread, grow in heads:
        with torch.no_grad():
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen))
            last.bias.zero_()
        out = {}
        hook = last.register_forward_hook(lambda m, i, o: out.__setitem__("o", o.flatten(0, -2)))
        with torch.no_grad():
            model(pixel_values=images)
            scale = torch.tensor([CENTRE_STD, CENTRE_STD, spread, spread]) / out["o"].std(0)
            last.weight.mul_(scale[:, None])
            last.bias.copy_(-out["o"].mean(0) * scale + torch.tensor([0.0, 0.0, grow, grow]))
        hook.remove()
    cls = decoder.class_embed[-1]
    with torch.no_grad():
        logits = model(pixel_values=images).logits  # [n, Q, C]
        std = logits.std((0, 1)).clamp(min=1e-6)
        cls.weight.mul_((LOGIT_STD / std)[:, None])
        cls.bias.mul_(LOGIT_STD / std)
        logits = model(pixel_values=images).logits
        cls.bias.sub_(torch.quantile(logits.flatten(0, 1), 1 - POSITIVE_FRACTION, dim=0))


# --- the exported network -------------------------------------------------------------------------

class RTDetrCore(nn.Module):
    """``forward(x float [B,3,S,S] preprocessed, in the network's dtype) -> (boxes f32 [B,Q,4]
    x1,y1,x2,y2 in input pixels, scores f32 [B,Q])``: every query's box and person score
    ``sigmoid(logit[class_id])``, as ``post_process_object_detection`` computes them with target
    size S×S (corners first, then scaled). For tracing at one input size S."""

    def __init__(self, model: nn.Module, input_size: int, class_id: int):
        super().__init__()
        n = int(model.config.num_labels)
        if not 0 <= class_id < n:
            raise ValueError(f"class {class_id} out of range: the model has {n} classes")
        self.model = model
        self.class_id = int(class_id)
        self.input_size = int(input_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=x)
        logits, cxcywh = out.logits.float(), out.pred_boxes.float()
        cx, cy, w, h = cxcywh.unbind(-1)
        corners = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
        boxes = corners * float(self.input_size)
        scores = logits[:, :, self.class_id].sigmoid()
        return boxes, scores


def trace_core(model: nn.Module, input_size: int, class_id: int, dtype: torch.dtype, device: str,
               batch: int = 2) -> torch.jit.ScriptModule:
    """:class:`RTDetrCore` of a copy of ``model`` in ``dtype`` on ``device``, traced at S =
    input_size (a multiple of 32). The batch dimension stays free. ``model`` is not changed."""
    import copy

    if input_size < 32 or input_size % 32:
        raise ValueError(f"input size {input_size} is not a multiple of the model's largest stride 32")
    with torch.no_grad(), warnings.catch_warnings():
        # The library's Python-level shape checks become constants of the trace: right at one S.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # the library's own deprecation notes
        net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        core = RTDetrCore(net, input_size, class_id)
        example = torch.rand(batch, 3, input_size, input_size, device=device).to(dtype)
        return torch.jit.trace(core, example, check_trace=False)


class RTDetrPersonDetector(nn.Module):
    """The contract (``person-detector/1``, NMS-free) around a :class:`RTDetrCore`.

    ``forward(images uint8 [B,S,S,3] RGB)``: the processor's arithmetic in float32 (``x ·
    rescale_factor``, then ``(x − mean) / std`` if ``normalize``), the core in ``dtype``, boxes
    clamped to the input, the best ``max_det`` queries by person score, sorted; rows scoring below
    ``score_floor``, and rows beyond the core's Q queries, are zero."""

    def __init__(
        self,
        core: nn.Module,
        input_size: int,
        name: str,
        max_det: int = 100,
        score_threshold: float = SCORE_THRESHOLD,
        score_floor: float = SCORE_FLOOR,
        dtype: torch.dtype = torch.float32,
        rescale_factor: float = 1 / 255,
        mean: Optional[List[float]] = None,
        std: Optional[List[float]] = None,
        extra_meta: Optional[dict] = None,
    ):
        super().__init__()
        self.core = core
        self.input_size = int(input_size)
        self.max_det = int(max_det)
        self.score_floor = float(score_floor)
        self.dtype = dtype
        self.rescale_factor = float(rescale_factor)
        self.normalize = mean is not None
        # As the processor fuses them: mean and std divided by the rescale factor, in float32.
        m = torch.tensor(mean if mean is not None else [0.0, 0.0, 0.0]) * (1.0 / self.rescale_factor)
        s = torch.tensor(std if std is not None else [1.0, 1.0, 1.0]) * (1.0 / self.rescale_factor)
        self.register_buffer("mean", m.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", s.view(1, 3, 1, 1), persistent=False)
        if self.normalize:
            pre = f"(x - {list(mean)}·255) / ({list(std)}·255)"
        else:
            pre = f"x · {self.rescale_factor!r} (no mean/std)"
        meta = {
            "contract": CONTRACT,
            "name": name,
            "input_size": self.input_size,
            "dtype": str(dtype).replace("torch.", ""),
            "max_det": self.max_det,
            "classes": ["person"],
            "license": LICENSE,
            "score_threshold": float(score_threshold),
            "iou_threshold": None,
            "score_floor": self.score_floor,
            "input": "uint8 [B,S,S,3] RGB, letterboxed: r = S / max(W, H), top-left, fill 114",
            "preprocess": pre,
            "arch": "rtdetr",
        }
        meta.update(extra_meta or {})
        self.meta_json = json.dumps(meta)

    @torch.jit.export
    def meta(self) -> str:
        return self.meta_json

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,S,S,3] -> float32 [B,3,S,S], as ``RTDetrImageProcessor`` for an S×S input."""
        x = images.permute(0, 3, 1, 2)
        if self.normalize:
            return (x.float() - self.mean) / self.std
        return x.float() * self.rescale_factor

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        s = self.input_size
        if images.dim() != 4 or images.shape[1] != s or images.shape[2] != s or images.shape[3] != 3:
            raise RuntimeError(f"person detector: expected images [B,{s},{s},3], got {images.shape}")
        if images.dtype != torch.uint8:
            raise RuntimeError(f"person detector: expected uint8 images, got {images.dtype}")
        with torch.no_grad():
            boxes, scores = self.core(self.preprocess(images).to(self.dtype))
            boxes = boxes.float().clamp(0.0, float(s))
            scores = scores.float()
            batch, k = images.shape[0], self.max_det
            n = min(k, scores.shape[1])
            top, idx = scores.topk(n, dim=1)  # sorted, highest first
            picked = boxes.gather(1, idx.unsqueeze(-1).expand(batch, n, 4))
            keep = top >= self.score_floor
            out_scores = torch.zeros(batch, k, dtype=torch.float32, device=images.device)
            out_boxes = torch.zeros(batch, k, 4, dtype=torch.float32, device=images.device)
            out_scores[:, :n] = torch.where(keep, top, torch.zeros_like(top))
            out_boxes[:, :n] = torch.where(keep.unsqueeze(-1), picked, torch.zeros_like(picked))
        return {"boxes": out_boxes, "scores": out_scores}


def build_detector(model: nn.Module, processor, input_size: int, class_id: int, dtype: torch.dtype, device: str,
                   name: str, max_det: int = 100, score_threshold: float = SCORE_THRESHOLD,
                   score_floor: float = SCORE_FLOOR, extra_meta: Optional[dict] = None) -> RTDetrPersonDetector:
    """The contract wrapper around ``model`` traced at ``input_size`` in ``dtype`` on ``device``,
    with the preprocessing of ``processor`` (an ``RTDetrImageProcessor``)."""
    rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    mean = std = None
    if processor.do_normalize:
        mean, std = [float(v) for v in processor.image_mean], [float(v) for v in processor.image_std]
    core = trace_core(model, input_size, class_id, dtype, device)
    meta = {"class_id": class_id, "num_queries": int(model.config.num_queries),
            "params": sum(p.numel() for p in model.parameters())}
    meta.update(extra_meta or {})
    det = RTDetrPersonDetector(core, input_size, name, max_det=max_det, score_threshold=score_threshold,
                               score_floor=score_floor, dtype=dtype, rescale_factor=rescale, mean=mean, std=std,
                               extra_meta=meta)
    return det.to(device).eval()


# --- checks ---------------------------------------------------------------------------------------

def package_person_detections(model: nn.Module, processor, images: torch.Tensor, class_id: int,
                              threshold: float) -> Tuple[List[Tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """What the library reports for uint8 letterboxed ``images`` [B,S,S,3]: the processor's
    preprocessing (at size S), the model in float32, ``post_process_object_detection`` with target
    size S×S, then the pairs of class ``class_id``; per image (boxes clamped to the input [N,4],
    scores [N]), highest score first. Also the cut of its ranking, per image [B]: the score of the
    Q-th best (query, class) pair, below which it reports no pair (see the module's docstring)."""
    s = images.shape[1]
    inputs = processor(images=list(images.cpu().numpy()), size={"height": s, "width": s}, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"])
    q = out.logits.shape[1]
    cut = out.logits.sigmoid().flatten(1).topk(q, dim=1).values[:, -1]
    results = processor.post_process_object_detection(out, threshold=threshold, target_sizes=[(s, s)] * len(images))
    per_image = []
    for r in results:
        person = r["labels"] == class_id
        sc, bx = r["scores"][person], r["boxes"][person].clamp(0, s)
        order = sc.argsort(descending=True)
        per_image.append((bx[order], sc[order]))
    return per_image, cut


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of xyxy boxes [N,4] × [M,4]."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def compare(out: Dict[str, torch.Tensor], reference: List[Tuple[torch.Tensor, torch.Tensor]],
            threshold: float, cut: torch.Tensor) -> dict:
    """The file's rows above ``threshold`` that the library's ranking keeps (score ≥ ``cut``)
    against the library's person detections, matched one-to-one by greedy best IoU: counts, the
    smallest IoU of a match, the largest score gap."""
    n_file = n_ref = matched = 0
    min_iou, max_dscore = 1.0, 0.0
    for i, (ref_boxes, ref_scores) in enumerate(reference):
        keep = (out["scores"][i] > threshold) & (out["scores"][i] >= float(cut[i]))
        boxes, scores = out["boxes"][i][keep].cpu(), out["scores"][i][keep].cpu()
        n_file, n_ref = n_file + len(boxes), n_ref + len(ref_boxes)
        if len(boxes) and len(ref_boxes):
            iou = box_iou(boxes, ref_boxes)
            for _ in range(min(len(boxes), len(ref_boxes))):
                best = int(iou.argmax())
                r, c = divmod(best, iou.shape[1])
                min_iou = min(min_iou, float(iou[r, c]))
                max_dscore = max(max_dscore, abs(float(scores[r] - ref_scores[c])))
                iou[r, :], iou[:, c] = -1, -1
                matched += 1
    return {"file": n_file, "package": n_ref, "matched": matched, "min_iou": min_iou, "max_dscore": max_dscore}


LOAD_WITHOUT_TRANSFORMERS = r"""
import json, sys
for name in ("transformers", "huggingface_hub", "timm", "torchvision", "ultralytics"):
    sys.modules[name] = None  # any import of them fails
import torch
m = torch.jit.load(sys.argv[1], map_location=sys.argv[2])
meta = json.loads(m.meta())
s = int(meta["input_size"])
x = torch.randint(0, 256, (2, s, s, 3), dtype=torch.uint8, device=sys.argv[2])
with torch.no_grad():
    out = m(x)
print(json.dumps({k: [list(v.shape), str(v.dtype)] for k, v in out.items()}))
"""


def check_standalone(file: Path, device: str) -> dict:
    """Load and run ``file`` in a fresh interpreter that cannot import transformers, the Hub
    client, timm, torchvision or ultralytics; output shapes and dtypes."""
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TRANSFORMERS, str(file), device],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{file} does not load and run without transformers:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def letterboxed_images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    """``n`` uint8 letterboxed frames [n,S,S,3] for the export's own check (random content)."""
    from .yolo import calibration_images

    x = calibration_images(torch.Generator().manual_seed(seed), n, size)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# --- the command ----------------------------------------------------------------------------------

def check_args(ap, args) -> None:
    """RT-DETR's checks of ``python -m models.export_detector`` arguments (``ap.error`` on a bad one)."""
    if args.weights is not None:
        try:
            resolve_weights(args.weights)
        except FileNotFoundError as e:
            ap.error(f"--weights: {e}")
    if args.input_size < 32 or args.input_size % 32:
        ap.error(f"--input-size {args.input_size}: must be a positive multiple of 32")
    if args.max_det < 1:
        ap.error("--max-det must be ≥ 1")
    threshold = args.score_threshold
    if threshold is not None and not 0 < threshold < 1:
        ap.error("--score-threshold must be in (0, 1)")
    floor = getattr(args, "score_floor", SCORE_FLOOR)
    if not 0 <= floor < 1 or floor > (threshold if threshold is not None else SCORE_THRESHOLD):
        ap.error("--score-floor must be in [0, 1) and not above the score threshold")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")


def main(args) -> None:
    """``python -m models.export_detector --arch rtdetr ...`` (arguments parsed there)."""
    from .hmr2 import DTYPES

    def log(msg: str) -> None:
        print(f"export_detector: {msg}", file=sys.stderr, flush=True)

    start = time.monotonic()
    log(f"loading {args.weights}" if args.weights else f"building {args.config} with random weights (seed {args.seed})")
    try:
        model = load_rtdetr(weights=args.weights, config=args.config, seed=args.seed)
        processor = load_processor(args.weights)
        class_id = resolve_class(model.config, args.class_id, random_weights=args.weights is None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"export_detector: {e}")
    name = args.name or Path(str(args.weights or args.config)).name.removesuffix(".json")
    threshold = args.score_threshold if args.score_threshold is not None else SCORE_THRESHOLD
    floor = getattr(args, "score_floor", SCORE_FLOOR)
    dtype = DTYPES[args.dtype]
    size = dict(processor.size or {})
    if args.weights and size and (size.get("height"), size.get("width")) != (args.input_size, args.input_size):
        log(f"note: the checkpoint's image processor resizes to {size['height']}×{size['width']} (the size it was "
            f"evaluated at); the file runs the network at {args.input_size}×{args.input_size}")
    log(f"tracing the network at {args.input_size}×{args.input_size}, {args.dtype}, {args.device}, "
        f"person = class {class_id} ({model.config.id2label.get(class_id, '?')}), {model.config.num_queries} queries")
    extra = {"weights": Path(args.weights).name if args.weights else f"random seed {args.seed} ({args.config})"}
    detector = build_detector(model, processor, args.input_size, class_id, dtype, args.device, name,
                              max_det=args.max_det, score_threshold=threshold, score_floor=floor, extra_meta=extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    log("scripting, saving and reloading")
    loaded = export(detector, tmp)  # also runs batches of 1 and 2 through the reloaded file
    if not args.no_check:
        log("checking: reload without transformers, and the file against the library's float32 detections")
        shapes = check_standalone(tmp, args.device)
        images = letterboxed_images(2, args.input_size)
        with torch.no_grad():
            out = loaded(images.to(args.device))
        low = max(floor, 0.05)
        ref, cut = package_person_detections(model, processor, images, class_id, low)
        ref = [(boxes[:args.max_det], scores[:args.max_det]) for boxes, scores in ref]  # the file's rows
        c = compare(out, ref, low, cut)
        log(f"standalone outputs {shapes}; persons above {low} on 2 letterbox-like images: {c['file']} in the "
            f"file (of those the library ranks), {c['package']} from the library, {c['matched']} matched, "
            f"min IoU {c['min_iou']:.4f}, max |Δscore| {c['max_dscore']:.3g}")
    os.replace(tmp, args.out)
    meta = json.loads(loaded.meta())
    print(f"exported {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {meta['params']:,} params, {name}, "
          f"{meta['contract']}, input {args.input_size}, {args.dtype}, {args.device}, person class {class_id}, "
          f"score threshold {threshold}, {time.monotonic() - start:.1f} s")
