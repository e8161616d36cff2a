"""The U-Net shared by frames (1D) and maps (2D): residual blocks with the timestep embedding,
downsampling, skip connections, self-attention at the lowest resolution (and, with ``attn_levels``,
after every residual block of the levels named there), nearest upsampling.

Its shapes are the subclasses' (``models.UNet1D``, ``unet2d.UNet2D``): they check the config and
hand over the stem, the down- and upsampling modules and the number of cell dimensions. The modules
are built in one fixed order (embedding, stem, down path, middle, up path, output), so a seed gives
the same initial weights and checkpoints keep their parameter order. The attention of
``attn_levels`` comes last, under ``level_attn`` (``down2``: after ``down.2``), with its output
projection zeroed: a network grown by it computes exactly what it computed without it, so a trained
prior can take it on and train on (``train.loop``'s ``init_from``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgediff.runtime.errors import InputError
from edgediff.train.layers import CONV, ResBlock, SelfAttention, SinusoidalEmbedding, group_norm


class UNet(nn.Module):
    def __init__(self, config: Any, dims: int, stem: Callable[[int], nn.Module],
                 downsample: Callable[[int], nn.Module], upsample: Callable[[int], nn.Module]):
        super().__init__()
        c = config
        self.config = c
        n_down = len(c.mults) - 1
        missing = [level for level in c.attn_levels if not 0 <= level <= n_down]
        if missing:
            raise InputError(f"attn_levels names level {missing[0]}, but this U-Net's levels are 0..{n_down}; "
                             f"name levels in that range")
        widths = [c.base_width * m for m in c.mults]

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, c.emb_dim, c.norm_groups, c.dropout, dims=dims)

        self.embed = SinusoidalEmbedding(c.emb_dim, c.emb_dim)
        self.stem = stem(widths[0])
        self.down = nn.ModuleList()
        attend: dict[str, int] = {}  # level_attn key -> channels
        skips, ch = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(c.blocks_per_level):
                self.down.append(block(ch, width))
                ch = width
                skips.append(ch)
                if level in c.attn_levels:
                    attend[f"down{len(self.down) - 1}"] = ch
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
                if level in c.attn_levels:
                    attend[f"up{len(self.up) - 1}"] = ch
            if level > 0:
                self.up.append(upsample(ch))
        self.out_norm = group_norm(ch, c.norm_groups)
        self.out = CONV[dims](ch, c.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.level_attn = nn.ModuleDict({key: SelfAttention(width, c.heads, c.norm_groups, dims=dims)
                                         for key, width in attend.items()})
        for attn in self.level_attn.values():
            nn.init.zeros_(attn.proj.weight)
            nn.init.zeros_(attn.proj.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)  # (B, emb_dim)
        h = self.stem(x_t)  # (B, width0, *cells)
        hs = [h]
        for i, block in enumerate(self.down):
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            if f"down{i}" in self.level_attn:
                h = self.level_attn[f"down{i}"](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, width_max, *cells / 2^n_down)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h)
            if f"up{i}" in self.level_attn:
                h = self.level_attn[f"up{i}"](h)
        return self.out(F.silu(self.out_norm(h)))  # (B, C, *cells)
