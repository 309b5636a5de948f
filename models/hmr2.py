"""The whole HMR2.0 model as the worker runs it: uint8 crops in, fp32 SMPL outputs out.

``HMR2.forward(crops)`` takes uint8 (B, 256, 256, 3) RGB person crops (see ``models.crop``), and
on the module's device: slices the width to 256x192 (columns 32..223), normalises with the
ImageNet mean/std on 0..255, casts to the backbone's dtype, runs backbone and head, converts the
6D rotations to matrices in fp32 and runs SMPL in fp32. Outputs (all fp32, see ``OUTPUTS``):
``pred_cam``, ``global_orient``, ``body_pose``, ``betas``, ``keypoints_3d``, ``vertices``.

``HMR2.meta()`` returns a JSON string describing the file (name, preset, dtype, outputs, ...).
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from . import __version__
from .head import HeadConfig, SmplHead, init_head_, rot6d_to_rotmat
from .smpl import SMPL, SmplData, synthetic_smpl
from .vit import ViT, ViTConfig, init_vit_

INPUT_SIZE = 256
CROP_WIDTH = (32, 224)  # columns kept: the 192-wide centre of the 256-wide crop
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Output names and shapes ("B" is the batch size), in the order of ``forward``'s dict.
OUTPUTS: Dict[str, list] = {
    "pred_cam": ["B", 3],
    "global_orient": ["B", 1, 3, 3],
    "body_pose": ["B", 23, 3, 3],
    "betas": ["B", 10],
    "keypoints_3d": ["B", 44, 3],
    "vertices": ["B", 6890, 3],
}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Preset:
    """Sizes of one model variant: backbone and head."""

    name: str
    vit: ViTConfig
    head: HeadConfig


PRESETS: Dict[str, Preset] = {
    # The real HMR2.0: ViT-H/16 and a 6-layer 1024-wide decoder (~670M parameters).
    "full": Preset("full", ViTConfig(), HeadConfig()),
    # Same code, small sizes: for tests and CI (exports in seconds on a CPU).
    "tiny": Preset(
        "tiny",
        ViTConfig(embed=64, depth=2, heads=4),
        HeadConfig(dim=64, depth=2, heads=4, dim_head=16, mlp_dim=128, context_dim=64),
    ),
}


class HMR2(nn.Module):
    """Backbone + SMPL head + SMPL, with the crop normalisation inside (scriptable)."""

    meta_json: str

    def __init__(self, preset: Preset, smpl: SMPL):
        super().__init__()
        self.backbone = ViT(preset.vit)
        self.smpl_head = SmplHead(preset.head)
        self.smpl = smpl
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD) * 255.0)
        self.meta_json = "{}"

    def forward(self, crops: Tensor) -> Dict[str, Tensor]:
        if crops.dim() != 4 or crops.size(1) != 256 or crops.size(2) != 256 or crops.size(3) != 3:
            raise ValueError("crops must be uint8 [B,256,256,3] RGB, got shape {}".format(crops.shape))
        if crops.dtype != torch.uint8:
            raise ValueError("crops must be uint8 [B,256,256,3] RGB, got dtype {}".format(crops.dtype))
        b = crops.size(0)
        x = crops.to(self.pixel_mean.device)[:, :, 32:224].float()
        x = (x - self.pixel_mean) / self.pixel_std
        x = x.permute(0, 3, 1, 2).contiguous().to(self.backbone.pos_embed.dtype)  # (B,3,256,192)
        pose6d, betas, cam = self.smpl_head(self.backbone(x))
        rot = rot6d_to_rotmat(pose6d.float().reshape(b, -1, 6))  # (B, 24, 3, 3)
        betas = betas.float()
        global_orient = rot[:, :1].contiguous()
        body_pose = rot[:, 1:].contiguous()
        vertices, keypoints = self.smpl(betas, global_orient, body_pose)
        return {
            "pred_cam": cam.float(),
            "global_orient": global_orient,
            "body_pose": body_pose,
            "betas": betas,
            "keypoints_3d": keypoints,
            "vertices": vertices,
        }

    @torch.jit.export
    def meta(self) -> str:
        """JSON description of this model (see ``models/README.md``)."""
        return self.meta_json

    # ---- Python-side set-up (not scripted) -----------------------------------------------------

    def param_count(self) -> int:
        """Parameters of backbone and head (SMPL has only fixed buffers)."""
        return sum(p.numel() for m in (self.backbone, self.smpl_head) for p in m.parameters())

    def set_meta(self, **fields: Any) -> None:
        """Update fields of the ``meta()`` JSON."""
        meta = json.loads(self.meta_json)
        meta.update(fields)
        self.meta_json = json.dumps(meta)

    def load_trunk(self, state: Dict[str, Tensor]) -> None:
        """Load ``backbone.*`` and ``smpl_head.*`` weights, strictly: every key of both parts
        must be present with its exact shape, and no other key of those parts may exist."""
        for name, part in (("backbone", self.backbone), ("smpl_head", self.smpl_head)):
            prefix = name + "."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            part.load_state_dict(sub, strict=True)

    def set_mean_params(self, pose: Tensor, betas: Tensor, cam: Tensor) -> None:
        """Replace the mean parameters the head's outputs are residuals on."""
        with torch.no_grad():
            self.smpl_head.init_body_pose.copy_(pose.reshape(1, -1))
            self.smpl_head.init_betas.copy_(betas.reshape(1, -1))
            self.smpl_head.init_cam.copy_(cam.reshape(1, -1))

    def set_dtype(self, name: str) -> None:
        """Run backbone and head in ``name`` (fp32|fp16|bf16); the mean parameters, the 6D
        conversion and SMPL stay fp32."""
        dtype = DTYPES[name]
        self.backbone.to(dtype)
        self.smpl_head.to(dtype)
        head = self.smpl_head
        head.init_body_pose = head.init_body_pose.float()
        head.init_betas = head.init_betas.float()
        head.init_cam = head.init_cam.float()
        self.set_meta(dtype=name)


