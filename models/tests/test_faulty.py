"""The faulty test model used by the worker's broken-device tests."""

import json

import pytest
import torch

from models import faulty_model

from .conftest import make_crops


def marked(batch: int, index: int, value: int) -> torch.Tensor:
    crops = make_crops(batch)
    crops[index] = value
    return crops


def test_the_faulty_model_is_the_tiny_model_on_unmarked_crops(tmp_path, capsys):
    path = tmp_path / "faulty-test.pt"
    faulty_model.main(["--out", str(path)])
    assert "faulty test model" in capsys.readouterr().out
    model = torch.jit.load(str(path))
    meta = json.loads(model.meta())
    assert meta["name"] == "hmr2" and meta["input_size"] == [256, 256] and "255" in meta["faults"]
    with torch.no_grad():
        out = model(make_crops(3))
        assert out["pred_cam"].shape == (3, 3) and out["betas"].shape == (3, 10)
        assert out["vertices"].shape == (3, 6890, 3)
        zeros = model(torch.zeros(2, 256, 256, 3, dtype=torch.uint8))
        assert zeros["pred_cam"].shape == (2, 3) and zeros["pred_cam"].device.type == "cpu"


def test_an_all_white_crop_raises_a_device_error_not_an_oom():
    model = faulty_model.make()
    crops = marked(3, 2, 255)
    with torch.no_grad():
        with pytest.raises(Exception, match="illegal memory access") as e:
            model(crops)
        assert "out of memory" not in str(e.value).lower()
        assert model(crops[:2])["pred_cam"].shape == (2, 3), "unmarked crops still run"


def test_a_crop_of_254_gets_outputs_of_the_wrong_shapes():
    model = faulty_model.make()
    with torch.no_grad():
        out = model(marked(2, 0, 254))
        assert out["pred_cam"].shape == (2, 2)
        assert out["betas"].shape == (10,)


def test_a_crop_of_253_gets_an_output_without_data():
    model = faulty_model.make()
    with torch.no_grad():
        out = model(marked(2, 1, 253))
    assert out["pred_cam"].device.type == "meta"
    with pytest.raises(Exception, match="meta"):
        out["pred_cam"].to("cpu")


def test_a_crop_that_is_almost_one_value_is_not_marked():
    model = faulty_model.make()
    crops = torch.full((1, 256, 256, 3), 255, dtype=torch.uint8)
    crops[0, 0, 0, 0] = 254
    with torch.no_grad():
        assert model(crops)["pred_cam"].shape == (1, 3)
