"""The OOM test model used by the worker's OOM-ladder test."""

import json

import pytest
import torch

from models import oom_model

from .conftest import make_crops


def test_oom_model_fails_above_its_limit_only(tmp_path, capsys):
    path = tmp_path / "oom-test.pt"
    oom_model.main(["--out", str(path), "--max-batch", "2"])
    assert "max batch 2" in capsys.readouterr().out
    model = torch.jit.load(str(path))
    meta = json.loads(model.meta())
    assert meta["name"] == "hmr2" and meta["input_size"] == [256, 256] and meta["max_batch"] == 2
    with torch.no_grad():
        for batch in (1, 2):
            assert model(make_crops(batch))["vertices"].shape == (batch, 6890, 3)
        message = r"CUDA out of memory\. Tried to allocate 2\.00 GiB \(simulated: batch 3 > max 2\)"
        with pytest.raises(Exception, match=message):
            model(make_crops(3))


def test_an_all_white_crop_never_fits():
    model = oom_model.make(max_batch=4)
    crops = make_crops(2)
    crops[1] = 255
    with torch.no_grad():
        with pytest.raises(Exception, match="all-white crop never fits"):
            model(crops)
        assert model(crops[:1])["pred_cam"].shape == (1, 3)
