"""The ViT backbone of HMR2.0 (ViT-H/16 at 256x192 in the full preset, ViTPose style).

Input (B, 3, 256, 192) normalised RGB; output feature map (B, embed, 16, 12). The patch
embedding is a strided convolution with padding 2, tokens get a learned position (the table has
one more entry than there are tokens, and its entry 0 is added to every token, there is no class
token), then ``depth`` pre-norm transformer blocks and a final LayerNorm.

Parameter names follow the official checkpoint (``patch_embed.proj``, ``pos_embed``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``last_norm``).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ViTConfig:
    """Sizes of the backbone. The defaults are ViT-H/16 as HMR2.0 uses it."""

    img_size: tuple[int, int] = (256, 192)
    patch: int = 16
    padding: int = 2
    embed: int = 1280
    depth: int = 32
    heads: int = 16
    mlp_ratio: int = 4
    eps: float = 1e-6

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, cols) the padded strided convolution produces: 16x12 for 256x192."""
        h, w = self.img_size
        p, pad = self.patch, self.padding
        return (h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (rows q, k, v; heads contiguous)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # Default scale is head_dim ** -0.5, as in the original.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two linear layers with exact GELU between them."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x += attn(norm1(x)); x += mlp(norm2(x))``."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed, eps=cfg.eps)
        self.attn = Attention(cfg.embed, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.embed, eps=cfg.eps)
        self.mlp = Mlp(cfg.embed, cfg.embed * cfg.mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Strided convolution from pixels to tokens."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed, cfg.patch, stride=cfg.patch, padding=cfg.padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class ViT(nn.Module):
    """The backbone: (B, 3, H, W) -> (B, embed, H', W')."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        rows, cols = cfg.grid
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, rows * cols + 1, cfg.embed))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.last_norm = nn.LayerNorm(cfg.embed, eps=cfg.eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, c, h, w)


def init_vit_(vit: ViT) -> None:
    """Random initialisation for runs without a checkpoint: truncated normal (std 0.02) for
    linear weights and the position table, zero biases, unit LayerNorms."""
    for m in vit.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.trunc_normal_(vit.pos_embed, std=0.02)
