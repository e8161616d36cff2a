"""The forward process, the reverse steps and the quantities they share (numpy, float64 inside).

All functions are pure: they read the schedule, never change it, and take their randomness
explicitly (a ``numpy.random.Generator`` or the noise array). ``t`` is a 0-based index, an int or an
int array of shape ``(B,)``; ``t = 0`` is the last denoising step. Results are float64.

References: Ho et al. 2020 (DDPM, eqs. 4, 7, 11), Song et al. 2021 (DDIM, eq. 12),
Efron 2011 / Robbins (Tweedie's formula).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from edgediff.runtime.checks import (
    Timestep,
    check_array,
    check_same_shape,
    check_timesteps,
    per_sample,
    resolve_noise,
)
from edgediff.runtime.errors import InputError
from edgediff.runtime.schedule import NoiseSchedule

VARIANCES = ("small", "large")


def _batch(x: np.ndarray) -> int:
    return int(x.shape[0])


def q_sample(schedule: NoiseSchedule, x0: Any, t: Any, noise: Any) -> np.ndarray:
    """Closed-form forward marginal (DDPM eq. 4): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    x0 = check_array("x0", x0)
    noise = check_array("noise", noise)
    check_same_shape("noise", noise, "x0", x0)
    t = check_timesteps(schedule.T, t, _batch(x0))
    abar = per_sample(schedule.alphas_bar, t, x0.ndim)
    return np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * noise


def score_from_eps(schedule: NoiseSchedule, eps: Any, t: Any) -> np.ndarray:
    """Score of p_t from the epsilon prediction: s = -eps / sqrt(1 - abar_t)."""
    eps = check_array("eps", eps)
    t = check_timesteps(schedule.T, t, _batch(eps))
    return -np.asarray(eps, dtype=np.float64) / np.sqrt(1.0 - per_sample(schedule.alphas_bar, t, eps.ndim))


def eps_from_score(schedule: NoiseSchedule, score: Any, t: Any) -> np.ndarray:
    """Inverse of :func:`score_from_eps`: eps = -sqrt(1 - abar_t) s."""
    score = check_array("score", score)
    t = check_timesteps(schedule.T, t, _batch(score))
    return -np.asarray(score, dtype=np.float64) * np.sqrt(1.0 - per_sample(schedule.alphas_bar, t, score.ndim))


def tweedie_x0(schedule: NoiseSchedule, x_t: Any, eps: Any, t: Any) -> np.ndarray:
    """Tweedie's estimate E[x0 | x_t] = (x_t + (1 - abar_t) s) / sqrt(abar_t)
    = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).

    Near t = T-1, 1/sqrt(abar_t) is large (about 2e4 for the cosine schedule at T = 1000), so errors
    in eps are amplified by that factor there.
    """
    x_t, eps, t = _step_inputs(schedule, x_t, eps, t)
    return _x0_hat(schedule, x_t, eps, t)


class StepCoefficients(NamedTuple):
    """One reverse step as numbers: x0_hat = (x_t - sqrt_1m_abar eps) / sqrt_abar, then
    x_prev = c_x0 x0_hat + c_xt x_t + c_eps eps + sigma z. Floats for one t, (B, 1, ...) arrays for a batch.

    DDPM (eq. 7 through x0_hat) has c_eps = 0; DDIM (eq. 12) has c_xt = 0 and re-derives eps from a
    clipped x0_hat (``recompute_eps``). A sampler computes these once per step, not per call.
    Without clipping, the step is also x_prev = :attr:`a_xt` x_t + :attr:`a_eps` eps + sigma z,
    which a sampler that does not need x0_hat evaluates with fewer array operations.
    """

    sqrt_abar: Any
    sqrt_1m_abar: Any
    c_x0: Any
    c_xt: Any
    c_eps: Any
    sigma: Any
    recompute_eps: bool

    @property
    def a_xt(self) -> Any:
        return self.c_x0 / self.sqrt_abar + self.c_xt

    @property
    def a_eps(self) -> Any:
        return self.c_eps - self.c_x0 * self.sqrt_1m_abar / self.sqrt_abar


