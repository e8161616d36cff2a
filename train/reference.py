"""The torch reference: forward process and reverse steps written straight from the papers' equations.

Independent of the numpy runtime on purpose (it shares only the schedule's values, converted by
:func:`schedule_tensors`), so that parity tests between the two catch a mistake in either. The DDPM
mean here is the seed formula (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t), not the
posterior mean through x0_hat that the runtime uses.

Noise is drawn from a ``numpy.random.Generator`` in the same order as
:func:`edgediff.runtime.sample` (x_T, then one array per noisy step), so both loops can be driven
with identical noise.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from edgediff.runtime.schedule import NoiseSchedule

TorchDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def schedule_tensors(
    schedule: NoiseSchedule, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The runtime's float64 schedule arrays as torch tensors (the only thing shared with numpy)."""
    arrays = {"betas": schedule.betas, "alphas": schedule.alphas, "alphas_bar": schedule.alphas_bar}
    return {k: torch.from_numpy(np.array(v)).to(device=device, dtype=dtype) for k, v in arrays.items()}


def _at(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast over a (B, ...) tensor."""
    return values[t].reshape(-1, *([1] * (ndim - 1)))


def q_sample(sched: dict[str, torch.Tensor], x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4)."""
    abar = _at(sched["alphas_bar"], t, x0.ndim)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def score_from_eps(sched: dict[str, torch.Tensor], eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s = grad log p_t(x_t) = -eps / sqrt(1 - abar_t)."""
    return -eps / (1 - _at(sched["alphas_bar"], t, eps.ndim)).sqrt()


def tweedie_x0(sched: dict[str, torch.Tensor], x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t + (1 - abar_t) s) / sqrt(abar_t), with s the score."""
    abar = _at(sched["alphas_bar"], t, x_t.ndim)
    return (x_t + (1 - abar) * score_from_eps(sched, eps, t)) / abar.sqrt()


def ddpm_step(
    sched: dict[str, torch.Tensor], x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
    noise: torch.Tensor | None, variance: str = "small",
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM eq. 11: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z."""
    n = x_t.ndim
    beta, alpha, abar = (_at(sched[k], t, n) for k in ("betas", "alphas", "alphas_bar"))
    abar_prev = torch.where(t > 0, sched["alphas_bar"][(t - 1).clamp(min=0)], torch.ones_like(sched["alphas_bar"][t]))
    abar_prev = abar_prev.reshape(-1, *([1] * (n - 1)))
    mean = (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()
    x0_hat = tweedie_x0(sched, x_t, eps, t)
    if noise is None:
        return mean, x0_hat
    sigma2 = (1 - abar_prev) / (1 - abar) * beta if variance == "small" else beta
    keep = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (n - 1)))
    return mean + keep * sigma2.sqrt() * noise, x0_hat


def ddim_step(
    sched: dict[str, torch.Tensor], x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
    eta: float, noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM eq. 12 with sigma_t(eta) from eq. 16; t_prev = -1 means abar_prev = 1."""
    abar = sched["alphas_bar"][t]
    abar_prev = sched["alphas_bar"][t_prev] if t_prev >= 0 else torch.ones_like(abar)
    x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    x_prev = abar_prev.sqrt() * x0_hat + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, x0_hat


def spaced_timesteps(T: int, steps: int, spacing: str) -> list[int]:
    """Decreasing timestep indices for a strided sampler (diffusers' leading/trailing/linspace)."""
    if spacing == "leading":
        return [i * (T // steps) for i in range(steps)][::-1]
    if spacing == "trailing":
        return [int(round(T - i * T / steps)) - 1 for i in range(steps)]
    if spacing == "linspace":
        return [int(v) for v in np.round(np.linspace(0, T - 1, steps))][::-1]
    raise ValueError(f"unknown spacing {spacing!r}")


@torch.no_grad()
def sample(
    model: TorchDenoiser, schedule: NoiseSchedule, shape: tuple[int, ...], rng: np.random.Generator, *,
    method: str = "ddpm", steps: int | None = None, eta: float = 0.0, spacing: str = "trailing",
    variance: str = "small", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The research-repository loop: torch all the way, ``model(x_t, t_float) -> eps``.

    Strided DDPM is DDIM with eta = 1, as in the runtime. Returns the final sample.
    """
    sched = schedule_tensors(schedule, dtype, device)

    def draw() -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape)).to(device=device, dtype=dtype)

    T = schedule.T
    steps = steps or (T if method == "ddpm" else min(50, T))
    if method == "ddpm" and steps < T:
        method, eta = "ddim", 1.0
    ts = list(range(T - 1, -1, -1)) if method == "ddpm" else spaced_timesteps(T, steps, spacing)
    x = draw()
    for i, t in enumerate(ts):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        eps = model(x, t_batch.to(dtype)).to(dtype)
        if method == "ddpm":
            x, _ = ddpm_step(sched, x, eps, t_batch, draw() if t > 0 else None, variance)
        else:
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x, _ = ddim_step(sched, x, eps, t, t_prev, eta, draw() if eta > 0 and t_prev >= 0 else None)
    return x
