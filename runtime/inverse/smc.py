"""Sequential Monte Carlo for y = A x + n: a posterior sampler whose error shrinks as particles grow.

Gradient-free, any engine, any operator with ``forward``, ``adjoint`` and ``solve_gram`` (mask,
identity, decimation, matrix, separation's sum). It is importance sampling of the model's own
reverse chain (strided DDPM steps, eta = 1), so as the particles grow the weighted particles follow
p_model(x0 | y) ∝ p_model(x0) N(y; A x0, sigma_y^2 I) exactly, whatever the intermediate choices
below; those only decide how many particles that takes (the filtering view of Dou and Song 2024;
twisted SMC, Wu et al. 2023; MCGdiff, Cardoso et al. 2024).

Per step t -> t' (particles x_t with the network's eps and x0_hat at x_t, one NFE each):

1. twisting potentials, the likelihood of y seen through Tweedie's estimate, as a Gaussian:
   g_t(x_t) = N(y; A x0_hat(x_t), sigma_y^2 I + rho_t^2 A A^T), rho_t^2 = v (1 - abar_t) /
   (abar_t v + 1 - abar_t), the posterior variance of x0 under a Gaussian prior of variance v per
   entry (v = 1: frames are normalised to unit RMS); g_0 is the exact likelihood;
2. proposal: the model's transition N(mu, s^2 I) (DDPM posterior, mean sqrt(abar') x0_hat +
   sqrt(1 - abar' - s^2) eps) conditioned on what g_t' says about x_t' once x0_hat(x_t') is
   linearised around mu with the Jacobian of Tweedie's estimate under that Gaussian prior,
   k = sqrt(abar') v / (abar' v + 1 - abar'): the pseudo-observation y'' = A mu + (y - A x0_hat) / k
   = A x_t' + e, Cov e = (sigma_y^2 I + rho_t'^2 A A^T) / k^2. At high noise k is small and y says
   little about x_t'; near the data it pins the observed part. A Gaussian times a linear-Gaussian
   observation, sampled exactly by Matheron's rule (perturb, then correct) with ``solve_gram``;
3. weights, in log space: log w += log Z - log l(x_t') + log g_t'(x_t') - log g_t(x_t), with
   l(x) = N(y''; A x, Cov e) and Z = N(y''; A mu, s^2 A A^T + Cov e) (so p / q = Z / l); the g terms
   telescope to the exact likelihood at the end. Terms constant across particles (log
   determinants) cancel when the weights are normalised per frame;
4. resampling (systematic) when a frame's effective sample size falls below ``ess_threshold * P``.

The output is the weighted posterior mean (the default: the MMSE estimate, what LMMSE is compared
with), or K draws from the final weighted particles. NFE per frame: particles x steps.
Random draws, in order: x_T, then per step the transition noise, the observation noise
(sigma_y part, then rho part) and the resampling uniforms, all from the one ``rng``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import Problem, _schedule_steps
from edgediff.runtime.inverse.operators import Mask, Operator

#: the likelihood needs a width: a noiseless measurement is treated as this (network units)
SIGMA_Y_FLOOR = 1e-4
#: the model's own uncertainty about x0 near the data, per entry (network units): the floor of the twist's
#: variance and the variance of the model's last kernel N(x0_hat(x_1), . I) (see the module docstring)
MODEL_VARIANCE = 1e-2
MAX_PARTICLES = 1 << 16


@dataclass
class SMCResult:
    x: np.ndarray  # (B, *shape) weighted mean, or (B, K, *shape) draws; network units
    nfe: int  # per frame: particles x steps
    seconds: float
    resamplings: int = 0  # resampling events over all frames and steps
    ess_min: float = 0.0  # smallest effective sample size seen, as a fraction of the particles
    ess_log: list[float] = field(default_factory=list)  # mean ESS fraction per step


def _per_particle(op: Operator, particles: int) -> Operator:
    """The operator on a batch where each frame's particles sit next to each other."""
    if isinstance(op, Mask) and op.frames is not None:
        return Mask(np.repeat(op.mask, particles, axis=0), op.sample_shape)
    return op


