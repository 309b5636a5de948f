"""Ultralytics YOLO exported to person-detector/1 (models/yolo.py, models/export_detector.py).

Offline: the models are built from the package's yaml definitions (yolo11n, yolov8n) with seeded
random weights (models.yolo.randomize) at a 320 input. Random weights give random scores, so the
person class's bias is raised until about 3 % of the anchors score above the threshold as
person: the comparisons below then see dozens of overlapping candidates and real NMS work."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # before the first import: it probes DNS at import time otherwise
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
pytest.importorskip("ultralytics")

from models import export_detector  # noqa: E402
from models.detector import PersonDetector, export, letterbox  # noqa: E402
from models.yolo import YoloCore, load_yolo, make_anchors, trace_core  # noqa: E402

SIZE = 320
THRESHOLD = 0.3
IOU = 0.45


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of xyxy boxes [N,4] × [M,4]."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def frames() -> torch.Tensor:
    """Two letterboxed uint8 frames [2,S,S,3] of different aspect ratios: coloured rectangles on
    noise, so the letterbox padding (114) and the content differ."""
    g = torch.Generator().manual_seed(3)
    out = []
    for h, w in ((250, 400), (330, 210)):
        img = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        for _ in range(6):
            y0, x0 = int(torch.randint(0, h - 40, (1,), generator=g)), int(torch.randint(0, w - 30, (1,), generator=g))
            img[y0:y0 + 80, x0:x0 + 40] = torch.randint(0, 256, (3,), generator=g, dtype=torch.uint8)
        canvas, r = letterbox(img.numpy(), SIZE)
        assert abs(r - SIZE / max(h, w)) < 1e-6
        out.append(torch.as_tensor(canvas))
    return torch.stack(out)


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 255


def raise_person_bias(model, images: torch.Tensor, fraction: float = 0.03) -> float:
    """Add to the person (class 0) bias of every level so that ``fraction`` of the anchors have
    person as their best class with a probability above THRESHOLD. Returns the shift."""
    with torch.no_grad():
        _, cls = YoloCore(model, SIZE).raw(to_float(images))
    l0, others = cls[:, 0], cls[:, 1:].max(1).values
    need = torch.max(others, torch.full_like(others, math.log(THRESHOLD / (1 - THRESHOLD)))) - l0
    shift = float(need.flatten().quantile(fraction)) + 0.05
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias[0] += shift
    return shift


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return frames()


@pytest.fixture(scope="module", params=["yolo11n.yaml", "yolov8n.yaml"])
def model(request, images):
    m = load_yolo(config=request.param, seed=0)
    raise_person_bias(m, images)
    return m


def exported(model, path: Path, dtype=torch.float32, name="test") -> torch.jit.ScriptModule:
    core = trace_core(model, SIZE, 0, dtype, "cpu")
    det = PersonDetector(core, SIZE, name, max_det=100, iou_threshold=IOU, score_floor=0.05, dtype=dtype).eval()
    return export(det, path)


def above(out: dict, b: int, threshold: float):
    keep = out["scores"][b] > threshold
    return out["boxes"][b][keep], out["scores"][b][keep]


def test_anchors_match_ultralytics():
    from ultralytics.utils.tal import make_anchors as ul_make_anchors

    feats = [torch.zeros(1, 1, SIZE // s, SIZE // s) for s in (8, 16, 32)]
    ref_points, ref_strides = ul_make_anchors(feats, torch.tensor([8.0, 16.0, 32.0]), 0.5)
    points, strides = make_anchors([(SIZE // s, SIZE // s) for s in (8, 16, 32)], [8.0, 16.0, 32.0])
    assert torch.equal(points, ref_points) and torch.equal(strides, ref_strides)


def test_core_matches_package_head(model, images):
    """Decoded boxes and person scores equal the package's eval output [B, 4+nc, A] (xywh, sigmoid)."""
    x = to_float(images)
    with torch.no_grad():
        y = model(x)[0]
        boxes, scores = trace_core(model, SIZE, 0, torch.float32, "cpu")(x)
    assert y.shape == (2, 84, 2100) and boxes.shape == (2, 2100, 4) and scores.shape == (2, 2100)
    xy, wh = y[:, :2], y[:, 2:4]
    torch.testing.assert_close(boxes, torch.cat((xy - wh / 2, xy + wh / 2), 1).transpose(1, 2), atol=1e-3, rtol=0)
    p = y[:, 4:]
    torch.testing.assert_close(scores, torch.where(p[:, 0] >= p.max(1).values, p[:, 0], 0.0), atol=1e-6, rtol=0)


def clamped(y: torch.Tensor) -> torch.Tensor:
    """The package's [B, 4+nc, A] with each xywh box clamped to the input, as PersonDetector
    clamps candidates before NMS (Ultralytics' predict clips after NMS instead)."""
    from ultralytics.utils.ops import xywh2xyxy, xyxy2xywh

    boxes = xywh2xyxy(y[:, :4].transpose(1, 2)).clamp(0, SIZE)
    return torch.cat((xyxy2xywh(boxes).transpose(1, 2), y[:, 4:]), 1)


