"""The person-detector contract (models/detector.py) and the committed tiny detector.

Offline and fast: no tools binary, no frames on disk. Accuracy on fresh synthetic frames is
checked end to end in Rust (the worker with `models/detector-tiny.pt` on `render_random`
frames) and by `python -m models.train_detector --evaluate`.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.detector import CONTRACT, PAD_VALUE, PersonDetector, export, letterbox, nms

TINY = Path(__file__).resolve().parents[1] / "detector-tiny.pt"


@pytest.mark.parametrize(
    "w,h,size",
    [(1280, 720, 256), (720, 1280, 256), (1000, 333, 320), (333, 1000, 256), (257, 255, 256), (100, 50, 256), (64, 64, 64)],
)
def test_letterbox_geometry(w, h, size):
    rng = np.random.default_rng(w * h)
    # Pure white picture: every resized pixel stays 255, every padding pixel is 114.
    img = np.full((h, w, 3), 255, np.uint8)
    out, r = letterbox(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert r == pytest.approx(size / max(w, h))
    nw, nh = int(np.floor(w * r + 0.5)), int(np.floor(h * r + 0.5))
    assert max(nw, nh) == size
    assert (out[:nh, :nw] == 255).all(), "the picture sits at the top-left"
    assert (out[nh:] == PAD_VALUE).all() and (out[:, nw:] == PAD_VALUE).all(), "the rest is grey 114"
    # A random picture lands unchanged in its corner when it already has the size.
    if (w, h) == (size, size):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert (letterbox(img, size)[0] == img).all()


def test_letterbox_is_bilinear_resize():
    # A horizontal ramp stays a ramp: the resize interpolates, it does not pick pixels.
    img = np.repeat(np.repeat(np.linspace(0, 255, 512)[None, :, None], 256, 0), 3, 2).astype(np.uint8)
    out, r = letterbox(img, 128)
    assert r == 0.25
    row = out[10, :128, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] < 5 and row[-1] > 250
    with pytest.raises(ValueError):
        letterbox(img.astype(np.float32), 128)


def nms_reference(boxes, scores, thr):
    """Greedy NMS the obvious way: by score, ties in index order (as torchvision.ops.nms)."""
    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
        return inter / max(area(a) + area(b) - inter, 1e-9)

    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[j]) <= thr for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(8))
def test_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = [0, 1, 5, 40, 120, 300, 60, 10][seed]
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 80 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    thr = [0.45, 0.5, 0.3, 0.45, 0.7, 0.45, 0.1, 0.9][seed]
    got = nms(boxes, scores, thr)
    assert got.dtype == torch.int64
    assert got.tolist() == nms_reference(boxes.tolist(), scores.tolist(), thr)
    assert torch.jit.script(nms)(boxes, scores, thr).tolist() == got.tolist()


class DummyCore(nn.Module):
    """Four fixed candidate boxes; scores follow the mean brightness of the image."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer(
            "boxes",
            torch.tensor([[10.0, 10.0, 50.0, 90.0], [12.0, 11.0, 52.0, 90.0], [60.0, 5.0, 90.0, 60.0], [70.0, 70.0, 200.0, 80.0]]),
        )

    def forward(self, x: torch.Tensor):
        m = x.mean(dim=(1, 2, 3))
        scores = torch.stack([m * 0.9, m, m * 0.6, m * 0.01], 1)
        return self.boxes[None].expand(x.shape[0], 4, 4) * self.scale, scores


def check_outputs(out, batch, k):
    assert set(out) == {"boxes", "scores"}
    boxes, scores = out["boxes"], out["scores"]
    assert boxes.shape == (batch, k, 4) and scores.shape == (batch, k)
    assert boxes.dtype == torch.float32 and scores.dtype == torch.float32
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "rows sorted by score"
    assert ((scores == 0) == (boxes == 0).all(-1)).all(), "unused rows are zeros"


