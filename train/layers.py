"""Building blocks shared by the epsilon networks.

Every block exports to ONNX opset >= 17 and builds in TensorRT: no Python control flow on tensor
values, no data-dependent shapes, GroupNorm with more than one group (TensorRT has mishandled a
single group), and the timestep enters as a float tensor of shape (B,).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edgediff.runtime.errors import InputError


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of the (float) timestep index, then an MLP (Ho et al. 2020)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(torch.float32)[:, None] * self.freqs[None, :]  # (B, half)
        return self.mlp(torch.cat([torch.sin(args), torch.cos(args)], dim=1))  # (B, hidden)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    if groups < 2 or channels % groups:
        raise InputError(f"GroupNorm over {channels} channels needs groups >= 2 dividing them, got {groups}: "
                         "choose widths that are multiples of norm_groups")
    return nn.GroupNorm(groups, channels)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` (same parameters, same state_dict, same ONNX graph) that can run as a 2D
    convolution over (B, C, 1, L) in channels-last memory: the NHWC layout cuDNN's bf16 tensor-core
    kernels work in, where a 1D convolution in torch's only 3D layout (NCL) may pay a transpose on each
    side of every convolution. Off unless :func:`use_channels_last` turns it on (a training option)."""

    channels_last = False

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not self.channels_last or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        x = input.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C, 1, L), C fastest
        out = F.conv2d(x, weight.unsqueeze(2), bias, (1, self.stride[0]), (0, self.padding[0]), (1, self.dilation[0]),
                       self.groups)
        return out.squeeze(2)  # (B, C_out, L') viewed, its channels still fastest


def use_channels_last(model: nn.Module, on: bool = True) -> int:
    """Run every 1D convolution of ``model`` as a channels-last 2D one (``on``) or as before; returns
    how many it set. The arithmetic is the same convolution's (float32 results agree to rounding)."""
    convs = [m for m in model.modules() if isinstance(m, Conv1d)]
    for m in convs:
        m.channels_last = on
    return len(convs)


#: The convolution for frames (B, C, L) and for maps (B, C, H, W).
CONV = {1: Conv1d, 2: nn.Conv2d}


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv, plus the timestep embedding, twice, around a residual path; over
    frames (``dims`` 1) or maps (``dims`` 2)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0, dims: int = 1):
        super().__init__()
        conv = CONV[dims]
        self.dims = dims
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = conv(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(c_out, c_out, 3, padding=1)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, *cells)
        h = h + self.emb(F.silu(emb))[(...,) + (None,) * self.dims]  # (B, c_out, 1[, 1])
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the cells (the length, or H x W; used at the lowest resolution only)."""

    def __init__(self, channels: int, heads: int, groups: int, dims: int = 1):
        super().__init__()
        if channels % heads:
            raise InputError(f"attention over {channels} channels needs heads dividing them, got {heads}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = CONV[dims](channels, 3 * channels, 1)
        self.proj = CONV[dims](channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        n = math.prod(x.shape[2:])  # cells: static for a given frame or map size
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, n).unbind(1)  # (B, h, c, n)
        scale = (C // self.heads) ** -0.5
        # plain MatMul + Softmax (not Einsum): the ops TensorRT fuses and keeps in fp32 where asked
        weights = torch.softmax(torch.matmul(q.transpose(-2, -1) * scale, k), dim=-1)  # (B, h, n_q, n_k)
        out = torch.matmul(v, weights.transpose(-2, -1)).reshape(x.shape)  # (B, C, *cells)
        return x + self.proj(out)


class Downsample1D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