def test_matches_package_nms(model, images, tmp_path):
    """The exported file vs Ultralytics' forward + its own NMS (classes=[0]) on the same frames."""
    from ultralytics.utils.nms import non_max_suppression

    det = exported(model, tmp_path / "det.pt")
    with torch.no_grad():
        ref = non_max_suppression(clamped(model(to_float(images))[0]), conf_thres=THRESHOLD, iou_thres=IOU,
                                  classes=[0], max_det=100)
        out = det(images)
    total = 0
    for b in range(2):
        boxes, scores = above(out, b, THRESHOLD)
        assert len(boxes) == len(ref[b]), f"frame {b}: {len(boxes)} boxes, the package {len(ref[b])}"
        assert (ref[b][:, 5] == 0).all()
        assert ref[b][:, 4].unique().numel() == len(ref[b]), "tied scores: NMS order would be arbitrary"
        iou = box_iou(boxes, ref[b][:, :4]).diagonal()
        assert (iou >= 0.99).all(), iou.min()
        torch.testing.assert_close(scores, ref[b][:, 4], atol=1e-5, rtol=0)
        total += len(boxes)
    print(f"{total} boxes above {THRESHOLD} in 2 frames")
    assert total >= 6, f"only {total} boxes: the comparison is too easy"


def test_cli_export_loads_without_ultralytics_or_torchvision(tmp_path):
    out = tmp_path / "yolo11n-person.pt"
    export_detector.main(["--arch", "yolo", "--config", "yolo11n.yaml", "--input-size", str(SIZE), "--dtype", "fp32",
                          "--device", "cpu", "--max-det", "50", "--out", str(out)])
    script = r"""
import json, sys
sys.modules["ultralytics"] = None
sys.modules["torchvision"] = None
import torch
m = torch.jit.load(sys.argv[1])
x = torch.randint(0, 256, (3, 320, 320, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    out = m(x)
s = out["scores"]
print(json.dumps({"meta": json.loads(m.meta()),
                  "shapes": {k: list(v.shape) for k, v in out.items()},
                  "dtypes": {k: str(v.dtype) for k, v in out.items()},
                  "sorted": bool((s[:, :-1] >= s[:, 1:]).all()),
                  "padding_zero": bool((out["boxes"][s == 0] == 0).all())}))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = got["meta"]
    assert meta["contract"] == "person-detector/1"
    assert meta["input_size"] == SIZE
    assert meta["name"] == "yolo11n"
    # Ultralytics' own predict defaults travel with the file; the licence of its weights too.
    assert (meta["score_threshold"], meta["iou_threshold"]) == (0.25, 0.7)
    assert meta["license"].startswith("AGPL-3.0")
    assert got["shapes"] == {"boxes": [3, 50, 4], "scores": [3, 50]}
    assert got["dtypes"] == {"boxes": "torch.float32", "scores": "torch.float32"}
    assert got["sorted"] and got["padding_zero"]


def test_cli_export_from_a_checkpoint(tmp_path):
    """The --weights path on a checkpoint saved the way Ultralytics saves one (a pickled half-precision
    DetectionModel under "model", COCO names): loaded offline, person found by name, same network."""
    from ultralytics.nn.tasks import DetectionModel

    from models.yolo import randomize

    net = DetectionModel("yolov8n.yaml", verbose=False)
    randomize(net, seed=1)
    net.names = {0: "person", 1: "bicycle", 2: "car"} | {i: f"class{i}" for i in range(3, 80)}
    ckpt = tmp_path / "yolov8n-test.pt"
    torch.save({"model": net.half(), "ema": None, "train_args": {}}, ckpt)
    out = tmp_path / "from-ckpt.pt"
    export_detector.main(["--arch", "yolo", "--weights", str(ckpt), "--input-size", str(SIZE), "--no-check",
                          "--out", str(out)])
    det = torch.jit.load(str(out))
    meta = json.loads(det.meta())
    assert meta["name"] == "yolov8n-test" and meta["weights"] == "yolov8n-test.pt" and meta["class_id"] == 0
    reference = load_yolo(weights=ckpt)
    assert reference.names[0] == "person"
    x = to_float(frames())
    with torch.no_grad():
        torch.testing.assert_close(det.core(x), trace_core(reference, SIZE, 0, torch.float32, "cpu")(x))


def test_bf16_close_to_fp32(images, tmp_path):
    m = load_yolo(config="yolo11n.yaml", seed=0)
    raise_person_bias(m, images)
    fp32 = exported(m, tmp_path / "fp32.pt")
    bf16 = exported(m, tmp_path / "bf16.pt", dtype=torch.bfloat16)
    assert json.loads(bf16.meta())["input_size"] == SIZE
    with torch.no_grad():
        a, b = fp32(images), bf16(images)
    assert b["boxes"].dtype == torch.float32 and b["scores"].dtype == torch.float32
    checked = 0
    for i in range(2):
        top, _ = above(a, i, THRESHOLD)
        top = top[:5]
        cand, _ = above(b, i, THRESHOLD / 2)
        assert len(cand) > 0
        best = box_iou(top, cand).max(1).values
        assert (best >= 0.9).all(), best
        checked += len(top)
    assert checked >= 6


def test_refuses_other_heads_and_sizes():
    with pytest.raises(ValueError, match="Detect"):
        load_yolo(config="yolo11n-pose.yaml")
    m = load_yolo(config="yolo11n.yaml")
    with pytest.raises(ValueError, match="multiple"):
        YoloCore(m, 300)
    with pytest.raises(SystemExit):
        export_detector.parse_args(["--arch", "yolo", "--weights", "/nonexistent/yolo11m.pt", "--out", "x.pt"])
    base = ["--arch", "yolo", "--config", "yolo11n.yaml", "--out", "x.pt"]
    args = export_detector.parse_args(base + ["--score-threshold", "0.4", "--iou", "0.5"])
    assert (args.score_threshold, args.iou) == (0.4, 0.5)
    with pytest.raises(SystemExit):  # below the score floor: no box that low ever leaves the file
        export_detector.parse_args(base + ["--score-threshold", "0.01"])
    with pytest.raises(SystemExit):
        export_detector.parse_args(base + ["--iou", "0"])
