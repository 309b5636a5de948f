"""The SMPL layer beside the model (models/smpl_export.py): ``<model>.smpl.pt``, contract
``smpl-layer/1``. The tracker feeds it smoothed parameters; fed a frame's own parameters it must
give back the model's own vertices and keypoints."""

import json
import pickle

import numpy as np
import pytest
import torch

from models import export, smpl_export
from models.hmr2 import build
from models.smpl import SMPL, synthetic_smpl

from .conftest import make_crops
from .test_loaders import DATA, smpl_dict

# Model and layer run the same fp32 SMPL code on the same arrays: on the CPU they agree exactly;
# the bound leaves room for another kernel order (metres; vertices are about 1 m from the origin).
ATOL = 1e-5

META_FIELDS = {"contract", "smpl", "source", "vertices", "keypoints", "dtype", "inputs", "outputs"}


def export_tiny(out, *extra):
    export.main(["--preset", "tiny", "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--no-check", *extra])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, layer) as the worker and the tracker load them, from one CLI export of the tiny
    preset."""
    out = tmp_path_factory.mktemp("smpl") / "hmr2-tiny.pt"
    export_tiny(out)
    assert export.smpl_path(out).is_file()
    return torch.jit.load(str(out), map_location="cpu"), torch.jit.load(str(export.smpl_path(out)), map_location="cpu")


def random_params(batch, seed=0):
    """Parameters unlike any model output: betas ~ N(0, 1), random proper rotations."""
    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(batch, 10, generator=g)
    q, r = torch.linalg.qr(torch.randn(batch, 24, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q[torch.linalg.det(q) < 0] *= -1
    rot = q.float()
    return betas, rot[:, :1].contiguous(), rot[:, 1:].contiguous()


def test_path_replaces_the_last_extension(tmp_path):
    assert export.smpl_path(tmp_path / "hmr2-tiny.pt") == tmp_path / "hmr2-tiny.smpl.pt"
    assert export.smpl_path(tmp_path / "hmr2.full.bf16.pt") == tmp_path / "hmr2.full.bf16.smpl.pt"
    assert export.smpl_path(tmp_path / "model") == tmp_path / "model.smpl.pt"
    assert smpl_export.smpl_path("x/hmr2-tiny.pt") == export.smpl_path("x/hmr2-tiny.pt")


def test_meta(exported):
    _, layer = exported
    meta = json.loads(layer.meta())
    assert set(meta) == META_FIELDS
    assert meta["contract"] == "smpl-layer/1"
    assert meta["smpl"] == "synthetic" and meta["source"] == "synthetic"
    assert meta["vertices"] == 6890 and meta["keypoints"] == 44 and meta["dtype"] == "float32"
    assert meta["inputs"] == {"betas": ["B", 10], "global_orient": ["B", 1, 3, 3], "body_pose": ["B", 23, 3, 3]}
    assert meta["outputs"] == [["vertices", ["B", 6890, 3]], ["keypoints_3d", ["B", 44, 3]]]


def test_layer_reproduces_the_models_vertices_and_keypoints(exported):
    model, layer = exported
    with torch.no_grad():
        out = model(make_crops(3))
        result = layer(out["betas"], out["global_orient"], out["body_pose"])
    assert isinstance(result, tuple) and len(result) == 2
    vertices, keypoints = result
    assert vertices.shape == (3, 6890, 3) and keypoints.shape == (3, 44, 3)
    assert vertices.dtype == keypoints.dtype == torch.float32
    assert vertices.device.type == keypoints.device.type == "cpu"
    assert vertices.is_contiguous() and keypoints.is_contiguous()
    torch.testing.assert_close(vertices, out["vertices"], rtol=0, atol=ATOL)
    torch.testing.assert_close(keypoints, out["keypoints_3d"], rtol=0, atol=ATOL)
    # The comparison means something: the three frames' meshes differ from each other.
    assert (out["vertices"][0] - out["vertices"][1]).abs().max() > 1e-3


def test_smoothed_parameters_give_a_different_mesh(exported):
    """What the tracker does: the model's parameters, changed (here: betas and the elbow),
    give the mesh of the changed parameters, not the model's."""
    model, layer = exported
    with torch.no_grad():
        out = model(make_crops(1))
        betas = out["betas"] + 0.5
        body_pose = out["body_pose"].clone()
        body_pose[:, 17] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # left elbow, 90°
        vertices, keypoints = layer(betas, out["global_orient"], body_pose)
        eager_v, eager_k = SMPL(synthetic_smpl())(betas, out["global_orient"], body_pose)
    torch.testing.assert_close(vertices, eager_v, rtol=0, atol=ATOL)
    torch.testing.assert_close(keypoints, eager_k, rtol=0, atol=ATOL)
    assert (vertices - out["vertices"]).abs().max() > 1e-2


