"""The batched post-processing of models/detector.py against torchvision.ops.nms, image by image.

`postprocess` (and the `nms` of one image built on it) must keep exactly the boxes greedy NMS
keeps: random sets, sets built so that greedy NMS and "fast NMS" (one matrix step) disagree,
tied scores, IoU exactly at the threshold, empty and all-suppressed images, and batches whose
images have very different numbers of candidates. The reference for a whole file is the old
per-image post-processing (filter, the best pre_nms, NMS, the best max_det, zero padding) with
torchvision's NMS inside."""

import json
from typing import Tuple

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")

from models.detector import (  # noqa: E402
    PersonDetector, batched_nms, export, f32_threshold, greedy_keep, nms, pairwise_iou, postprocess,
    suppression_matrix,
)

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


def random_boxes(g: torch.Generator, n: int, extent: float = 200.0, side: float = 80.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * side + 1
    return torch.cat([xy, xy + wh], 1)


def chain(n: int, step: float = 6.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """n boxes 20×40 in a row, each `step` px right of the previous one, scores falling along the
    row: each overlaps its next few neighbours, so whether a box is kept depends on the box before
    it being suppressed, all along the row."""
    x = torch.arange(n, dtype=torch.float32) * step
    boxes = torch.stack([x, torch.zeros(n), x + 20, torch.full((n,), 40.0)], 1)
    return boxes, torch.linspace(0.99, 0.1, n)


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list:
    """One matrix step: drop a box overlapping any higher-scoring box, kept or not."""
    order = torch.sort(scores, descending=True, stable=True)[1]
    over = torchvision.ops.box_iou(boxes[order], boxes[order]) > thr
    suppressed = torch.triu(over, 1).any(0)
    return order[~suppressed].tolist()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(6))
def test_nms_of_one_image_is_torchvision(seed, device):
    g = torch.Generator().manual_seed(100 + seed)
    for case in range(25):
        n = int(torch.randint(0, 500, (1,), generator=g))
        boxes = random_boxes(g, n)
        if case % 3 == 0:  # few distinct scores: many ties
            scores = torch.randint(0, 6, (n,), generator=g).float() / 6
        else:
            scores = torch.rand(n, generator=g)
        thr = [0.3, 0.45, 0.5, 0.7, 0.1, 0.9][case % 6]
        want = torchvision.ops.nms(boxes, scores, thr).tolist()
        assert nms(boxes.to(device), scores.to(device), thr).tolist() == want, (seed, case, n, thr)


@pytest.mark.parametrize("device", DEVICES)
def test_chains_where_fast_nms_is_wrong(device):
    scripted = torch.jit.script(nms)
    for n, step, thr in [(2, 6.0, 0.45), (40, 6.0, 0.45), (300, 4.0, 0.5), (300, 2.0, 0.7), (500, 1.0, 0.45)]:
        boxes, scores = chain(n, step)
        want = torchvision.ops.nms(boxes, scores, thr).tolist()
        if n > 2:
            assert fast_nms(boxes, scores, thr) != want, "the case must separate greedy from fast NMS"
        assert scripted(boxes.to(device), scores.to(device), thr).tolist() == want
    # Shuffled input order, the same chain: the same boxes kept.
    boxes, scores = chain(120, 3.0)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    want = torchvision.ops.nms(boxes[perm], scores[perm], 0.45).tolist()
    assert nms(boxes[perm].to(device), scores[perm].to(device), 0.45).tolist() == want


def test_ties_identical_boxes_and_thresholds_exactly_met():
    # Ten identical boxes with the same score: the first index is kept, the rest suppressed.
    boxes = torch.tensor([[10.0, 10.0, 50.0, 90.0]]).repeat(10, 1)
    scores = torch.full((10,), 0.8)
    assert nms(boxes, scores, 0.5).tolist() == [0] == torchvision.ops.nms(boxes, scores, 0.5).tolist()
    # IoU exactly 0.5 (inter 1, union 2) is not above 0.5: both kept.
    pair = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    two = torch.tensor([0.9, 0.8])
    assert nms(pair, two, 0.5).tolist() == [0, 1] == torchvision.ops.nms(pair, two, 0.5).tolist()
    # IoU 3/10 in float32 is 0.30000001 > 0.3: torchvision compares in double and suppresses; a
    # plain float32 comparison with 0.3 would not.
    pair = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    assert torchvision.ops.nms(pair, two, 0.3).tolist() == [0]
    assert nms(pair, two, 0.3).tolist() == [0]
    assert f32_threshold(0.3) < 0.3 and f32_threshold(0.5) == 0.5
    # Empty input, and a threshold of 1 that suppresses nothing (IoU 1 is not above 1).
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(boxes, scores, 1.0).tolist() == list(range(10))


def test_greedy_keep_ignores_rows_that_do_not_take_part():
    boxes, _ = chain(6, 6.0)  # sorted by score already
    valid = torch.tensor([[False, True, True, True, True, True]])
    keep = greedy_keep(boxes[None], valid, 0.45)[0]
    # Row 0 is not valid: it neither stays nor suppresses row 1.
    want = torchvision.ops.nms(boxes[1:], torch.linspace(1, 0.5, 5), 0.45) + 1
    assert keep.nonzero().flatten().tolist() == want.tolist()


def test_slices_of_images_and_bands_of_rows_equal_one_pass():
    g = torch.Generator().manual_seed(7)
    boxes = torch.stack([random_boxes(g, 150) for _ in range(5)])
    order = torch.sort(torch.rand(5, 150, generator=g), dim=1, descending=True)[1]
    boxes = boxes.gather(1, order[..., None].expand(5, 150, 4))
    valid = torch.rand(5, 150, generator=g) > 0.2
    whole = batched_nms(boxes, valid, 0.45)
    # 150² elements per image: one image a slice, then two.
    assert torch.equal(batched_nms(boxes, valid, 0.45, chunk_elements=150 * 150), whole)
    assert torch.equal(batched_nms(boxes, valid, 0.45, chunk_elements=2 * 150 * 150), whole)
    assert torch.equal(pairwise_iou(boxes[:1])[0], torchvision.ops.box_iou(boxes[0], boxes[0]))
    # On a CPU the matrix is built in bands of rows: 32-row bands (the last one short), or one pass.
    whole = suppression_matrix(boxes, 0.45, band_elements=1 << 30)
    assert torch.equal(suppression_matrix(boxes, 0.45, band_elements=1), whole)
    assert torch.equal(suppression_matrix(boxes, 0.45, band_elements=5 * 150 * 70), whole)
    assert torch.equal(whole, torch.triu(pairwise_iou(boxes) > f32_threshold(0.45), 1).float())


def old_postprocess(boxes, scores, size, floor, pre_nms, thr, max_det):
    """The file's post-processing before it was batched, image by image, with torchvision's NMS
    (ties in candidate order)."""
    boxes = boxes.float().clamp(0.0, float(size))
    scores = scores.float()
    b = scores.shape[0]
    out_b = torch.zeros(b, max_det, 4)
    out_s = torch.zeros(b, max_det)
    for i in range(b):
        sc, bx = scores[i], boxes[i]
        sure = (sc >= floor) & (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        sc, bx = sc[sure], bx[sure]
        top = torch.sort(sc, descending=True, stable=True)[1][:pre_nms]
        sc, bx = sc[top], bx[top]
        keep = torchvision.ops.nms(bx, sc, thr)[:max_det]
        out_b[i, : len(keep)] = bx[keep]
        out_s[i, : len(keep)] = sc[keep]
    return out_b, out_s


def raw_batch(g: torch.Generator, counts, size: int = 256, ties: bool = False):
    """Raw candidates of len(counts) images, N = max(counts) rows each; image i has counts[i] real
    candidates (some crossing the border, some empty once clamped, some under the floor, a few
    NaN), the other rows score 0."""
    n = max(max(counts), 1)
    boxes = torch.zeros(len(counts), n, 4)
    scores = torch.zeros(len(counts), n)
    for i, c in enumerate(counts):
        bx = random_boxes(g, c, extent=size + 40, side=120) - 20
        if c > 4:
            bx[0] = torch.tensor([-30.0, 10.0, -5.0, 50.0])  # left of the input: empty once clamped
            bx[1] = torch.tensor([40.0, 40.0, 40.0, 90.0])  # zero width
        sc = (torch.randint(1, 8, (c,), generator=g).float() / 8) if ties else torch.rand(c, generator=g)
        if c > 6:
            sc[2] = float("nan")
        boxes[i, :c], scores[i, :c] = bx, sc
    return boxes, scores


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ties", [False, True])
def test_postprocess_equals_the_old_per_image_loop(device, ties):
    g = torch.Generator().manual_seed(11 + ties)
    scripted = torch.jit.script(postprocess)
    cases = [
        ([0], 256, 0.05, 1000, 0.45, 10),
        ([0, 0, 0], 256, 0.05, 1000, 0.45, 10),
        ([300, 0, 7, 1, 120], 256, 0.05, 1000, 0.45, 20),  # different counts, one empty
        ([400, 400], 256, 0.3, 50, 0.7, 100),  # pre_nms cuts, max_det above what is left
        ([200, 3, 90], 256, 0.0, 1000, 0.5, 5),  # max_det cuts
        ([60], 256, 0.99, 1000, 0.45, 10),  # almost nothing above the floor
    ]
    for counts, size, floor, pre_nms, thr, k in cases:
        boxes, scores = raw_batch(g, counts, size, ties)
        want_b, want_s = old_postprocess(boxes, scores, size, floor, pre_nms, thr, k)
        args = (boxes.to(device), scores.to(device), size, floor, pre_nms, thr, k)
        for fn in (postprocess, scripted):
            got_b, got_s = fn(*args)
            assert got_b.dtype == torch.float32 and got_s.dtype == torch.float32
            assert got_b.shape == (len(counts), k, 4) and got_s.shape == (len(counts), k)
            assert torch.equal(got_s.cpu(), want_s), (counts, floor, pre_nms, thr, k)
            assert torch.equal(got_b.cpu(), want_b), (counts, floor, pre_nms, thr, k)


def test_all_suppressed_but_one_per_image_and_nothing_above_the_floor():
    box = torch.tensor([20.0, 20.0, 80.0, 200.0])
    boxes = box.repeat(3, 50, 1) + torch.rand(3, 50, 4, generator=torch.Generator().manual_seed(1))
    scores = torch.linspace(0.9, 0.5, 50).repeat(3, 1)
    scores[2] = 0.01
    out_b, out_s = postprocess(boxes, scores, 256, 0.05, 1000, 0.45, 4)
    assert out_s[:2, 0].tolist() == pytest.approx([0.9, 0.9]) and (out_s[:2, 1:] == 0).all()
    assert torch.equal(out_b[:2, 0], boxes[:2, 0]) and (out_b[:, 1:] == 0).all()
    assert (out_s[2] == 0).all() and (out_b[2] == 0).all()


class FixedCandidates(nn.Module):
    """A core that returns stored raw candidates for the first B images, whatever the pixels."""

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor):
        super().__init__()
        self.register_buffer("boxes", boxes)
        self.register_buffer("scores", scores)

    def forward(self, x: torch.Tensor):
        b = x.shape[0]
        return self.boxes[:b], self.scores[:b]


def test_exported_file_equals_the_old_per_image_semantics(tmp_path):
    g = torch.Generator().manual_seed(5)
    boxes, scores = raw_batch(g, [500, 0, 40, 250, 1, 320], 320)
    det = PersonDetector(FixedCandidates(boxes, scores), 320, "fixed", max_det=30, iou_threshold=0.6,
                         score_floor=0.1, score_threshold=0.35)
    loaded = export(det, tmp_path / "fixed.pt")
    meta = json.loads(loaded.meta())
    assert meta["score_threshold"] == 0.35 and meta["iou_threshold"] == 0.6
    images = torch.zeros(6, 320, 320, 3, dtype=torch.uint8)
    out = loaded(images)
    want_b, want_s = old_postprocess(boxes, scores, 320, 0.1, 1000, 0.6, 30)
    assert torch.equal(out["scores"], want_s) and torch.equal(out["boxes"], want_b)
    assert (out["scores"] > 0).sum(1).tolist() == [int((want_s[i] > 0).sum()) for i in range(6)]
    # A batch of the first three gives the same rows for them.
    part = loaded(images[:3])
    assert torch.equal(part["scores"], want_s[:3]) and torch.equal(part["boxes"], want_b[:3])


def test_thresholds_are_checked():
    core = FixedCandidates(torch.zeros(1, 1, 4), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="score_floor"):
        PersonDetector(core, 64, "x", score_floor=0.3, score_threshold=0.2)
    with pytest.raises(ValueError, match="iou_threshold"):
        PersonDetector(core, 64, "x", iou_threshold=0.0)
