"""python -m models.export, run in-process."""

import json
import pickle

import numpy as np
import pytest
import torch

from models import export
from models.hmr2 import build
from models.loaders import load_j19, load_smpl

from .conftest import make_crops
from .test_loaders import DATA, smpl_dict, write_checkpoint


def run_export(capsys, *args):
    export.main(list(args))
    out = capsys.readouterr().out
    assert out.startswith("exported ")
    return out


def test_tiny_export_round_trips(tmp_path, capsys, tiny):
    out = tmp_path / "hmr2-tiny.pt"
    summary = run_export(capsys, "--preset", "tiny", "--dtype", "fp32", "--device", "cpu", "--out", str(out))
    assert "271,773 params" in summary
    loaded = torch.jit.load(str(out))
    assert json.loads(loaded.meta()) == json.loads(tiny.meta())
    crops = make_crops(3)
    with torch.no_grad():
        a, b = tiny(crops), loaded(crops)
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-5


def test_export_with_the_real_file_formats(tmp_path, capsys):
    ckpt = tmp_path / "epoch=35-step=1000000.ckpt"
    write_checkpoint(ckpt, build("tiny", seed=7))
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(smpl_dict(), protocol=2))
    (tmp_path / "SMPL_to_J19.pkl").write_bytes(pickle.dumps(DATA.j19, protocol=2))
    mean = (np.linspace(-1, 1, 144), np.linspace(0, 1, 10), np.array([0.8, 0.05, -0.05]))
    np.savez(tmp_path / "smpl_mean_params.npz", pose=mean[0], shape=mean[1], cam=mean[2])
    out = tmp_path / "hmr2.pt"
    run_export(
        capsys, "--preset", "tiny", "--checkpoint", str(ckpt), "--smpl", str(tmp_path / "SMPL_NEUTRAL.pkl"),
        "--mean-params", str(tmp_path / "smpl_mean_params.npz"), "--j19", str(tmp_path / "SMPL_to_J19.pkl"),
        "--dtype", "fp32", "--device", "cpu", "--out", str(out), "--no-check",
    )
    loaded = torch.jit.load(str(out))
    meta = json.loads(loaded.meta())
    assert meta["smpl"] == "SMPL_NEUTRAL.pkl" and meta["weights"] == "epoch=35-step=1000000.ckpt"

    smpl = load_smpl(tmp_path / "SMPL_NEUTRAL.pkl", j19=load_j19(tmp_path / "SMPL_to_J19.pkl"))
    expect = build("tiny", seed=7, smpl_data=smpl)
    expect.set_mean_params(*(torch.tensor(m, dtype=torch.float32) for m in mean))
    crops = make_crops(2)
    with torch.no_grad():
        a, b = expect(crops), loaded(crops)
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-5


def test_smpl_without_j19_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        export.main(["--preset", "tiny", "--smpl", str(tmp_path / "x.pkl"), "--out", str(tmp_path / "o.pt")])