def test_person_detector_on_a_dummy_core(tmp_path):
    det = PersonDetector(DummyCore(), 96, "dummy", max_det=5, iou_threshold=0.45, score_floor=0.05)
    images = torch.stack([torch.full((96, 96, 3), 255, dtype=torch.uint8), torch.full((96, 96, 3), 51, dtype=torch.uint8)])
    out = det(images)
    check_outputs(out, 2, 5)
    # Image 0 (mean 1): box 1 (1.0) kept, box 0 (0.9) suppressed by it, box 2 (0.6) kept, box 3
    # (0.01) under the floor; boxes clamped to the input.
    assert out["scores"][0, :3].tolist() == pytest.approx([1.0, 0.6, 0.0])
    assert out["boxes"][0, 0].tolist() == [12.0, 11.0, 52.0, 90.0]
    assert out["boxes"][0, 1].tolist() == [60.0, 5.0, 90.0, 60.0]
    assert out["scores"][1, :2].tolist() == pytest.approx([0.2, 0.12])
    meta = json.loads(det.meta())
    assert meta["contract"] == CONTRACT == "person-detector/1"
    assert (meta["name"], meta["input_size"], meta["dtype"], meta["max_det"]) == ("dummy", 96, "float32", 5)
    with pytest.raises(RuntimeError, match="expected images"):
        det(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))

    loaded = export(det, tmp_path / "dummy.pt")
    again = loaded(images)
    check_outputs(again, 2, 5)
    assert torch.equal(again["boxes"], out["boxes"]) and torch.equal(again["scores"], out["scores"])
    assert json.loads(loaded.meta()) == meta
    traced = export(PersonDetector(DummyCore(), 96, "dummy", max_det=5), tmp_path / "traced.pt", trace_core=True)
    assert torch.equal(traced(images)["scores"], out["scores"])


def test_person_detector_keeps_at_most_max_det():
    class Many(nn.Module):
        def forward(self, x: torch.Tensor):
            xy = torch.arange(50, dtype=torch.float32) * 4
            boxes = torch.stack([xy, xy * 0, xy + 2, xy * 0 + 2], 1)  # disjoint
            return boxes[None].expand(x.shape[0], 50, 4), torch.linspace(0.1, 0.9, 50)[None].expand(x.shape[0], 50)

    det = torch.jit.script(PersonDetector(Many(), 256, "many", max_det=7))
    out = det(torch.zeros(3, 256, 256, 3, dtype=torch.uint8))
    check_outputs(out, 3, 7)
    assert (out["scores"] > 0).all() and out["scores"][0, 0] == pytest.approx(0.9)


@pytest.mark.skipif(not TINY.is_file(), reason="models/detector-tiny.pt not trained yet")
def test_committed_tiny_detector_loads_and_runs():
    assert TINY.stat().st_size < 5_000_000
    det = torch.jit.load(str(TINY))
    meta = json.loads(det.meta())
    assert meta["contract"] == "person-detector/1"
    s = meta["input_size"]
    images = torch.full((2, s, s, 3), PAD_VALUE, dtype=torch.uint8)
    out = det(images)
    check_outputs(out, 2, meta["max_det"])
    # Plain grey has nobody on it.
    assert (out["scores"] < 0.5).all()
    names = {n.kind() for n in det.inlined_graph.nodes()}
    assert not any(k.startswith("torchvision::") for k in names)


@pytest.mark.skipif(not TINY.is_file(), reason="models/detector-tiny.pt not trained yet")
def test_committed_tiny_detector_is_the_current_wrapper():
    """The committed file's weights in today's wrapper give the file's own boxes and scores and
    meta(): the file was re-exported after the last change to the post-processing or meta()
    (`python -m models.train_detector --rewrap models/detector-tiny.pt`)."""
    from models.train_detector import build_detector, check_frames, core_from_file

    det = torch.jit.load(str(TINY))
    meta = json.loads(det.meta())
    assert meta["synthetic_only"] is True
    assert meta["license"].startswith("MIT")
    assert (meta["score_threshold"], meta["iou_threshold"]) == (0.5, 0.45)
    fresh = build_detector(core_from_file(TINY))
    assert json.loads(fresh.meta()) == meta
    images = check_frames(count=8)
    with torch.no_grad():
        a, b = det(images), fresh(images)
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert int((a["scores"] >= 0.5).sum()) >= 5, "the check frames show figures the detector finds"