def build(
    preset: str = "tiny",
    seed: int = 0,
    smpl_data: Optional[SmplData] = None,
    init: bool = True,
) -> HMR2:
    """An HMR2 model of ``preset`` with random weights drawn with ``seed`` (when ``init``), the
    given SMPL arrays or the synthetic SMPL (its own fixed seed), fp32, on the CPU, eval mode."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    p = PRESETS[preset]
    data = smpl_data if smpl_data is not None else synthetic_smpl()
    torch.manual_seed(seed)
    model = HMR2(p, SMPL(data))
    if init:
        with torch.no_grad():
            init_vit_(model.backbone)
            init_head_(model.smpl_head)
    model.eval()
    model.meta_json = json.dumps(
        {
            "name": "hmr2",
            "preset": preset,
            "version": __version__,
            "dtype": "fp32",
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "input_format": "uint8 BHWC RGB",
            "outputs": OUTPUTS,
            "smpl": data.source,
            "weights": f"random seed {seed}",
            "params": model.param_count(),
        }
    )
    return model


def trunk_shapes(preset: str = "full") -> Dict[str, list]:
    """Keys and shapes of ``backbone.*`` and ``smpl_head.*`` of ``preset``, computed on the meta
    device (no memory, no time)."""
    p = PRESETS[preset]
    with torch.device("meta"):
        parts = {"backbone": ViT(p.vit), "smpl_head": SmplHead(p.head)}
    return {f"{name}.{k}": list(v.shape) for name, m in parts.items() for k, v in m.state_dict().items()}


def trunk_param_count(preset: str = "full") -> Dict[str, int]:
    """Parameter counts of backbone and head of ``preset`` (computed on the meta device)."""
    p = PRESETS[preset]
    with torch.device("meta"):
        backbone, head = ViT(p.vit), SmplHead(p.head)
    counts = {
        "backbone": sum(t.numel() for t in backbone.parameters()),
        "smpl_head": sum(t.numel() for t in head.parameters()),
    }
    counts["total"] = counts["backbone"] + counts["smpl_head"]
    return counts

