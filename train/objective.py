"""What the network is trained to predict, how timesteps are weighted, and the eps view of any target.

Targets (Salimans & Ho 2022, sec. 4): ``eps`` (Ho et al. 2020) or ``v = sqrt(abar) eps - sqrt(1 - abar) x0``.
Whatever the target, every consumer outside training sees an epsilon network: :class:`EpsilonView`
turns a v-network into ``eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t`` inside the module, so the
exported ONNX keeps the ``x_t, t -> eps`` interface and the runtime does not change.

Loss weights: ``none`` (the plain DDPM loss on the target) or ``min-snr`` (Hang et al. 2023): with
SNR_t = abar_t / (1 - abar_t), the per-sample weight is min(SNR, gamma) / SNR for eps and
min(SNR, gamma) / (SNR + 1) for v, i.e. both equal min(SNR, gamma) times the x0 error.
"""

from __future__ import annotations

import torch
from torch import nn

from edgediff.runtime.errors import InputError
from edgediff.runtime.schedule import NoiseSchedule

PREDICTIONS = ("eps", "v")
LOSS_WEIGHTS = ("none", "min-snr")
AUGMENTS = ("none", "phase")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name}={value!r} is unknown: expected one of {', '.join(allowed)}")


def _col(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


def target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The regression target for a batch; ``abar`` is (B,) alphas_bar at each sample's timestep."""
    if prediction == "eps":
        return noise
    a = _col(abar, x0.ndim)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def eps_from_output(prediction: str, out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The network's output as an epsilon estimate (identity for eps; sqrt(a) v + sqrt(1-a) x_t for v)."""
    if prediction == "eps":
        return out
    a = _col(abar, x_t.ndim)
    return a.sqrt() * out + (1 - a).sqrt() * x_t


def loss_weights(kind: str, prediction: str, abar: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B,) per-sample weights of the squared target error (see the module docstring)."""
    if kind == "none":
        return torch.ones_like(abar)
    snr = abar / (1 - abar)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / snr if prediction == "eps" else clipped / (snr + 1)


def rotate_phase(x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """I/Q frames (B, 2, L) rotated by a random carrier phase each: the built-in RF laws are invariant
    to it, so every frame is seen at every phase."""
    theta = torch.rand(x0.shape[0], device=x0.device, generator=generator) * (2 * torch.pi)
    return rotate_by(x0, theta)


def rotate_by(x0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """I/Q frames (B, 2, L) times exp(j theta) with theta (B,) in radians."""
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    i, q = x0[:, 0], x0[:, 1]
    return torch.stack([c * i - s * q, s * i + c * q], dim=1)


class EpsilonView(nn.Module):
    """``x_t, t -> eps`` around a network trained on another target; exports to plain ONNX ops.

    alphas_bar(t) is looked up with a one-hot row times the float32 table (t rounded to the nearest
    index): float arithmetic only, no int64 gather, which TensorRT before 10 handles badly.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prediction: str):
        super().__init__()
        check_choice("prediction", prediction, PREDICTIONS)
        self.net, self.prediction = net, prediction
        self.register_buffer("alphas_bar", torch.tensor(schedule.alphas_bar, dtype=torch.float32), persistent=False)
        self.register_buffer("index", torch.arange(schedule.T, dtype=torch.float32), persistent=False)
        self.config = getattr(net, "config", None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x_t, t)
        if self.prediction == "eps":
            return out
        onehot = (torch.round(t)[:, None] == self.index[None, :]).to(x_t.dtype)  # (B, T)
        abar = onehot @ self.alphas_bar  # (B,)
        return eps_from_output(self.prediction, out, x_t, abar)
