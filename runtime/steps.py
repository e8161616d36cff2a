"""The forward process, the reverse steps and the quantities they share (numpy, float64 inside).

All functions are pure: they read the schedule, never change it, and take their randomness
explicitly (a ``numpy.random.Generator`` or the noise array). ``t`` is a 0-based index, an int or an
int array of shape ``(B,)``; ``t = 0`` is the last denoising step. Results are float64.

References: Ho et al. 2020 (DDPM, eqs. 4, 7, 11), Song et al. 2021 (DDIM, eq. 12),
Efron 2011 / Robbins (Tweedie's formula).
"""

from __future__ import annotations

import math
from typing import Any

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
    return ddpm_update(schedule, x_t, eps, t, z, variance, clip)


def ddpm_update(schedule: NoiseSchedule, x_t: np.ndarray, eps: np.ndarray, t: Timestep, z: np.ndarray | None,
                variance: str = "small", clip: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The DDPM step on checked inputs (float64 arrays, valid t): the sampler's inner loop."""
    ndim = x_t.ndim
    # 1. schedule values at t and t-1 (abar_{-1} = 1)
    abar_t = per_sample(schedule.alphas_bar, t, ndim)
    abar_prev = per_sample(schedule.alphas_bar_prev, t, ndim)
    beta_t = per_sample(schedule.betas, t, ndim)
    alpha_t = per_sample(schedule.alphas, t, ndim)
    # 2. Tweedie x0_hat (optionally clipped to the data range)
    x0_hat = _x0_hat(schedule, x_t, eps, t)
    if clip is not None:
        x0_hat = np.clip(x0_hat, clip[0], clip[1])
    sqrt, _ = _scalar_ops(abar_t, abar_prev)
    # 3. posterior mean of q(x_{t-1} | x_t, x0_hat) (DDPM eq. 7)
    coef_x0 = beta_t * sqrt(abar_prev) / (1.0 - abar_t)
    coef_xt = (1.0 - abar_prev) * sqrt(alpha_t) / (1.0 - abar_t)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    if z is None:
        return mean, x0_hat
    # 4. add sigma_t z, except where t = 0 (the posterior variance is 0 there; beta_0 is masked)
    var = per_sample(schedule.posterior_variance if variance == "small" else schedule.betas, t, ndim)
    if isinstance(t, int):
        return (mean + sqrt(var) * z if t > 0 else mean), x0_hat
    nonzero = (t > 0).astype(np.float64).reshape((-1,) + (1,) * (ndim - 1))
    return mean + nonzero * np.sqrt(var) * z, x0_hat


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
    return ddim_update(schedule, x_t, eps, t, t_prev, eta, z, clip)


def ddim_update(schedule: NoiseSchedule, x_t: np.ndarray, eps: np.ndarray, t: Timestep, t_prev: Timestep,
                eta: float, z: np.ndarray | None, clip: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The DDIM step on checked inputs: the sampler's inner loop."""
    ndim = x_t.ndim
    # 1. abar at t and at t_prev (abar_{-1} = 1)
    abar_t = per_sample(schedule.alphas_bar, t, ndim)
    abar_prev = _abar_or_one(schedule, t_prev, ndim)
    # 2. Tweedie x0_hat (eq. 12, "predicted x0"); re-derive eps if x0_hat was clipped
    x0_hat = _x0_hat(schedule, x_t, eps, t)
    if clip is not None:
        x0_hat = np.clip(x0_hat, clip[0], clip[1])
        eps = (x_t - np.sqrt(abar_t) * x0_hat) / np.sqrt(1.0 - abar_t)
    sqrt, maximum = _scalar_ops(abar_t, abar_prev)
    # 3. sigma_t(eta) (eq. 16)
    sigma = eta * sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * sqrt(1.0 - abar_t / abar_prev)
    # 4. "direction pointing to x_t" and the new sample
    direction = sqrt(maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    x_prev = sqrt(abar_prev) * x0_hat + direction
    if z is not None:
        x_prev = x_prev + sigma * z
    return x_prev, x0_hat


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
