"""The contract-breaking detector files are broken in exactly the advertised way."""

import json

import torch

from models.bad_detector import KINDS, build


def test_each_kind_breaks_one_rule(tmp_path):
    images = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    for kind in KINDS:
        path = tmp_path / f"{kind}.pt"
        torch.jit.script(build(kind)).save(str(path))
        m = torch.jit.load(str(path))
        out = m(images)
        assert out["boxes"].shape == (2, 1, 4)
        if kind == "no_meta":
            assert not hasattr(m, "meta")
            continue
        meta = json.loads(m.meta())
        assert (meta["contract"] == "person-detector/1") == (kind != "wrong_contract")
        assert ("scores" in out) == (kind != "no_scores")
        if kind == "half_scores":
            assert out["scores"].dtype == torch.float16