def ddpm_coefficients(schedule: NoiseSchedule, t: Timestep, ndim: int = 1, variance: str = "small") -> StepCoefficients:
    """DDPM step t -> t-1: posterior mean of q(x_{t-1} | x_t, x0_hat) and sigma_t (0 at t = 0)."""
    abar_t = per_sample(schedule.alphas_bar, t, ndim)
    abar_prev = per_sample(schedule.alphas_bar_prev, t, ndim)
    beta_t = per_sample(schedule.betas, t, ndim)
    alpha_t = per_sample(schedule.alphas, t, ndim)
    var = per_sample(schedule.posterior_variance if variance == "small" else schedule.betas, t, ndim)
    if isinstance(t, int):
        var = var if t > 0 else 0.0
    else:
        var = var * (t > 0).reshape((-1,) + (1,) * (ndim - 1))
    sqrt, _ = _scalar_ops(abar_t, abar_prev, var)
    return StepCoefficients(
        sqrt_abar=sqrt(abar_t), sqrt_1m_abar=sqrt(1.0 - abar_t),
        c_x0=beta_t * sqrt(abar_prev) / (1.0 - abar_t),  # DDPM eq. 7
        c_xt=(1.0 - abar_prev) * sqrt(alpha_t) / (1.0 - abar_t),
        c_eps=0.0, sigma=sqrt(var), recompute_eps=False,
    )


def ddim_coefficients(schedule: NoiseSchedule, t: Timestep, t_prev: Timestep, eta: float, ndim: int = 1) -> StepCoefficients:
    """DDIM step t -> t_prev (t_prev = -1: abar_prev = 1), with sigma_t(eta) of eq. 16."""
    abar_t = per_sample(schedule.alphas_bar, t, ndim)
    abar_prev = _abar_or_one(schedule, t_prev, ndim)
    sqrt, maximum = _scalar_ops(abar_t, abar_prev)
    sigma = eta * sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * sqrt(1.0 - abar_t / abar_prev)
    return StepCoefficients(
        sqrt_abar=sqrt(abar_t), sqrt_1m_abar=sqrt(1.0 - abar_t),
        c_x0=sqrt(abar_prev), c_xt=0.0,
        c_eps=sqrt(maximum(1.0 - abar_prev - sigma**2, 0.0)),  # "direction pointing to x_t"
        sigma=sigma, recompute_eps=True,
    )


