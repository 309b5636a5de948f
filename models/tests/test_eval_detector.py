"""python -m models.eval_detector on a small COCO-format set of synthetic frames.

The frames are the demo's walking figures (models/figures.py, the pictures the committed tiny
detector was trained on), saved as PNG files with their boxes as "person" annotations. The tiny
detector must score high on them; a detector that finds nothing, or the right boxes scored
against the wrong frames, must score low; bad inputs get one clear line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("pycocotools")

from models.detector import PersonDetector, export  # noqa: E402
from models.eval_detector import main, match_frame  # noqa: E402
from models.figures import frame_seed, render_random  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "detector-tiny.pt"
SHAPES = [(480, 270), (270, 480), (400, 400), (600, 200), (320, 240)]
FRAMES = 30
PERSON_ID = 7


def write_set(folder: Path, shift: int = 0) -> Path:
    """FRAMES frames and an annotations file (person = category 7, beside a 'bicycle' one). With
    ``shift``, frame i's people are written for frame i + shift (a frame of the same shape)."""
    images, anns, boxes_of = [], [], []
    for i in range(FRAMES):
        w, h = SHAPES[i % len(SHAPES)]
        name = f"{i:04d}.png"
        if not (folder / name).is_file():
            img, boxes = render_random(w, h, frame_seed(21, i))
            Image.fromarray(img).save(folder / name)
        else:
            boxes = render_random(w, h, frame_seed(21, i))[1]
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        boxes_of.append(boxes)
    for i in range(FRAMES):
        for x1, y1, x2, y2 in boxes_of[i]:
            anns.append({"id": len(anns) + 1, "image_id": 100 + (i + shift) % FRAMES, "category_id": PERSON_ID,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})  # no area, no iscrowd: filled in
    anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 3, "bbox": [1, 1, 30, 20]})
    path = folder / f"annotations-{shift}.json"
    cats = [{"id": 3, "name": "bicycle"}, {"id": PERSON_ID, "name": "person"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    write_set(folder)
    return folder


def run(detector: Path, frames: Path, ann: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "m.json"
    main(["--detector", str(detector), "--coco", str(ann), "--images", str(frames), "--device", "cpu",
          "--threads", "2", "--json", str(out), *extra])
    return json.loads(out.read_text())


@pytest.mark.skipif(not TINY.is_file(), reason="models/detector-tiny.pt not trained yet")
def test_the_tiny_detector_finds_the_figures(frames, tmp_path, capsys):
    m = run(TINY, frames, frames / "annotations-0.json", tmp_path)
    assert m["frames"] == FRAMES and m["people"] >= 30, m
    assert m["score_threshold"] == 0.5 and m["score_threshold_source"].startswith("the file's")
    assert m["recall"] >= 0.9 and m["precision"] >= 0.85, m
    assert m["frames_with_person_found"] >= 0.9 and m["empty_frames_with_detection"] <= 0.2, m
    assert m["ap50"] >= 0.9 and m["ap"] >= 0.6, m
    out = capsys.readouterr().out
    assert "recall" in out and "AP@[.5:.95]" in out
    # A threshold above every score keeps nothing: recall 0, but AP (all scores) is unchanged.
    high = run(TINY, frames, frames / "annotations-0.json", tmp_path, "--score-threshold", "1.0")
    assert high["recall"] == 0 and high["precision"] is None and high["ap"] == m["ap"]


@pytest.mark.skipif(not TINY.is_file(), reason="models/detector-tiny.pt not trained yet")
def test_boxes_scored_against_the_wrong_frames_score_low(frames, tmp_path):
    shuffled = write_set(frames, shift=5)
    m = run(TINY, frames, shuffled, tmp_path)
    assert m["recall"] <= 0.3 and m["ap50"] <= 0.3, m


class Nothing(nn.Module):
    def forward(self, x: torch.Tensor):
        return torch.zeros(x.shape[0], 4, 4), torch.zeros(x.shape[0], 4)


def test_a_detector_that_finds_nothing_scores_zero(frames, tmp_path):
    path = tmp_path / "nothing.pt"
    export(PersonDetector(Nothing(), 64, "nothing", max_det=5, score_threshold=0.3), path)
    m = run(path, frames, frames / "annotations-0.json", tmp_path)
    assert m["score_threshold"] == 0.3
    assert m["recall"] == 0 and m["ap"] == 0 and m["ap50"] == 0 and m["frames_with_person_found"] == 0, m
    assert m["detections_all_scores"] == 0


def test_crowd_regions_and_matching():
    people = [([0.0, 0.0, 10.0, 20.0], False), ([50.0, 0.0, 10.0, 20.0], False), ([100.0, 0.0, 50.0, 50.0], True)]
    dets = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [50, 0, 60, 20], [110, 10, 120, 30], [200, 0, 210, 10]], dtype=float)
    scores = np.array([0.9, 0.95, 0.8, 0.7, 0.6])
    # The 0.95 box takes the first person, the 0.9 duplicate is a false positive, the box inside
    # the crowd region counts for nothing, the far one is a false positive.
    assert match_frame(dets, scores, people, 0.5) == (2, 2, 2)
    assert match_frame(dets[:0], scores[:0], people, 0.5) == (0, 0, 2)


def test_bad_inputs_are_told_in_one_line(frames, tmp_path, capsys):
    ann = frames / "annotations-0.json"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": [')
    no_person = tmp_path / "noperson.json"
    no_person.write_text(json.dumps({"images": [{"id": 1, "file_name": "0000.png"}], "annotations": [],
                                     "categories": [{"id": 1, "name": "car"}]}))
    missing_image = tmp_path / "missing.json"
    missing_image.write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.png"}], "annotations": [],
                                         "categories": [{"id": 1, "name": "person"}]}))
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"not torchscript")
    cases = [
        (["--detector", str(tmp_path / "absent.pt"), "--coco", str(ann)], "no such detector file"),
        (["--detector", str(TINY), "--coco", str(tmp_path / "absent.json")], "no such annotations file"),
        (["--detector", str(TINY), "--coco", str(bad_json)], "is not valid JSON"),
        (["--detector", str(TINY), "--coco", str(no_person)], "no category named 'person'"),
        (["--detector", str(TINY), "--coco", str(missing_image)], "are not under"),
        (["--detector", str(not_a_model), "--coco", str(ann)], "not a TorchScript file"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(args + ["--images", str(frames), "--device", "cpu"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err
