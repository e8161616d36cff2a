"""The 2D U-Net for images such as range-Doppler maps: I/Q as two channels, (B, 2, H, W).

The 1D U-Net's design in two dimensions (``train/unet.py``, shared): residual blocks of 3x3
convolutions, stride-2 downsampling, nearest upsampling, self-attention over the cells at the lowest
resolution only. Same export rules as the 1D blocks (no data-dependent shapes, GroupNorm with more
than one group, a float timestep).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgediff.runtime.errors import InputError
from edgediff.train.unet import UNet


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
    attn_levels: tuple[int, ...] = ()  # levels (0 = full size) with attention after each residual block
    kind: str = "unet2d"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)


class Upsample2D(nn.Conv2d):
    """Nearest 2x upsampling, then a 3x3 convolution (its weights named as a plain Conv2d's)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet2D(UNet):
    def __init__(self, config: UNet2DConfig):
        c = config
        n_down = len(c.mults) - 1
        if c.height % 2**n_down or c.width % 2**n_down:
            raise InputError(f"maps of {c.height} x {c.width} are not divisible by 2^{n_down}: the U-Net halves them "
                             f"{n_down} times; choose sizes that are multiples of {2**n_down} or fewer levels")
        super().__init__(c, 2, lambda width: nn.Conv2d(c.channels, width, 3, padding=1),
                         lambda ch: nn.Conv2d(ch, ch, 3, stride=2, padding=1), Upsample2D)