def _eps(denoiser: Any, x: np.ndarray, t: int) -> np.ndarray:
    tt = np.full(len(x), t, dtype=np.int64)
    call = getattr(denoiser, "batched", None) or denoiser
    eps = np.asarray(call(x.astype(np.float32), tt), dtype=np.float64)
    if not np.isfinite(eps).all():
        raise InputError("the denoiser returned NaN or Inf during SMC")
    return eps


def _quad(op: Operator, r: np.ndarray, c: float) -> np.ndarray:
    """r^T (A A^T + c I)^{-1} r per row (measurement space)."""
    return np.sum((r * op.solve_gram(r, c)).reshape(len(r), -1), axis=1)


def check_particles(particles: Any, sample_size: int, frames: int) -> int:
    if isinstance(particles, bool) or not isinstance(particles, (int, np.integer)) or particles < 1:
        raise InputError(f"--particles {particles!r}: expected a whole number of particles >= 1")
    if particles > MAX_PARTICLES:
        raise InputError(f"--particles {particles}: more than {MAX_PARTICLES}; fewer particles, more frames per call")
    return int(particles)


def smc(denoiser: Any, schedule: Any, problem: Problem, *, particles: int = 16, steps: int = 100,
        rng: np.random.Generator, draws: int = 0, ess_threshold: float = 0.5, prior_variance: float = 1.0,
        model_variance: float = MODEL_VARIANCE, progress: Callable[[int], Any] | None = None) -> SMCResult:
    """SMC posterior of ``problem`` (network units); see the module docstring. ``prior_variance``:
    the data's variance per entry in network units (1 for RMS-normalised frames), for the twist."""
    P = check_particles(particles, int(np.prod(problem.operator.sample_shape)), len(problem.y))
    if type(problem.operator).solve_gram is Operator.solve_gram:
        raise InputError(f"--method smc needs an operator with a closed-form (A A^T + c I)^-1; the "
                         f"{problem.operator.name} operator has none: use ddnm, diffpir or dps")
    if not 0 <= ess_threshold <= 1:
        raise InputError(f"ess_threshold {ess_threshold}: expected a fraction in [0, 1]")
    A = _per_particle(problem.operator, P)
    B, shape = len(problem.y), problem.operator.sample_shape
    y = np.repeat(problem.y, P, axis=0)  # (B P, *measurement)
    sy2 = max(problem.sigma_y, SIGMA_Y_FLOOR) ** 2
    plan = _schedule_steps(schedule, steps)
    start = time.perf_counter()
    x = rng.standard_normal((B * P, *shape))
    logw = np.zeros((B, P))
    result = SMCResult(np.zeros(0), P * len(plan), 0.0, ess_min=1.0)

    def log_g(x0: np.ndarray, var: float) -> np.ndarray:
        """log N(y; A x0, sigma_y^2 I + var A A^T), up to a constant shared by the particles."""
        r = y - A.forward(x0)
        if var <= 0:  # the exact likelihood N(y; A x0, sigma_y^2 I)
            return -0.5 * np.sum((r**2).reshape(len(r), -1), axis=1) / sy2
        return -0.5 * _quad(A, r, sy2 / var) / var

    v = float(prior_variance)

    def terms(i: int) -> tuple[float, float, float, float]:
        """Step i's transition variance s2, Tweedie slope k, rho'^2 and the predictive variance V."""
        _, t_prev, abar, abar_prev = plan[i]
        if t_prev < 0:  # the last kernel: x0 ~ N(x0_hat(x_1), model_variance I)
            return model_variance, 1.0, 0.0, model_variance
        s2 = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
        k = math.sqrt(abar_prev) * v / (abar_prev * v + 1 - abar_prev)
        rho2 = max(v * (1 - abar_prev) / (abar_prev * v + 1 - abar_prev), model_variance)  # Var(x0 | x'), floored
        return s2, k, rho2, k**2 * s2 + rho2

    t0, _, abar0, _ = plan[0]
    eps = _eps(denoiser, x, t0)
    x0 = (x - math.sqrt(1 - abar0) * eps) / math.sqrt(abar0)
    g_now = log_g(x0, terms(0)[3])
    for i, (t, t_prev, abar, abar_prev) in enumerate(plan):
        if t_prev < 0:  # the last step: x0 ~ N(x0_hat, model_variance I) conditioned on y exactly; its
            # normaliser is this step's g, already in the weights
            x = x0 + math.sqrt(model_variance) * rng.standard_normal(x0.shape)
            noise = math.sqrt(sy2) * rng.standard_normal(y.shape)
            x = x + A.adjoint(A.solve_gram(y - A.forward(x) - noise, sy2 / model_variance))
            if progress is not None:
                progress(1)
            break
        # 1. the model's transition N(mu, s2 I) from x_t
        s2, k, rho2, _ = terms(i)
        mu = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - s2, 0.0)) * eps
        # 2. conditioned on y, through x0_hat(x') linearised around mu with the Jacobian of Tweedie's
        #    estimate under the Gaussian prior, k = sqrt(abar') v / (abar' v + 1 - abar'):
        #    y'' = A mu + (y - A x0_hat) / k = A x' + e, Cov e = (sigma_y^2 I + rho'^2 A A^T) / k^2
        #    (Matheron's rule: perturb, then correct)
        resid = (y - A.forward(x0)) / k  # y'' - A mu
        x_tilde = mu + math.sqrt(s2) * rng.standard_normal(mu.shape)
        e = (math.sqrt(sy2) * rng.standard_normal(y.shape) + math.sqrt(rho2) * A.forward(rng.standard_normal(mu.shape))) / k
        scale = s2 + rho2 / k**2  # M = scale A A^T + (sy2 / k^2) I
        x = x_tilde + (s2 / scale) * A.adjoint(A.solve_gram(resid + A.forward(mu - x_tilde) - e, sy2 / (k**2 * scale)))
        # 3. weights: the proposal's normaliser Z(x_t) is g_t(x_t) (the twist is the step's own predictive
        #    likelihood), so the increment is g_t'(x') / l(x'): how far the network's x0_hat(x') strays
        #    from the linearisation the proposal trusted (l in y-space: N(y; A x0 + k A (x' - mu), ...))
        r_lin = y - A.forward(x0 + k * (x - mu))
        log_l = -0.5 * _quad(A, r_lin, sy2 / rho2) / rho2
        eps = _eps(denoiser, x, t_prev)
        x0 = (x - math.sqrt(1 - abar_prev) * eps) / math.sqrt(abar_prev)
        g_now = log_g(x0, terms(i + 1)[3])
        logw += (g_now - log_l).reshape(B, P)
        # 4. resampling where a frame's weights have collapsed
        logw, order = _resample(logw, ess_threshold, rng, result)
        if order is not None:
            x, eps, x0, g_now = x[order], eps[order], x0[order], g_now[order]
        if progress is not None:
            progress(1)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    xs = x.reshape(B, P, *shape)
    if draws:
        picks = np.stack([rng.choice(P, size=draws, p=w[b]) for b in range(B)])
        result.x = np.stack([xs[b, picks[b]] for b in range(B)])
    else:
        result.x = np.einsum("bp,bp...->b...", w, xs)
    result.seconds = time.perf_counter() - start
    return result


def _resample(logw: np.ndarray, threshold: float, rng: np.random.Generator,
              result: SMCResult) -> tuple[np.ndarray, np.ndarray | None]:
    """Systematic resampling of the frames whose ESS fell below threshold; (log weights, flat order)."""
    B, P = logw.shape
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    ess = 1.0 / np.sum(w**2, axis=1) / P  # (B,) as a fraction of P
    result.ess_min = min(result.ess_min, float(ess.min()))
    result.ess_log.append(float(ess.mean()))
    low = ess < threshold
    if not low.any():
        return logw, None
    order = np.arange(B * P).reshape(B, P)
    u = (rng.random(B)[:, None] + np.arange(P)[None]) / P  # systematic: one uniform per frame
    for b in np.flatnonzero(low):
        idx = np.minimum(np.searchsorted(np.cumsum(w[b]), u[b]), P - 1)
        order[b] = b * P + idx
        logw[b] = 0.0
    result.resamplings += int(low.sum())
    return logw, order.reshape(-1)
