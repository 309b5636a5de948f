"""A checkpoint with the official key names loads strictly, through the exporter's loader path.

The expected names and shapes are written out here from the key list of ``shared/HMR2_FACTS.md``
(not taken from the model or from ``models/manifest.py``), so these tests fail when the modules'
names drift from the checkpoint's. Note the doubled ``smpl_head.transformer.transformer.layers``:
the head's ``transformer`` holds the token embedding and position, its own ``transformer`` holds
the layers.
"""

import re
from collections import OrderedDict
from typing import Dict, List

import pytest
import torch

from models import export
from models.hmr2 import HMR2, PRESETS, trunk_shapes
from models.loaders import load_checkpoint_trunk
from models.manifest import load_manifest
from models.smpl import SMPL, synthetic_smpl

from .conftest import make_crops

# Sizes of the two presets: E backbone width, N blocks, M backbone MLP, D head width, L head
# layers, I head attention width (heads x dim_head), C context width (= E), F head FF width.
FULL = dict(E=1280, N=32, M=5120, D=1024, L=6, I=512, C=1280, F=1024)
TINY = dict(E=64, N=2, M=256, D=64, L=2, I=64, C=64, F=128)


def official_head_keys(D: int, L: int, I: int, C: int, F: int) -> Dict[str, List[int]]:
    """``smpl_head.*`` of the checkpoint, as HMR2_FACTS.md lists them."""
    keys = {
        "smpl_head.transformer.to_token_embedding.weight": [D, 1],
        "smpl_head.transformer.to_token_embedding.bias": [D],
        "smpl_head.transformer.pos_embedding": [1, 1, D],
        "smpl_head.decpose.weight": [144, D],
        "smpl_head.decpose.bias": [144],
        "smpl_head.decshape.weight": [10, D],
        "smpl_head.decshape.bias": [10],
        "smpl_head.deccam.weight": [3, D],
        "smpl_head.deccam.bias": [3],
        "smpl_head.init_body_pose": [1, 144],
        "smpl_head.init_betas": [1, 10],
        "smpl_head.init_cam": [1, 3],
    }
    for layer in range(L):
        p = f"smpl_head.transformer.transformer.layers.{layer}"
        keys.update(
            {
                f"{p}.0.norm.weight": [D],
                f"{p}.0.norm.bias": [D],
                f"{p}.0.fn.to_qkv.weight": [3 * I, D],
                f"{p}.0.fn.to_out.0.weight": [D, I],
                f"{p}.0.fn.to_out.0.bias": [D],
                f"{p}.1.norm.weight": [D],
                f"{p}.1.norm.bias": [D],
                f"{p}.1.fn.to_kv.weight": [2 * I, C],
                f"{p}.1.fn.to_q.weight": [I, D],
                f"{p}.1.fn.to_out.0.weight": [D, I],
                f"{p}.1.fn.to_out.0.bias": [D],
                f"{p}.2.norm.weight": [D],
                f"{p}.2.norm.bias": [D],
                f"{p}.2.fn.net.0.weight": [F, D],
                f"{p}.2.fn.net.0.bias": [F],
                f"{p}.2.fn.net.3.weight": [D, F],
                f"{p}.2.fn.net.3.bias": [D],
            }
        )
    return keys


def official_backbone_keys(E: int, N: int, M: int) -> Dict[str, List[int]]:
    """``backbone.*`` of the checkpoint, as HMR2_FACTS.md lists them."""
    keys = {
        "backbone.patch_embed.proj.weight": [E, 3, 16, 16],
        "backbone.patch_embed.proj.bias": [E],
        "backbone.pos_embed": [1, 193, E],
        "backbone.last_norm.weight": [E],
        "backbone.last_norm.bias": [E],
    }
    for i in range(N):
        p = f"backbone.blocks.{i}"
        keys.update(
            {
                f"{p}.norm1.weight": [E],
                f"{p}.norm1.bias": [E],
                f"{p}.attn.qkv.weight": [3 * E, E],
                f"{p}.attn.qkv.bias": [3 * E],
                f"{p}.attn.proj.weight": [E, E],
                f"{p}.attn.proj.bias": [E],
                f"{p}.norm2.weight": [E],
                f"{p}.norm2.bias": [E],
                f"{p}.mlp.fc1.weight": [M, E],
                f"{p}.mlp.fc1.bias": [M],
                f"{p}.mlp.fc2.weight": [E, M],
                f"{p}.mlp.fc2.bias": [E],
            }
        )
    return keys


def official_keys(s: Dict[str, int]) -> Dict[str, List[int]]:
    return {
        **official_backbone_keys(s["E"], s["N"], s["M"]),
        **official_head_keys(s["D"], s["L"], s["I"], s["C"], s["F"]),
    }


def layer_keys(keys) -> List[str]:
    return sorted(k for k in keys if k.startswith("smpl_head.transformer.transformer.layers."))


