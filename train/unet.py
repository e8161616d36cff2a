"""The U-Net shared by frames (1D) and maps (2D): residual blocks with the timestep embedding,
downsampling, skip connections, self-attention at the lowest resolution only, nearest upsampling.

Its shapes are the subclasses' (``models.UNet1D``, ``unet2d.UNet2D``): they check the config and
hand over the stem, the down- and upsampling modules and the number of cell dimensions. The modules
are built in one fixed order (embedding, stem, down path, middle, up path, output), so a seed gives
the same initial weights and checkpoints keep their parameter order.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgediff.train.layers import CONV, ResBlock, SelfAttention, SinusoidalEmbedding, group_norm


class UNet(nn.Module):
    def __init__(self, config: Any, dims: int, stem: Callable[[int], nn.Module],
                 downsample: Callable[[int], nn.Module], upsample: Callable[[int], nn.Module]):
        super().__init__()
        c = config
        self.config = c
        n_down = len(c.mults) - 1
        widths = [c.base_width * m for m in c.mults]

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, c.emb_dim, c.norm_groups, c.dropout, dims=dims)

        self.embed = SinusoidalEmbedding(c.emb_dim, c.emb_dim)
        self.stem = stem(widths[0])
        self.down = nn.ModuleList()
        skips, ch = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(c.blocks_per_level):
                self.down.append(block(ch, width))
                ch = width
                skips.append(ch)
            if level < n_down:
                self.down.append(downsample(ch))
                skips.append(ch)
        self.mid1 = block(ch, ch)
        self.mid_attn = SelfAttention(ch, c.heads, c.norm_groups, dims=dims) if c.attention else nn.Identity()
        self.mid2 = block(ch, ch)
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(c.blocks_per_level + 1):
                self.up.append(block(ch + skips.pop(), width))
                ch = width
            if level > 0:
                self.up.append(upsample(ch))
        self.out_norm = group_norm(ch, c.norm_groups)
        self.out = CONV[dims](ch, c.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)  # (B, emb_dim)
        h = self.stem(x_t)  # (B, width0, *cells)
        hs = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, width_max, *cells / 2^n_down)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h)
        return self.out(F.silu(self.out_norm(h)))  # (B, C, *cells)
