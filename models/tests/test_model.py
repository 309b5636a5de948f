"""The whole model: contract of forward/meta, TorchScript equality, dtypes."""

import json

import pytest
import torch

from models import __version__
from models.hmr2 import OUTPUTS, build

from .conftest import make_crops

# Tolerances of reduced precision against fp32 (tiny preset, backbone and head in the dtype,
# SMPL in fp32), in output units (metres for keypoints/vertices).
BF16_TOL = 1e-2
FP16_TOL = 2e-3


def test_outputs_have_the_contract_shapes_and_dtype(tiny):
    with torch.no_grad():
        out = tiny(make_crops(3))
    assert list(out) == list(OUTPUTS)
    for name, shape in OUTPUTS.items():
        assert list(out[name].shape) == [3 if d == "B" else d for d in shape], name
        assert out[name].dtype == torch.float32
        assert out[name].is_contiguous()
        assert torch.isfinite(out[name]).all()


@pytest.mark.parametrize("batch", range(1, 9))
def test_scripted_equals_eager(tiny, tiny_scripted, batch):
    crops = make_crops(batch, seed=batch)
    with torch.no_grad():
        eager, script = tiny(crops), tiny_scripted(crops)
    assert list(script) == list(eager)
    for name in eager:
        assert (eager[name] - script[name]).abs().max() <= 1e-5, name


def test_meta_json(tiny_scripted):
    meta = json.loads(tiny_scripted.meta())
    assert meta == {
        "name": "hmr2",
        "preset": "tiny",
        "version": __version__,
        "dtype": "fp32",
        "input_size": [256, 256],
        "input_format": "uint8 BHWC RGB",
        "outputs": OUTPUTS,
        "smpl": "synthetic",
        "weights": "random seed 0",
        "params": 271_773,
    }


def test_each_crop_is_processed_on_its_own(tiny):
    crops = make_crops(4)
    with torch.no_grad():
        together = tiny(crops)
        reversed_ = tiny(crops.flip(0))
        single = tiny(crops[2:3])
    for name in together:
        assert (together[name] - reversed_[name].flip(0)).abs().max() <= 1e-5
        assert (together[name][2:3] - single[name]).abs().max() <= 1e-5
    # ... and different crops give visibly different results (worker tests rely on it).
    assert (together["vertices"][0] - together["vertices"][1]).abs().max() > 1e-2


def test_only_the_central_192_columns_are_seen(tiny):
    crops = make_crops(2)
    edited = crops.clone()
    edited[:, :, :32] = 0
    edited[:, :, 224:] = 255
    changed = crops.clone()
    changed[:, :, 32] = 255 - changed[:, :, 32]
    with torch.no_grad():
        a, b, c = tiny(crops), tiny(edited), tiny(changed)
    assert torch.equal(a["vertices"], b["vertices"])
    assert not torch.equal(a["vertices"], c["vertices"])


def test_normalisation_is_imagenet_on_0_255(tiny):
    crops = make_crops(1)
    x = crops[:, :, 32:224].float().permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1) * 255
    with torch.no_grad():
        _, _, cam = tiny.smpl_head(tiny.backbone((x - mean) / std))
        out = tiny(crops)
    assert (out["pred_cam"] - cam).abs().max() < 1e-5


@pytest.mark.parametrize("bad", [torch.zeros(1, 256, 192, 3, dtype=torch.uint8), torch.zeros(1, 256, 256, 3)])
def test_wrong_input_is_refused(tiny_scripted, bad):
    with pytest.raises(Exception, match=r"crops must be uint8 \[B,256,256,3\] RGB"):
        tiny_scripted(bad)


@pytest.mark.parametrize("dtype,tol", [("bf16", BF16_TOL), ("fp16", FP16_TOL)])
def test_reduced_precision_stays_close_to_fp32(tiny, dtype, tol):
    model = build("tiny")
    model.set_dtype(dtype)
    assert model.backbone.pos_embed.dtype != torch.float32
    assert model.smpl_head.init_body_pose.dtype == torch.float32
    scripted = torch.jit.script(model)
    assert json.loads(scripted.meta())["dtype"] == dtype
    crops = make_crops(4)
    with torch.no_grad():
        ref, out = tiny(crops), scripted(crops)
    for name in ref:
        assert out[name].dtype == torch.float32
        diff = float((out[name] - ref[name]).abs().max())
        assert diff <= tol, f"{name}: {dtype} differs from fp32 by {diff}"