def apply_step(c: StepCoefficients, x_t: np.ndarray, eps: np.ndarray, z: np.ndarray | None = None,
               clip: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The array part of a reverse step, on checked float64 inputs; returns ``(x_prev, x0_hat)``."""
    # 1. Tweedie x0_hat, optionally clipped to the data range
    x0_hat = (x_t - c.sqrt_1m_abar * eps) / c.sqrt_abar
    if clip is not None:
        x0_hat = np.clip(x0_hat, clip[0], clip[1])
        if c.recompute_eps:
            eps = (x_t - c.sqrt_abar * x0_hat) / c.sqrt_1m_abar
    # 2. the mean of the step, 3. plus sigma z
    x_prev = c.c_x0 * x0_hat
    if c.c_xt is not _ZERO:
        x_prev += c.c_xt * x_t
    if c.c_eps is not _ZERO:
        x_prev += c.c_eps * eps
    if z is not None:
        x_prev += c.sigma * z
    return x_prev, x0_hat


_ZERO = 0.0  # the exact object the coefficient builders use for "this term is absent"


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: Any,
    eps: Any,
    t: Any,
    *,
    noise: Any = None,
    rng: np.random.Generator | None = None,
    variance: str = "small",
    clip: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One ancestral DDPM step x_t -> x_{t-1}; returns ``(x_prev, x0_hat)``.

    ``variance="small"`` uses the posterior variance (1 - abar_{t-1}) / (1 - abar_t) beta_t,
    ``"large"`` uses beta_t. No noise is added where t = 0. With ``clip=None`` the mean equals
    (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) (DDPM eq. 11).
    """
    if variance not in VARIANCES:
        raise InputError(f"variance={variance!r} is unknown: expected one of {', '.join(VARIANCES)}")
    x_t, eps, t = _step_inputs(schedule, x_t, eps, t)
    _check_clip(clip)
    z = resolve_noise(noise, rng, x_t.shape, needed=bool(np.any(np.asarray(t) > 0)))
    return apply_step(ddpm_coefficients(schedule, t, x_t.ndim, variance), x_t, eps, z, clip)


def ddim_step(
    schedule: NoiseSchedule,
    x_t: Any,
    eps: Any,
    t: Any,
    t_prev: Any,
    *,
    eta: float = 0.0,
    noise: Any = None,
    rng: np.random.Generator | None = None,
    clip: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12); returns ``(x_prev, x0_hat)``.

    ``t_prev = -1`` means abar_prev = 1 (the final step, which returns x0_hat). ``eta = 0`` is the
    deterministic sampler; ``eta = 1`` with ``t_prev = t - 1`` is the DDPM posterior step. When
    ``clip`` is given, eps is recomputed from the clipped x0_hat (as improved-diffusion does).
    """
    eta = float(eta)
    if not eta >= 0.0:
        raise InputError(f"eta={eta} is negative: expected eta >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
    x_t, eps, t = _step_inputs(schedule, x_t, eps, t)
    t_prev = check_timesteps(schedule.T, t_prev, _batch(x_t), name="t_prev", allow_minus_one=True)
    if np.any(np.asarray(t_prev) >= np.asarray(t)):
        raise InputError(f"t_prev={t_prev} is not below t={t}: expected t_prev < t (the reverse process)")
    _check_clip(clip)
    needs_noise = eta > 0.0 and bool(np.any(np.asarray(t_prev) >= 0))
    z = resolve_noise(noise, rng, x_t.shape, needed=needs_noise)
    return apply_step(ddim_coefficients(schedule, t, t_prev, eta, x_t.ndim), x_t, eps, z, clip)


def _abar_or_one(schedule: NoiseSchedule, t: Timestep, ndim: int) -> np.ndarray | float:
    if isinstance(t, int):
        return float(schedule.alphas_bar[t]) if t >= 0 else 1.0
    return np.where(t >= 0, schedule.alphas_bar[np.maximum(t, 0)], 1.0).reshape((-1,) + (1,) * (ndim - 1))


def _check_clip(clip: tuple[float, float] | None) -> None:
    if clip is not None and not float(clip[0]) < float(clip[1]):
        raise InputError(f"clip=({clip[0]}, {clip[1]}) is empty: expected lo < hi")


def _step_inputs(schedule: NoiseSchedule, x_t: Any, eps: Any, t: Any) -> tuple[np.ndarray, np.ndarray, Timestep]:
    x_t = check_array("x_t", x_t)
    eps = check_array("eps", eps)
    check_same_shape("eps", eps, "x_t", x_t)
    t = check_timesteps(schedule.T, t, _batch(x_t))
    return x_t.astype(np.float64, copy=False), eps.astype(np.float64, copy=False), t


def _x0_hat(schedule: NoiseSchedule, x_t: np.ndarray, eps: np.ndarray, t: Timestep) -> np.ndarray:
    abar_t = per_sample(schedule.alphas_bar, t, x_t.ndim)
    sqrt, _ = _scalar_ops(abar_t)
    return (x_t - sqrt(1.0 - abar_t) * eps) / sqrt(abar_t)


def _scalar_ops(*values: Any) -> tuple[Any, Any]:
    """math.sqrt/max for per-step scalars (the sampler's case: ~20x cheaper), numpy for arrays."""
    if all(isinstance(v, float) for v in values):
        return math.sqrt, max
    return np.sqrt, np.maximum