def test_batches_of_0_1_and_4(exported):
    _, layer = exported
    betas, go, bp = random_params(4)
    vertices, keypoints = layer(betas, go, bp)
    assert vertices.shape == (4, 6890, 3) and keypoints.shape == (4, 44, 3)
    assert torch.isfinite(vertices).all() and torch.isfinite(keypoints).all()
    for i in range(4):  # each row is its own frame: the batch changes nothing
        v1, k1 = layer(betas[i : i + 1], go[i : i + 1], bp[i : i + 1])
        torch.testing.assert_close(v1[0], vertices[i], rtol=0, atol=ATOL)
        torch.testing.assert_close(k1[0], keypoints[i], rtol=0, atol=ATOL)
    v0, k0 = layer(betas[:0], go[:0], bp[:0])
    assert v0.shape == (0, 6890, 3) and k0.shape == (0, 44, 3)
    assert v0.dtype == k0.dtype == torch.float32


EYE = torch.eye(3)


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.zeros(2, 9), EYE.expand(2, 1, 3, 3), EYE.expand(2, 23, 3, 3)), r"betas must be float32 \[B,10\]"),
        ((torch.zeros(10), EYE.expand(1, 1, 3, 3), EYE.expand(1, 23, 3, 3)), r"betas must be float32 \[B,10\]"),
        ((torch.zeros(2, 10), EYE.expand(2, 3, 3), EYE.expand(2, 23, 3, 3)), r"global_orient must be float32 \[B,1,3,3\]"),
        ((torch.zeros(2, 10), EYE.expand(3, 1, 3, 3), EYE.expand(2, 23, 3, 3)), r"global_orient .* the B of betas \(2\)"),
        ((torch.zeros(2, 10), EYE.expand(2, 1, 3, 3), EYE.expand(2, 24, 3, 3)), r"body_pose must be float32 \[B,23,3,3\]"),
        ((torch.zeros(2, 10), EYE.expand(2, 1, 3, 3), torch.zeros(2, 23, 9)), r"body_pose must be float32 \[B,23,3,3\]"),
        ((torch.zeros(2, 10, dtype=torch.float64), EYE.expand(2, 1, 3, 3), EYE.expand(2, 23, 3, 3)), r"betas must be float32"),
        ((torch.zeros(2, 10), EYE.expand(2, 1, 3, 3), EYE.expand(2, 23, 3, 3).half()), r"body_pose must be float32"),
    ],
    ids=["betas9", "betas1d", "orient3d", "orient_batch", "pose24", "pose6d", "betas_f64", "pose_f16"],
)
def test_wrong_inputs_are_refused_clearly(exported, args, message):
    _, layer = exported
    with pytest.raises(Exception, match="smpl layer: " + message):
        layer(*args)