def save_lightning_checkpoint(path, trunk: Dict[str, torch.Tensor]) -> None:
    """``trunk`` inside a Lightning-style checkpoint, with the other entries the real one has
    (``smpl.*`` and ``discriminator.*`` weights, optimiser state), which the loader ignores."""
    state = OrderedDict(trunk)
    state["smpl.body_pose"] = torch.zeros(1, 69, device=next(iter(trunk.values())).device)
    state["discriminator.D_conv1.weight"] = torch.zeros(32, 9, 1, 1)
    torch.save(
        {
            "epoch": 35,
            "global_step": 1_000_000,
            "state_dict": state,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-5}]}],
            "callbacks": {},
        },
        path,
    )


def test_the_facts_key_counts():
    full = official_keys(FULL)
    assert len(official_backbone_keys(FULL["E"], FULL["N"], FULL["M"])) == 389
    assert len(official_head_keys(FULL["D"], FULL["L"], FULL["I"], FULL["C"], FULL["F"])) == 114
    assert len(full) == 503
    assert len(layer_keys(full)) == 6 * 17 == 102
    # Spot checks straight from the text of HMR2_FACTS.md.
    assert full["smpl_head.transformer.transformer.layers.5.0.fn.to_qkv.weight"] == [1536, 1024]
    assert full["smpl_head.transformer.transformer.layers.0.1.fn.to_kv.weight"] == [1024, 1280]
    assert full["smpl_head.transformer.transformer.layers.3.1.fn.to_q.weight"] == [512, 1024]
    assert full["smpl_head.transformer.transformer.layers.2.2.fn.net.3.weight"] == [1024, 1024]
    assert full["smpl_head.transformer.to_token_embedding.weight"] == [1024, 1]


def test_manifest_is_the_facts_key_list():
    assert load_manifest() == official_keys(FULL)


def test_full_preset_has_every_decoder_layer_key_of_the_facts():
    model, manifest = trunk_shapes("full"), load_manifest()
    assert set(model) == set(manifest)
    expected = {k: v for k, v in official_keys(FULL).items() if k in layer_keys(official_keys(FULL))}
    assert len(expected) == 102
    assert {k: model.get(k) for k in expected} == expected
    assert {k: manifest.get(k) for k in expected} == expected
    # Nothing is left at the old, one-level-short place.
    assert not [k for k in model if k.startswith("smpl_head.transformer.layers.")]


def test_tiny_preset_has_the_official_key_names():
    assert trunk_shapes("tiny") == official_keys(TINY)


def random_trunk(keys: Dict[str, List[int]], seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(shape, generator=g) * 0.05) for k, shape in keys.items())


def test_tiny_official_checkpoint_loads_through_the_exporter(tmp_path):
    trunk = random_trunk(official_keys(TINY), seed=3)
    ckpt = tmp_path / "epoch=35-step=1000000.ckpt"
    save_lightning_checkpoint(ckpt, trunk)
    args = export.parse_args(["--preset", "tiny", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.pt")])
    model = export.make_model(args)  # load_checkpoint_trunk + HMR2.load_trunk (strict)
    state = model.state_dict()
    for k, v in trunk.items():
        assert torch.equal(state[k], v), k
    # The loaded model still scripts to the same outputs.
    scripted = torch.jit.script(model)
    crops = make_crops(2)
    with torch.no_grad():
        a, b = model(crops), scripted(crops)
    for name in a:
        assert torch.isfinite(a[name]).all(), name
        assert (a[name] - b[name]).abs().max() <= 1e-5, name


def test_full_official_checkpoint_loads_strictly_on_meta(tmp_path):
    """The full preset on PyTorch's meta device: shapes only, no memory for 670M parameters."""
    trunk = OrderedDict((k, torch.empty(s, device="meta")) for k, s in official_keys(FULL).items())
    ckpt = tmp_path / "epoch=35-step=1000000.ckpt"
    save_lightning_checkpoint(ckpt, trunk)
    loaded = load_checkpoint_trunk(ckpt)
    assert set(loaded) == set(trunk)
    data = synthetic_smpl()
    with torch.device("meta"):
        model = HMR2(PRESETS["full"], SMPL(data))
    model.load_trunk(loaded)  # raises on any missing, unexpected or mis-shaped key


def test_old_one_level_short_names_are_refused(tmp_path):
    old = OrderedDict(
        (re.sub(r"^smpl_head\.transformer\.transformer\.layers\.", "smpl_head.transformer.layers.", k), v)
        for k, v in random_trunk(official_keys(TINY), seed=4).items()
    )
    ckpt = tmp_path / "old.ckpt"
    save_lightning_checkpoint(ckpt, old)
    args = export.parse_args(["--preset", "tiny", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.pt")])
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*transformer\.transformer\.layers\.0\.0\.norm\.weight"):
        export.make_model(args)
