"""The epsilon networks: a 1D U-Net for I/Q frames and an MLP for 2D toy points.

Both take ``x_t`` (float32, (B, C, L) or (B, D)) and ``t`` (float32, (B,), the 0-based timestep
index) and return eps with the shape of ``x_t``. Configs are frozen dataclasses saved as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Union

import torch
from torch import nn

from edgediff.runtime.errors import InputError
from edgediff.train.layers import Conv1d, Downsample1D, SinusoidalEmbedding, Upsample1D
from edgediff.train.unet import UNet
from edgediff.train.unet2d import UNet2D, UNet2DConfig

MODEL_KINDS = ("unet1d", "mlp", "unet2d")


@dataclass(frozen=True)
class UNet1DConfig:
    """Channel widths are ``base_width * m`` for each level multiplier; the U-Net halves the length
    between levels, so ``length`` must be divisible by 2^(levels - 1)."""

    channels: int = 2
    length: int = 256
    base_width: int = 32
    mults: tuple[int, ...] = (1, 2, 2, 4)
    blocks_per_level: int = 1
    attention: bool = True
    heads: int = 4
    norm_groups: int = 8
    emb_dim: int = 128
    dropout: float = 0.0
    stem_kernel: int = 3  # first convolution's length in samples (odd): a long one sees whole symbols
    attn_levels: tuple[int, ...] = ()  # levels (0 = full length) with attention after each residual block
    kind: str = "unet1d"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.length)


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    width: int = 256
    depth: int = 4
    emb_dim: int = 128
    kind: str = "mlp"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.dim,)


ModelConfig = Union[UNet1DConfig, MLPConfig, UNet2DConfig]


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    d = asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a model config from JSON; unknown kinds or fields are a clear error."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in MODEL_KINDS:
        raise InputError(f"model kind {kind!r} is unknown: expected one of {', '.join(MODEL_KINDS)}")
    cls = {"unet1d": UNet1DConfig, "mlp": MLPConfig, "unet2d": UNet2DConfig}[kind]
    names = {f.name for f in fields(cls)}
    extra = sorted(set(d) - names)
    if extra:
        raise InputError(f"model config has unknown fields {extra} for kind {kind!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**values)


class UNet1D(UNet):
    def __init__(self, config: UNet1DConfig):
        c = config
        n_down = len(c.mults) - 1
        if c.length % (2**n_down):
            raise InputError(
                f"frame length L={c.length} is not divisible by 2^{n_down}={2**n_down}: the U-Net halves it "
                f"{n_down} times; choose L as a multiple of {2**n_down} or fewer levels"
            )
        if c.stem_kernel < 1 or c.stem_kernel % 2 == 0:
            raise InputError(f"stem_kernel={c.stem_kernel} must be odd and positive (the output keeps the length)")
        super().__init__(c, 1, lambda width: Conv1d(c.channels, width, c.stem_kernel, padding=c.stem_kernel // 2),
                         Downsample1D, Upsample1D)


class MLPDenoiser(nn.Module):
    """Residual MLP on 2D points; the timestep embedding is added to every hidden layer."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.embed = SinusoidalEmbedding(config.emb_dim, config.emb_dim)
        self.inp = nn.Linear(config.dim, config.width)
        self.hidden = nn.ModuleList(nn.Linear(config.width, config.width) for _ in range(config.depth))
        self.emb_proj = nn.ModuleList(nn.Linear(config.emb_dim, config.width) for _ in range(config.depth))
        self.out = nn.Linear(config.width, config.dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)  # (B, emb_dim)
        h = self.inp(x_t)  # (B, width)
        for layer, proj in zip(self.hidden, self.emb_proj):
            h = h + layer(torch.nn.functional.silu(h + proj(emb)))
        return self.out(torch.nn.functional.silu(h))  # (B, D)


def fit_to_data(config: ModelConfig, sample_shape: tuple[int, ...]) -> ModelConfig:
    """The config with its input shape taken from the data: (C, L) for the U-Net, (C, H, W) for the 2D
    U-Net, (D,) for the MLP."""
    if isinstance(config, UNet2DConfig):
        if len(sample_shape) != 3:
            raise InputError(f"unet2d needs maps (N, C, H, W); the data has samples of shape {sample_shape}: "
                             f"use --model {suited(sample_shape)}")
        return replace(config, channels=sample_shape[0], height=sample_shape[1], width=sample_shape[2])
    if isinstance(config, UNet1DConfig):
        if len(sample_shape) != 2:
            raise InputError(f"unet1d needs signal frames (N, C, L); the data has samples of shape {sample_shape}: "
                             f"use --model {suited(sample_shape)}")
        return replace(config, channels=sample_shape[0], length=sample_shape[1])
    if len(sample_shape) != 1:
        raise InputError(f"mlp needs points (N, D); the data has samples of shape {sample_shape}: use --model {suited(sample_shape)}")
    return replace(config, dim=sample_shape[0])


def suited(sample_shape: tuple[int, ...]) -> str:
    """The network made for samples of this rank: points, signal frames or maps."""
    return {1: "mlp", 2: "unet1d", 3: "unet2d"}.get(len(sample_shape), "unet1d (frames (N, C, L))")


def build_model(config: ModelConfig) -> nn.Module:
    if isinstance(config, UNet2DConfig):
        return UNet2D(config)
    return UNet1D(config) if isinstance(config, UNet1DConfig) else MLPDenoiser(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