def test_bf16_model_gets_an_fp32_layer_with_its_vertices(tmp_path):
    """The layer is fp32 whatever the model's dtype, and still reproduces its vertices (SMPL runs
    in fp32 inside the model too)."""
    model = build("tiny")
    model.set_dtype("bf16")
    path = smpl_export.write(tmp_path / "m.smpl.pt", model.smpl, "synthetic")
    layer = torch.jit.load(str(path))
    assert json.loads(layer.meta())["dtype"] == "float32"
    with torch.no_grad():
        out = model(make_crops(2))
        vertices, keypoints = layer(out["betas"], out["global_orient"], out["body_pose"])
    assert vertices.dtype == torch.float32
    torch.testing.assert_close(vertices, out["vertices"], rtol=0, atol=ATOL)
    torch.testing.assert_close(keypoints, out["keypoints_3d"], rtol=0, atol=ATOL)
    assert next(model.smpl.buffers()).device.type == "cpu"  # the model's own SMPL is untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_gets_a_cpu_layer_with_its_vertices(tmp_path):
    model = build("tiny").cuda()
    path = smpl_export.write(tmp_path / "m.smpl.pt", model.smpl, "synthetic")
    layer = torch.jit.load(str(path))  # no map_location: the file itself is on the CPU
    assert all(b.device.type == "cpu" for b in layer.buffers())
    assert next(model.smpl.buffers()).device.type == "cuda"
    with torch.no_grad():
        out = {k: v.cpu() for k, v in model(make_crops(2).cuda()).items()}
        vertices, keypoints = layer(out["betas"], out["global_orient"], out["body_pose"])
    torch.testing.assert_close(vertices, out["vertices"], rtol=0, atol=1e-4)
    torch.testing.assert_close(keypoints, out["keypoints_3d"], rtol=0, atol=1e-4)


def test_export_with_an_smpl_file_writes_its_layer(tmp_path, capsys):
    """The layer holds the model's SMPL file, not the stand-in: with a file whose template is
    moved by 10 cm the layer's vertices are the model's, 10 cm from the stand-in's."""
    raw = smpl_dict()
    raw["v_template"] = DATA.v_template + np.array([0.0, 0.1, 0.0])
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    (tmp_path / "SMPL_to_J19.pkl").write_bytes(pickle.dumps(DATA.j19, protocol=2))
    out = tmp_path / "real.pt"
    export_tiny(out, "--smpl", str(tmp_path / "SMPL_NEUTRAL.pkl"), "--j19", str(tmp_path / "SMPL_to_J19.pkl"))
    capsys.readouterr()
    layer = torch.jit.load(str(tmp_path / "real.smpl.pt"))
    meta = json.loads(layer.meta())
    assert meta["smpl"] == "real" and meta["source"] == "SMPL_NEUTRAL.pkl"
    model = torch.jit.load(str(out))
    with torch.no_grad():
        out_ = model(make_crops(2))
        vertices, keypoints = layer(out_["betas"], out_["global_orient"], out_["body_pose"])
        stand_in, _ = SMPL(synthetic_smpl())(out_["betas"], out_["global_orient"], out_["body_pose"])
    torch.testing.assert_close(vertices, out_["vertices"], rtol=0, atol=ATOL)
    torch.testing.assert_close(keypoints, out_["keypoints_3d"], rtol=0, atol=ATOL)
    assert (vertices - stand_in).abs().max() > 0.05


def test_standalone_cli_writes_the_same_layer(tmp_path, exported, capsys):
    """``python -m models.smpl_export`` (for a model exported before the layer existed) writes
    what the exporter writes."""
    _, layer = exported
    out = tmp_path / "old-model.smpl.pt"
    smpl_export.main(["--out", str(out)])
    assert "smpl layer (synthetic)" in capsys.readouterr().err
    again = torch.jit.load(str(out))
    assert again.meta() == layer.meta()
    args = random_params(2, seed=3)
    torch.testing.assert_close(again(*args), layer(*args), rtol=0, atol=0)


def test_export_refuses_a_layer_that_is_not_the_models(tmp_path, monkeypatch, capsys):
    """The exporter's check (without ``--no-check``) fails the export when the layer it wrote
    does not give the model's vertices (here: a stand-in of another seed)."""
    real_write = smpl_export.write
    monkeypatch.setattr(smpl_export, "write", lambda path, smpl, source: real_write(path, SMPL(synthetic_smpl(seed=1)), source))
    out = tmp_path / "hmr2-tiny.pt"
    with pytest.raises(RuntimeError, match="does not hold the model's SMPL"):
        export.main(["--preset", "tiny", "--dtype", "fp32", "--device", "cpu", "--out", str(out)])
    assert "SMPL layer vs model" in capsys.readouterr().err
