"""Loaders, each on small files of the real format written here."""

import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import scipy.sparse
import torch

from models.hmr2 import build
from models.loaders import load_checkpoint_trunk, load_j19, load_mean_params, load_smpl
from models.smpl import synthetic_smpl

DATA = synthetic_smpl()


class _FakeModules:
    """Temporarily installs fake packages (so that their classes pickle by name), then removes
    them, so that loading happens as on a machine without them."""

    def __init__(self, **classes):
        self.classes = classes  # "package.module" -> {name: class}

    def __enter__(self):
        self.added = []
        for modname, members in self.classes.items():
            parts = modname.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    self.added.append(name)
            for cname, cls in members.items():
                cls.__module__, cls.__qualname__ = modname, cname
                setattr(sys.modules[modname], cname, cls)
        return self

    def __exit__(self, *exc):
        for name in self.added:
            del sys.modules[name]


class CfgNode(dict):
    """Like yacs.config.CfgNode: a dict subclass with attributes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__["_immutable"] = True


class Ch:
    """Like chumpy.ch.Ch: the value lives in ``x``; pickles its __dict__ minus caches."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()
        self._cache = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_cache"]
        return state


def write_checkpoint(path, model):
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items() if not k.startswith("smpl."))
    state["smpl.body_pose"] = torch.zeros(1, 69)
    state["discriminator.D_conv1.weight"] = torch.randn(32, 9, 1, 1)
    with _FakeModules(**{"yacs.config": {"CfgNode": CfgNode}}):
        cfg = CfgNode(MODEL=CfgNode(IMAGE_SIZE=256), SMPL=CfgNode(MODEL_PATH="data/smpl"))
        torch.save(
            {
                "epoch": 35,
                "global_step": 1_000_000,
                "pytorch-lightning_version": "2.0.9",
                "state_dict": state,
                "hyper_parameters": {"cfg": cfg},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-5}]}],
                "callbacks": {},
            },
            path,
        )


def test_lightning_checkpoint_loads_strictly_without_its_packages(tmp_path):
    source = build("tiny", seed=7)
    write_checkpoint(tmp_path / "epoch=35-step=1000000.ckpt", source)
    assert "yacs" not in sys.modules
    trunk = load_checkpoint_trunk(tmp_path / "epoch=35-step=1000000.ckpt")
    assert all(k.startswith(("backbone.", "smpl_head.")) for k in trunk)
    target = build("tiny", seed=0)
    target.load_trunk(trunk)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_checkpoint_of_another_size_is_refused(tmp_path):
    model = build("tiny")
    state = {k: v for k, v in model.state_dict().items() if k != "backbone.last_norm.bias"}
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(RuntimeError, match="last_norm.bias"):
        build("tiny").load_trunk(load_checkpoint_trunk(tmp_path / "broken.ckpt"))
    state["backbone.last_norm.bias"] = torch.zeros(65)
    torch.save({"state_dict": state}, tmp_path / "wrong.ckpt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        build("tiny").load_trunk(load_checkpoint_trunk(tmp_path / "wrong.ckpt"))


def test_mean_params_npz(tmp_path):
    pose, shape, cam = np.arange(144) / 144, np.arange(10) / 10, np.array([0.9, 0.1, -0.1])
    np.savez(tmp_path / "smpl_mean_params.npz", pose=pose, shape=shape, cam=cam)
    p, s, c = load_mean_params(tmp_path / "smpl_mean_params.npz")
    assert p.shape == (1, 144) and s.shape == (1, 10) and c.shape == (1, 3)
    assert np.allclose(p.numpy()[0], pose) and np.allclose(c.numpy()[0], cam)
    model = build("tiny")
    model.set_mean_params(p, s, c)
    assert torch.equal(model.smpl_head.init_cam, c)
    np.savez(tmp_path / "bad.npz", pose=pose, shape=shape)
    with pytest.raises(ValueError, match="cam"):
        load_mean_params(tmp_path / "bad.npz")


def smpl_dict(wrap=lambda a: a, kintree_dtype=np.int64):
    kintree = np.array([[2**32 - 1] + DATA.parents[1:], list(range(24))], dtype=kintree_dtype)
    return {
        "v_template": wrap(DATA.v_template),
        "shapedirs": wrap(DATA.shapedirs),
        "posedirs": DATA.posedirs.astype(np.float32),
        "J_regressor": scipy.sparse.csc_matrix(DATA.j_regressor),
        "weights": wrap(DATA.weights),
        "kintree_table": kintree,
        "f": DATA.faces.astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def check_smpl(data, name):
    assert data.source == name
    assert np.allclose(data.v_template, DATA.v_template)
    assert np.allclose(data.shapedirs, DATA.shapedirs)
    assert np.allclose(data.posedirs, DATA.posedirs, atol=1e-7)
    assert np.allclose(data.j_regressor, DATA.j_regressor)
    assert np.allclose(data.weights, DATA.weights)
    assert data.parents == DATA.parents
    assert (data.faces == DATA.faces).all()


def test_smplx_style_pickle(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(smpl_dict(), protocol=2))
    check_smpl(load_smpl(path), "SMPL_NEUTRAL.pkl")


def test_original_chumpy_pickle_without_chumpy(tmp_path):
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    with _FakeModules(**{"chumpy.ch": {"Ch": Ch}}):
        path.write_bytes(pickle.dumps(smpl_dict(wrap=Ch, kintree_dtype=np.uint32), protocol=2))
    assert "chumpy" not in sys.modules
    check_smpl(load_smpl(path), path.name)
    assert "chumpy" not in sys.modules


def test_j19_regressor(tmp_path):
    path = tmp_path / "SMPL_to_J19.pkl"
    path.write_bytes(pickle.dumps(DATA.j19, protocol=2))
    assert np.array_equal(load_j19(path), DATA.j19)
    path.write_bytes(pickle.dumps(DATA.j19[:, :100], protocol=2))
    with pytest.raises(ValueError, match=r"\(19, 6890\)"):
        load_j19(path)


def test_smpl_with_a_wrong_tree_is_refused(tmp_path):
    d = smpl_dict()
    d["kintree_table"][0, 5] = 3
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(ValueError, match="kinematic tree"):
        load_smpl(path)
