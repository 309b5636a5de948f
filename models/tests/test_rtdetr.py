"""RT-DETR (transformers) exported to person-detector/1 (models/rtdetr.py, models/export_detector.py).

Offline: the architecture is built from a small config (``--config tiny``: ResNet-vd basic blocks
of 16-128 channels, width 32, 2 decoder layers, 50 queries, 8 COCO classes) with seeded random
weights (models.rtdetr.randomize), at a 320 input. Random weights give random scores, so the test
raises the person class's bias until 15 % of the queries score above the file's threshold (0.5)
on the test frames: the comparisons below then see dozens of boxes. The frames are drawings
letterboxed as the worker does it: gradients, rectangles and stick figures, four frame shapes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("transformers")

from models import export_detector, rtdetr  # noqa: E402
from models.detector import letterbox  # noqa: E402

SIZE = 320
SHAPES = ((480, 270), (300, 400), (640, 480), (350, 350))  # W × H of the frames before letterboxing
THRESHOLD = rtdetr.SCORE_THRESHOLD  # what meta() recommends; the comparisons use it
PERSON_SHARE = 0.15

# bf16 against the library's float32: for each of its person boxes above 0.5, the best-overlapping
# bf16 row above 0.25. Measured on these frames (seed 0, 28 boxes): IoU median 0.926, 10th
# percentile 0.845, smallest 0.194 (a query the bf16 encoder does not select); |Δscore| median
# 0.018, largest 0.168. Random weights have no margins (models.rtdetr.randomize); the bounds leave
# room for other CPUs' bf16 kernels and fail when the bf16 file computes something else (a wrong
# input scale, for one, gives IoUs near 0).
BF16_IOU_MEDIAN = 0.85
BF16_IOU_P10 = 0.6
BF16_DSCORE_MEDIAN = 0.04


def scene(w: int, h: int, seed: int) -> np.ndarray:
    """A uint8 h×w×3 drawing: a two-colour gradient with noise, four rectangles, three stick
    figures (head, trunk, arms, legs) of 25-60 % of the height."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (0.6 * xx / w + 0.4 * yy / h)[..., None]
    bg = rng.integers(0, 256, 3) * (1 - t) + rng.integers(0, 256, 3) * t + rng.normal(0, 8, (h, w, 3))
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = lambda: tuple(int(v) for v in rng.integers(0, 256, 3))  # noqa: E731
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        draw.rectangle([x0, y0, x0 + int(rng.integers(15, w // 3)), y0 + int(rng.integers(15, h // 3))], fill=colour())
    for _ in range(3):
        s = rng.uniform(0.25, 0.6) * h
        cx, top, c = rng.uniform(0.1, 0.9) * w, rng.uniform(0, h - s), colour()
        lw, r, hip = max(2, int(s / 14)), s / 10, top + 0.6 * s
        draw.ellipse([cx - r, top, cx + r, top + 2 * r], fill=c)
        draw.line([cx, top + 2 * r, cx, hip], fill=c, width=lw)
        draw.line([cx - s / 5, top + 0.3 * s, cx + s / 5, top + 0.35 * s], fill=c, width=lw)
        draw.line([cx, hip, cx - s / 6, top + s], fill=c, width=lw)
        draw.line([cx, hip, cx + s / 6, top + s], fill=c, width=lw)
    return np.asarray(img)


def frames(size: int = SIZE) -> torch.Tensor:
    """uint8 [4,S,S,3]: the drawings letterboxed to S (models.detector.letterbox, as the worker)."""
    return torch.stack([torch.as_tensor(letterbox(scene(w, h, i), size)[0]) for i, (w, h) in enumerate(SHAPES)])


def raise_person_bias(model, processor, images: torch.Tensor, share: float = PERSON_SHARE) -> None:
    """Shift the person (class 0) bias of the last class head so that ``share`` of the queries
    score above THRESHOLD as person on ``images``."""
    with torch.no_grad():
        logits = model(pixel_values=library_input(processor, images)).logits[..., 0]
        shift = float(np.log(THRESHOLD / (1 - THRESHOLD))) - float(logits.flatten().quantile(1 - share))
        model.model.decoder.class_embed[-1].bias[0] += shift + 0.01


def library_input(processor, images: torch.Tensor) -> torch.Tensor:
    s = images.shape[1]
    return processor(images=list(images.numpy()), size={"height": s, "width": s}, return_tensors="pt")["pixel_values"]


def library_persons(model, processor, images: torch.Tensor, threshold: float, dtype=torch.float32):
    """The library's answer per image: its processor, the model (in ``dtype``, on a copy), its
    ``post_process_object_detection`` (in float32, target size S×S), the person pairs (boxes clamped
    to the input, as the file clamps them), and the cut of its ranking (see below)."""
    import copy

    s = images.shape[1]
    net = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        out = net(pixel_values=library_input(processor, images).to(dtype))
    out.logits, out.pred_boxes = out.logits.float(), out.pred_boxes.float()
    # post_process_object_detection ranks all Q×C (query, class) pairs and keeps the best Q before
    # thresholding: a person pair survives only if it scores at least the Q-th best pair of any
    # class ("cut"). The file scores each query as a person whatever its other classes score, so its
    # rows that the library reports are exactly those scoring ≥ the cut (and above the threshold).
    q = out.logits.shape[1]
    cut = out.logits.sigmoid().flatten(1).topk(q, dim=1).values[:, -1]
    results = processor.post_process_object_detection(out, threshold=threshold, target_sizes=[(s, s)] * len(images))
    persons = []
    for r in results:
        keep = r["labels"] == 0
        sc, bx = r["scores"][keep], r["boxes"][keep].clamp(0, s)
        order = sc.argsort(descending=True)
        persons.append((bx[order], sc[order]))
    return persons, cut


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return frames()


@pytest.fixture(scope="module")
def processor():
    return rtdetr.load_processor()


@pytest.fixture(scope="module")
def model(processor, images):
    m = rtdetr.load_rtdetr(config="tiny", seed=0)
    raise_person_bias(m, processor, images)
    return m


@pytest.fixture(scope="module")
def fp32_file(model, processor, tmp_path_factory):
    det = rtdetr.build_detector(model, processor, SIZE, 0, torch.float32, "cpu", "tiny-fp32", max_det=40)
    return rtdetr.export(det, tmp_path_factory.mktemp("fp32") / "det.pt")


@pytest.fixture(scope="module")
def bf16_file(model, processor, tmp_path_factory):
    det = rtdetr.build_detector(model, processor, SIZE, 0, torch.bfloat16, "cpu", "tiny-bf16", max_det=40)
    return rtdetr.export(det, tmp_path_factory.mktemp("bf16") / "det.pt")


def rows_above(out: dict, i: int, threshold: float):
    keep = out["scores"][i] > threshold
    return out["boxes"][i][keep], out["scores"][i][keep]


def test_processor_defaults_are_what_the_file_does(processor):
    """The installed RTDetrImageProcessor resizes to 640×640 and rescales by 1/255 without mean/std;
    the file's preprocessing gives its pixel_values bit for bit on letterboxed frames at the
    default 640 and at 320 (processor size set to S: resizing S×S to S×S is the identity)."""
    assert processor.do_resize and processor.size["height"] == 640 and processor.size["width"] == 640
    assert processor.do_rescale and processor.rescale_factor == pytest.approx(1 / 255, rel=1e-15)
    assert not processor.do_normalize
    for size in (640, 320):
        images = frames(size)[:2]
        det = rtdetr.RTDetrPersonDetector(torch.nn.Identity(), size, "pre")
        if size == 640:
            ref = processor(images=list(images.numpy()), return_tensors="pt")["pixel_values"]
        else:
            ref = library_input(processor, images)
        assert torch.equal(det.preprocess(images), ref)
    # A checkpoint whose processor normalises: the file follows it (mean/std fused as the library does).
    norm = rtdetr.offline_transformers().RTDetrImageProcessor(do_normalize=True)
    images = frames(320)[:2]
    det = rtdetr.RTDetrPersonDetector(torch.nn.Identity(), 320, "pre", mean=norm.image_mean, std=norm.image_std)
    torch.testing.assert_close(det.preprocess(images), library_input(norm, images), atol=1e-5, rtol=0)


def test_fp32_matches_library(model, processor, images, fp32_file):
    """The exported file vs the library's processor + model + post_process_object_detection on the
    same letterboxed frames: the same person boxes one to one (IoU ≥ 0.99), scores within 1e-4."""
    with torch.no_grad():
        out = fp32_file(images)
    ref, cut = library_persons(model, processor, images, THRESHOLD)
    total = cut_off = 0
    for i in range(len(images)):
        boxes, scores = rows_above(out, i, THRESHOLD)
        reported = scores >= cut[i]
        cut_off += int((~reported).sum())
        boxes, scores = boxes[reported], scores[reported]
        ref_boxes, ref_scores = ref[i]
        assert len(boxes) == len(ref_boxes), f"frame {i}: {len(boxes)} boxes, the library {len(ref_boxes)}"
        assert ref_scores.unique().numel() == len(ref_scores), "tied scores: the order would be arbitrary"
        # Both sorted by score, highest first: row k is the library's k-th person.
        iou = rtdetr.box_iou(boxes, ref_boxes).diagonal()
        assert (iou >= 0.99).all(), iou.min()
        torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
        total += len(boxes)
    print(f"{total} person boxes above {THRESHOLD} in {len(images)} frames; {cut_off} beyond the library's top-Q cut")
    assert total >= 12, f"only {total} boxes: the comparison is too easy"


def test_batch_of_one_equals_batch_of_four(images, fp32_file):
    with torch.no_grad():
        batch = fp32_file(images)
        for i in (0, 3):
            one = fp32_file(images[i:i + 1])
            torch.testing.assert_close(one["scores"][0], batch["scores"][i], atol=1e-5, rtol=0)
            torch.testing.assert_close(one["boxes"][0], batch["boxes"][i], atol=1e-3, rtol=0)


def test_bf16(model, processor, images, bf16_file):
    """bf16 (weights and compute): the file equals the library's own bf16 model (post-processed in
    float32); against the library in float32 it stays within the measured bounds above."""
    with torch.no_grad():
        out = bf16_file(images)
    assert out["boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert json.loads(bf16_file.meta())["dtype"] == "bfloat16"
    ref16, cut16 = library_persons(model, processor, images, THRESHOLD, dtype=torch.bfloat16)
    for i in range(len(images)):
        boxes, scores = rows_above(out, i, THRESHOLD)
        boxes, scores = boxes[scores >= cut16[i]], scores[scores >= cut16[i]]
        assert len(boxes) == len(ref16[i][0])
        assert (rtdetr.box_iou(boxes, ref16[i][0]).diagonal() >= 0.99).all()
        torch.testing.assert_close(scores, ref16[i][1], atol=1e-4, rtol=0)

    ref32, _ = library_persons(model, processor, images, THRESHOLD)
    ious, dscores = [], []
    for i in range(len(images)):
        ref_boxes, ref_scores = ref32[i]
        cand_boxes, cand_scores = rows_above(out, i, THRESHOLD / 2)
        assert len(ref_boxes) == 0 or len(cand_boxes) > 0
        if len(ref_boxes):
            best, j = rtdetr.box_iou(ref_boxes, cand_boxes).max(1)
            ious += best.tolist()
            dscores += (ref_scores - cand_scores[j]).abs().tolist()
    ious, dscores = torch.tensor(ious), torch.tensor(dscores)
    print(f"bf16 vs float32, {len(ious)} boxes: IoU median {ious.median():.3f}, 10th percentile "
          f"{ious.quantile(0.1):.3f}, min {ious.min():.3f}; |Δscore| median {dscores.median():.4f}, max {dscores.max():.3f}")
    assert len(ious) >= 12
    assert ious.median() >= BF16_IOU_MEDIAN and ious.quantile(0.1) >= BF16_IOU_P10
    assert dscores.median() <= BF16_DSCORE_MEDIAN


LOAD_BLOCKED = r"""
import json, sys
for name in ("transformers", "huggingface_hub", "torchvision", "timm"):
    sys.modules[name] = None
import torch
m = torch.jit.load(sys.argv[1])
g = torch.Generator().manual_seed(0)
report = {"meta": json.loads(m.meta())}
for batch in (1, 3):
    x = torch.randint(0, 256, (batch, 320, 320, 3), dtype=torch.uint8, generator=g)
    x[:, 200:] = 114  # a letterbox band
    with torch.no_grad():
        out = m(x)
    s, b = out["scores"], out["boxes"]
    report[batch] = {"shapes": {k: list(v.shape) for k, v in out.items()},
                     "dtypes": {k: str(v.dtype) for k, v in out.items()},
                     "sorted": bool((s[:, :-1] >= s[:, 1:]).all()),
                     "zero_rows": bool(((s == 0) == (b == 0).all(-1)).all()),
                     "used": (s > 0).sum(1).tolist(),
                     "inside": bool(((b >= 0) & (b <= 320)).all() and (b[..., 2:] >= b[..., :2]).all())}
try:
    m(torch.zeros(1, 256, 256, 3, dtype=torch.uint8))
    report["wrong_size"] = "accepted"
except Exception as e:
    report["wrong_size"] = str(e)
print(json.dumps(report))
"""


def test_cli_export_runs_without_transformers(tmp_path):
    """The CLI's file: meta keys, and outputs for batches of 1 and 3 in an interpreter where
    transformers (and the Hub client, torchvision) cannot be imported. --max-det 60 is more than
    the 50 queries: rows past them are zero."""
    out = tmp_path / "rtdetr-tiny.pt"
    export_detector.main(["--arch", "rtdetr", "--config", "tiny", "--input-size", str(SIZE), "--dtype", "fp32",
                          "--device", "cpu", "--max-det", "60", "--out", str(out)])
    proc = subprocess.run([sys.executable, "-c", LOAD_BLOCKED, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = got["meta"]
    assert meta["contract"] == "person-detector/1"
    assert meta["name"] == "tiny" and meta["input_size"] == SIZE and meta["dtype"] == "float32"
    assert meta["max_det"] == 60 and meta["classes"] == ["person"]
    assert meta["license"].startswith("Apache-2.0 (RT-DETR")
    assert meta["score_threshold"] == 0.5 and meta["iou_threshold"] is None
    assert meta["num_queries"] == 50 and meta["class_id"] == 0
    for batch in ("1", "3"):
        r = got[batch]
        assert r["shapes"] == {"boxes": [int(batch), 60, 4], "scores": [int(batch), 60]}
        assert r["dtypes"] == {"boxes": "torch.float32", "scores": "torch.float32"}
        assert r["sorted"] and r["zero_rows"] and r["inside"]
        assert all(0 < n <= 50 for n in r["used"]), r["used"]
    assert "expected images [B,320,320,3]" in got["wrong_size"]


def test_exports_a_saved_checkpoint_and_finds_person_by_name(model, processor, images, tmp_path):
    """--weights on a folder written by save_pretrained (config.json, model.safetensors,
    preprocessor_config.json), with "person" at index 2 of id2label: loaded offline, the person
    class found by name, the same network."""
    import copy

    names = ["bicycle", "car", "person", "motorcycle", "airplane", "bus", "train", "truck"]
    saved = copy.deepcopy(model)
    saved.config.id2label = dict(enumerate(names))
    saved.config.label2id = {n: i for i, n in enumerate(names)}
    folder = tmp_path / "rtdetr_tiny"
    saved.save_pretrained(folder)
    processor.save_pretrained(folder)
    out = tmp_path / "from-weights.pt"
    export_detector.main(["--arch", "rtdetr", "--weights", str(folder), "--input-size", str(SIZE), "--no-check",
                          "--out", str(out)])
    det = torch.jit.load(str(out))
    meta = json.loads(det.meta())
    assert meta["class_id"] == 2 and meta["name"] == "rtdetr_tiny" and meta["weights"] == "rtdetr_tiny"
    reference = rtdetr.build_detector(model, processor, SIZE, 2, torch.float32, "cpu", "ref")
    with torch.no_grad():
        a, b = det(images), reference(images)
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)


def test_bad_weights_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_detector.parse_args(["--arch", "rtdetr", "--weights", str(tmp_path / "nowhere"), "--out", "x.pt"])
    err = capsys.readouterr().err
    assert "no such weights folder" in err and "models/README.md" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        export_detector.parse_args(["--arch", "rtdetr", "--weights", str(tmp_path / "empty"), "--out", "x.pt"])
    assert "has no config.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such weights folder"):
        rtdetr.load_rtdetr(weights=tmp_path / "nowhere")
    # A folder with a config but no weights file: the library's error, said as ours.
    broken = tmp_path / "broken"
    broken.mkdir()
    rtdetr.tiny_config().save_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="cannot load RT-DETR weights"):
        rtdetr.load_rtdetr(weights=broken)


def test_hub_cache_folder_resolves_to_its_snapshot(tmp_path):
    snap = tmp_path / "models--PekingU--rtdetr_r50vd" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert rtdetr.resolve_weights(tmp_path / "models--PekingU--rtdetr_r50vd") == snap
    assert rtdetr.resolve_weights(snap) == snap


def test_class_resolution():
    cfg = rtdetr.tiny_config()
    assert rtdetr.resolve_class(cfg, None, random_weights=False) == 0
    assert rtdetr.resolve_class(cfg, 3, random_weights=False) == 3
    with pytest.raises(ValueError, match="out of range"):
        rtdetr.resolve_class(cfg, 8, random_weights=False)
    cfg.id2label = {i: f"thing{i}" for i in range(8)}
    with pytest.raises(ValueError, match="--class-id"):
        rtdetr.resolve_class(cfg, None, random_weights=False)
    assert rtdetr.resolve_class(cfg, None, random_weights=True) == 0


def test_cli_argument_checks(capsys):
    args = export_detector.parse_args(["--arch", "rtdetr", "--config", "tiny", "--out", "x.pt"])
    assert args.input_size == 640 and args.max_det == 100
    for bad, says in ((["--input-size", "300"], "multiple of 32"), (["--score-threshold", "1.5"], "(0, 1)"),
                      (["--score-threshold", "0.3", "--score-floor", "0.4"], "not above the score threshold"),
                      (["--max-det", "0"], "--max-det")):
        with pytest.raises(SystemExit):
            export_detector.parse_args(["--arch", "rtdetr", "--config", "tiny", "--out", "x.pt", *bad])
        assert says in capsys.readouterr().err
