"""The 2D U-Net for images such as range-Doppler maps: I/Q as two channels, (B, 2, H, W).

The 1D U-Net's design in two dimensions: residual blocks (GroupNorm, SiLU, 3x3 convolutions, the
timestep embedding added between them), stride-2 downsampling, nearest upsampling, skip connections,
self-attention over the cells at the lowest resolution only. Same export rules as the 1D blocks
(no data-dependent shapes, GroupNorm with more than one group, a float timestep).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgediff.runtime.errors import InputError
from edgediff.train.layers import SinusoidalEmbedding, group_norm


@dataclass(frozen=True)
class UNet2DConfig:
    """Widths ``base_width * m`` per level; H and W halve between levels (divisible by 2^(levels-1))."""

    channels: int = 2
    height: int = 32
    width: int = 32
    base_width: int = 32
    mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 1
    attention: bool = True
    heads: int = 4
    norm_groups: int = 8
    emb_dim: int = 128
    dropout: float = 0.0
    kind: str = "unet2d"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)


class ResBlock2D(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention2D(nn.Module):
    """Multi-head self-attention over the H x W cells (plain MatMul + Softmax, as the 1D block)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise InputError(f"attention over {channels} channels needs heads dividing them, got {heads}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)  # (B, h, c, HW)
        weights = torch.softmax(torch.matmul(q.transpose(-2, -1) * (C // self.heads) ** -0.5, k), dim=-1)
        out = torch.matmul(v, weights.transpose(-2, -1)).reshape(B, C, H, W)
        return x + self.proj(out)


class UNet2D(nn.Module):
    def __init__(self, config: UNet2DConfig):
        super().__init__()
        c = config
        n_down = len(c.mults) - 1
        if c.height % 2**n_down or c.width % 2**n_down:
            raise InputError(f"maps of {c.height} x {c.width} are not divisible by 2^{n_down}: the U-Net halves them "
                             f"{n_down} times; choose sizes that are multiples of {2**n_down} or fewer levels")
        self.config = c
        widths = [c.base_width * m for m in c.mults]
        self.embed = SinusoidalEmbedding(c.emb_dim, c.emb_dim)
        self.stem = nn.Conv2d(c.channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(c.blocks_per_level):
                self.down.append(ResBlock2D(ch, width, c.emb_dim, c.norm_groups, c.dropout))
                ch = width
                skips.append(ch)
            if level < n_down:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock2D(ch, ch, c.emb_dim, c.norm_groups, c.dropout)
        self.mid_attn = SelfAttention2D(ch, c.heads, c.norm_groups) if c.attention else nn.Identity()
        self.mid2 = ResBlock2D(ch, ch, c.emb_dim, c.norm_groups, c.dropout)
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(c.blocks_per_level + 1):
                self.up.append(ResBlock2D(ch + skips.pop(), width, c.emb_dim, c.norm_groups, c.dropout))
                ch = width
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after a nearest 2x upsampling
        self.out_norm = group_norm(ch, c.norm_groups)
        self.out = nn.Conv2d(ch, c.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)  # (B, emb_dim)
        h = self.stem(x_t)  # (B, width0, H, W)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, ResBlock2D) else block(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for block in self.up:
            if isinstance(block, ResBlock2D):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = block(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))  # (B, C, H, W)
