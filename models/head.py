"""The SMPL head of HMR2.0: a transformer decoder with one query token.

The backbone feature map (B, C, 16, 12) is flattened row-major to a context of 192 tokens. One
token (an embedded zero plus a learned position) runs through ``depth`` layers of pre-norm
self-attention, cross-attention to the context, and a feed-forward net. Three linear decoders
read SMPL pose (24 joints x 6D), shape (10 betas) and the weak-perspective camera (s, tx, ty) as
residuals on the mean parameters (buffers ``init_body_pose``, ``init_betas``, ``init_cam``).

Parameter names follow the official checkpoint. The head's ``transformer`` (:class:`Decoder`)
holds the token embedding and position (``transformer.to_token_embedding``,
``transformer.pos_embedding``) and, one level down, its own ``transformer``
(:class:`DecoderLayers`) holding the layers, hence the doubled name
``transformer.transformer.layers.L.{0,1,2}...``; then ``decpose``, ``decshape``, ``deccam``.
"""

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class HeadConfig:
    """Sizes of the head. The defaults are those of HMR2.0."""

    dim: int = 1024
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    context_dim: int = 1280
    joints: int = 24
    betas: int = 10


class SelfAttention(nn.Module):
    """Attention of the token(s) to themselves; ``to_qkv`` rows are q, k, v, heads h-major."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Identity())

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q = q.reshape(b, n, self.heads, -1).transpose(1, 2)
        k = k.reshape(b, n, self.heads, -1).transpose(1, 2)
        v = v.reshape(b, n, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class CrossAttention(nn.Module):
    """Attention of the token(s) to the backbone context; ``to_kv`` rows are k then v."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Identity())

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, _ = x.shape
        m = context.shape[1]
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q = self.to_q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k = k.reshape(b, m, self.heads, -1).transpose(1, 2)
        v = v.reshape(b, m, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    """Linear, GELU, Linear (indices 0 and 3 of ``net`` hold weights, the rest are no-ops)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim), nn.Identity()
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    """LayerNorm on the token (not on the context), then the wrapped step."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.fn(self.norm(x), context)


class DecoderLayers(nn.Module):
    """``depth`` x (self-attention, cross-attention, FF), each a pre-norm residual step; no final
    norm. Its ``layers`` are the checkpoint's ``transformer.transformer.layers``."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        PreNorm(cfg.dim, SelfAttention(cfg.dim, cfg.heads, cfg.dim_head)),
                        PreNorm(
                            cfg.dim,
                            CrossAttention(cfg.dim, cfg.heads, cfg.dim_head, cfg.context_dim),
                        ),
                        PreNorm(cfg.dim, FeedForward(cfg.dim, cfg.mlp_dim)),
                    ]
                )
                for _ in range(cfg.depth)
            ]
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        for layer in self.layers:
            for step in layer:
                x = x + step(x, context)
        return x


class Decoder(nn.Module):
    """Token embedding and position, then the layers (in ``self.transformer``)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.to_token_embedding = nn.Linear(1, cfg.dim)
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.transformer = DecoderLayers(cfg)

    def forward(self, token: Tensor, context: Tensor) -> Tensor:
        x = self.to_token_embedding(token) + self.pos_embedding
        return self.transformer(x, context)


class SmplHead(nn.Module):
    """Backbone features (B, C, H, W) -> (pose 6D (B, 24*6), betas (B, 10), cam (B, 3)).

    The decoders run in the head's dtype; the residual on the mean parameters is added in the
    dtype of the ``init_*`` buffers (kept fp32 by :meth:`HMR2.set_dtype`), and the results are
    returned in that dtype.
    """

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.transformer = Decoder(cfg)
        self.decpose = nn.Linear(cfg.dim, cfg.joints * 6)
        self.decshape = nn.Linear(cfg.dim, cfg.betas)
        self.deccam = nn.Linear(cfg.dim, 3)
        self.register_buffer("init_body_pose", torch.zeros(1, cfg.joints * 6))
        self.register_buffer("init_betas", torch.zeros(1, cfg.betas))
        self.register_buffer("init_cam", torch.zeros(1, 3))

    def forward(self, feats: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        b = feats.shape[0]
        context = feats.flatten(2).transpose(1, 2)
        token = torch.zeros(b, 1, 1, dtype=feats.dtype, device=feats.device)
        t = self.transformer(token, context)[:, 0]
        pose = self.decpose(t).to(self.init_body_pose.dtype) + self.init_body_pose
        betas = self.decshape(t).to(self.init_betas.dtype) + self.init_betas
        cam = self.deccam(t).to(self.init_cam.dtype) + self.init_cam
        return pose, betas, cam


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """6D rotation (..., 6) -> rotation matrix (..., 3, 3).

    a1 = x[0:3], a2 = x[3:6]; b1 = a1/|a1|; b2 = normalised (a2 - (b1.a2) b1); b3 = b1 x b2;
    the matrix has **columns** [b1, b2, b3] (so det = +1).
    """
    a1 = x[..., 0:3]
    a2 = x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def default_mean_params(joints: int = 24, betas: int = 10) -> Tuple[Tensor, Tensor, Tensor]:
    """Mean parameters used when no ``smpl_mean_params.npz`` (and no checkpoint) is given: the
    body upright in the camera frame (global orientation = 180 degrees about x, i.e. 6D
    [1,0,0, 0,-1,0]), the other joints at rest, zero betas, camera (s, tx, ty) = (0.9, 0, 0)."""
    pose = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(joints)
    pose[4] = -1.0
    return pose[None], torch.zeros(1, betas), torch.tensor([[0.9, 0.0, 0.0]])


def init_head_(head: SmplHead) -> None:
    """Random initialisation for runs without a checkpoint: truncated normal (std 0.02) for the
    decoder, Xavier weights for the three output decoders, and the default mean parameters.

    (Training would start the output decoders near zero; a random model for tests and benchmarks
    is more useful when its outputs visibly depend on the crop, so that a test can tell two crops'
    results apart: with these weights they differ by centimetres, around the mean parameters.)"""
    for m in head.transformer.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.trunc_normal_(head.transformer.pos_embedding, std=0.02)
    for m in (head.decpose, head.decshape, head.deccam):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    pose, betas, cam = default_mean_params(head.decpose.out_features // 6, head.decshape.out_features)
    head.init_body_pose.copy_(pose)
    head.init_betas.copy_(betas)
    head.init_cam.copy_(cam)
