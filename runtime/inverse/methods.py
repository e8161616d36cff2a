"""Measurement-guided reverse processes: the diffusion model as a prior for y = A x + n.

All methods work on the network's units (the caller scales y and sigma_y by the bundle's
normalisation) and visit strided timesteps like DDIM, feeding the network training indices.
DiffPIR (Zhu et al. 2023) is the second gradient-free method: see :func:`diffpir`.

DDNM+ (Wang et al. 2023, "Zero-shot image restoration using denoising diffusion null-space model"):
gradient-free, any engine. At each step the Tweedie estimate x0_hat is corrected by a range-space
step x0_c = x0_hat - lambda_t A^+ (A x0_hat - y); the noise-aware variant (their eq. 17) shrinks
lambda_t when the measurement noise a_t sigma_y would exceed the noise level sigma_t of the next
step, and spends the rest of the noise budget on fresh noise. Their time-travel trick (sec. 3.3; RePaint's
resampling, Lugmayr et al. 2022) is :func:`travel_order`: after every L steps the sample is noised back
by the forward process to where those steps began and walks them again, R times, so that what the data
step settled late is harmonised with what the prior decided early (at (1 + R) times the calls).

DPS (Chung et al. 2023, "Diffusion posterior sampling for general noisy inverse problems"): after
each DDPM-posterior step, x_prev -= zeta / ||y - A x0_hat|| * grad_{x_t} ||y - A x0_hat(x_t)||^2.
Exact with an engine that offers a vector-Jacobian product (the torch backend): one forward and one
backward pass per step, about 2 NFE-equivalents. Engines without gradients use the Jacobian-free
approximation d x0_hat / d x_t ~= I / sqrt(abar_t) (the network's own Jacobian is dropped, as in
manifold-preserving guided diffusion, He et al. 2024): 1 NFE per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.operators import Operator
from edgediff.runtime.sampling import timesteps

METHODS = ("ddnm", "diffpir", "dps", "smc")


@dataclass
class Problem:
    """y = A x + n with n ~ N(0, sigma_y^2 I), in the network's units; y is batched (B, *measurement)."""

    operator: Operator
    y: np.ndarray
    sigma_y: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.sigma_y) or self.sigma_y < 0:
            raise InputError(f"--sigma-y {self.sigma_y}: expected a finite noise level >= 0")
        self.y = self.operator.check_measurement(self.y)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.y), *self.operator.sample_shape)


@dataclass
class Reconstruction:
    x: np.ndarray  # (B, *sample_shape), float64, network units
    nfe: int  # forward network evaluations per frame
    nfe_equivalent: float  # forward + backward passes, in forward-pass units
    seconds: float
    #: reconstruct() with --restart: the estimate after each round it ran (the first passes' mean, then each
    #: restarted round's), with the calls and seconds spent up to it; the last is this one's
    rounds: tuple[Reconstruction, ...] = ()


Progress = Callable[[int], Any]


def _eps(denoiser: Any, x: np.ndarray, t: int) -> np.ndarray:
    eps = np.asarray(denoiser(x.astype(np.float32), np.full(len(x), t, dtype=np.int64)), dtype=np.float64)
    if not np.isfinite(eps).all():
        raise InputError("the denoiser returned NaN or Inf during reconstruction")
    return eps


def _schedule_steps(schedule: Any, steps: int) -> list[tuple[int, int, float, float]]:
    """(t, t_prev, abar_t, abar_prev) for strided trailing steps; t_prev = -1 has abar_prev = 1."""
    ts = timesteps(schedule.T, steps, "trailing").tolist()
    pairs = zip(ts, ts[1:] + [-1])
    return [(t, tp, float(schedule.alphas_bar[t]), float(schedule.alphas_bar[tp]) if tp >= 0 else 1.0) for t, tp in pairs]


def travel_order(steps: int, travel: tuple[int, int] = (0, 0)) -> list[int]:
    """The order in which DDNM+ visits its ``steps`` strided steps with the time-travel trick
    ``travel = (L, R)``: each block of L steps is walked 1 + R times (the last block once, since nothing
    is left to harmonise with it); (0, 0) walks each step once. Its length is the NFE per sample."""
    length, repeats = travel
    if length < 0 or repeats < 0 or (length == 0) != (repeats == 0):
        raise InputError(f"--travel {length}:{repeats}: expected L:R with L >= 1 steps and R >= 1 repeats "
                         "(or 0:0 for none)")
    if length == 0:
        return list(range(steps))
    if length >= steps:
        raise InputError(f"--travel {length}:{repeats}: blocks of {length} steps in {steps} steps leave nothing to "
                         "walk again (the last block is walked once): give L below the steps, "
                         f"e.g. {max(1, steps // 10)}:{repeats}")
    order: list[int] = []
    for first in range(0, steps, length):
        block = list(range(first, min(first + length, steps)))
        order += block * (1 if block[-1] == steps - 1 else 1 + repeats)
    return order


def ddnm(denoiser: Any, schedule: Any, problem: Problem, *, steps: int = 100, eta: float = 0.85,
         rng: np.random.Generator, progress: Progress | None = None,
         travel: tuple[int, int] = (0, 0), start: tuple[int, np.ndarray] | None = None) -> Reconstruction:
    """DDNM+ with strided steps; with sigma_y = 0 the result satisfies A x = y exactly (A A^+ = I).
    ``travel = (L, R)``: the time-travel trick (:func:`travel_order`). ``start = (T, x0)``: begin at the
    first of the strided steps at or below timestep T from q(x_T | x0), an estimate already at hand,
    rather than from pure noise at the top (:func:`restart_steps`)."""
    A, y = problem.operator, problem.y
    # the noise that A^+ carries into x: sigma_y for masks and denoising, less where A^+ averages (sums)
    sigma_y = problem.sigma_y * getattr(A, "pinv_noise_gain", 1.0)
    plan = _schedule_steps(schedule, steps)
    began = time.perf_counter()
    if start is None:
        x = rng.standard_normal(problem.shape)
    else:
        plan = plan[len(plan) - restart_steps(schedule, steps, start[0]):]
        x = math.sqrt(plan[0][2]) * start[1] + math.sqrt(1 - plan[0][2]) * rng.standard_normal(problem.shape)
    order = travel_order(len(plan), travel)
    last = -1
    for i in order:
        t, _, abar, abar_prev = plan[i]
        if i <= last:  # travel back: q(x_t | x_s) from the level the last step reached (s < t)
            ratio = abar / plan[last][3]
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * rng.standard_normal(x.shape)
        last = i
        eps = _eps(denoiser, x, t)
        # 1. Tweedie x0_hat
        x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        # 2. noise-aware range-space correction (DDNM+ eq. 17)
        a, sigma_next = math.sqrt(abar_prev), math.sqrt(1 - abar_prev)
        if sigma_next >= a * sigma_y:
            lam, gamma = 1.0, math.sqrt(max(sigma_next**2 - (a * sigma_y) ** 2, 0.0))
        else:
            lam, gamma = sigma_next / (a * sigma_y), 0.0
        x0c = x0 - lam * A.pinv(A.forward(x0) - y)
        # 3. back to the next noise level: the remaining variance gamma^2 as fresh noise and eps
        x = a * x0c
        if gamma > 0:
            x = x + gamma * (eta * rng.standard_normal(x.shape) + math.sqrt(1 - eta**2) * eps)
        if progress is not None:
            progress(1)
    return Reconstruction(x, len(order), float(len(order)), time.perf_counter() - began)


def restart_steps(schedule: Any, steps: int, t: int) -> int:
    """How many of ``steps`` strided steps lie at or below timestep ``t``: the network calls of one DDNM+
    pass restarted there (``ddnm(start=(t, x0))``)."""
    if not 1 <= t < schedule.T:
        raise InputError(f"--restart {t}: expected a timestep in 1..{schedule.T - 1} to restart from")
    count = sum(1 for p in _schedule_steps(schedule, steps) if p[0] <= t)
    if count == 0:
        raise InputError(f"--restart {t}: none of the {steps} strided steps lies at or below timestep {t}: "
                         "restart higher or give more steps")
    return count


def restart_calls(schedule: Any, steps: int, travel: tuple[int, int] = (0, 0), restart: tuple[int, ...] = (),
                  first: bool = True) -> int:
    """DDNM+'s network calls (per source, for the joint one) and per sample: the first pass (not counted where ``first`` is
    False, a start given) and one restarted pass per timestep of ``restart`` from there down, each walked with
    ``travel``. Checks both."""
    calls = len(travel_order(steps, travel)) * first
    for t in restart:
        below = restart_steps(schedule, steps, t)
        if travel[0] >= below:
            raise InputError(f"--restart {t} walks {below} of the {steps} steps, no more than --travel's blocks of "
                             f"{travel[0]}: restart higher or give --travel a shorter L")
        calls += len(travel_order(below, travel))
    return calls


def solver_reconstruction(denoiser: Any, schedule: Any, problem: Problem, *, steps: int = 20, data: str = "ddnm",
                          lam: float = 1.0, rng: np.random.Generator, progress: Progress | None = None,
                          solver: str = "dpmpp2m") -> Reconstruction:
    """DDNM+ or DiffPIR data steps inside DPM-Solver++(2M): deterministic, second order, so fewer steps.

    The solver advances on data predictions; each x0_hat is first made consistent with y, by DDNM+'s
    noise-aware range-space step (lambda_t = min(1, sigma_next / (alpha_next sigma_y))) or DiffPIR's
    proximal step (rho_t = lam sigma_y^2 abar_t / (1 - abar_t)). DPS does not compose (its guidance
    acts on x_t after the step, through the network's Jacobian), nor does UniPC's corrector, which
    would re-use an unconstrained model output. ``solver="sde-dpmpp2m"``: the same data steps inside
    the stochastic SDE-DPM-Solver++(2M), whose fresh noise forgives earlier errors."""
    from edgediff.runtime.solvers import dpmpp2m, sde_dpmpp2m

    A, y = problem.operator, problem.y
    sigma_y = problem.sigma_y * getattr(A, "pinv_noise_gain", 1.0)
    ts = timesteps(schedule.T, steps, "trailing")
    abar = schedule.alphas_bar[ts]

    def data_step(i: int, x0: np.ndarray, alpha_next: float, sigma_next: float) -> np.ndarray:
        if data == "diffpir":
            return A.proximal(x0, y, lam * problem.sigma_y**2 * abar[i] / (1 - abar[i]))
        weight = 1.0 if sigma_y == 0 or sigma_next >= alpha_next * sigma_y else sigma_next / (alpha_next * sigma_y)
        return x0 - weight * A.pinv(A.forward(x0) - y)

    start = time.perf_counter()

    def eps_fn(x: np.ndarray, t: int) -> np.ndarray:
        return _eps(denoiser, x, t)

    x_T = rng.standard_normal(problem.shape)
    if solver == "sde-dpmpp2m":
        x = sde_dpmpp2m(eps_fn, schedule.alphas_bar, ts, x_T, rng.standard_normal, progress=progress, data_step=data_step)
    else:
        x = dpmpp2m(eps_fn, schedule.alphas_bar, ts, x_T, progress=progress, data_step=data_step)
    return Reconstruction(x, len(ts), float(len(ts)), time.perf_counter() - start)


def diffpir(denoiser: Any, schedule: Any, problem: Problem, *, steps: int = 100, lam: float = 1.0, zeta: float = 0.3,
            rng: np.random.Generator, progress: Progress | None = None) -> Reconstruction:
    """DiffPIR (Zhu et al. 2023): a closed-form proximal data step on x0_hat at every step,
    x0_d = argmin ||y - A x||^2 + rho_t ||x - x0_hat||^2 with rho_t = lam sigma_y^2 / sigma_bar_t^2,
    sigma_bar_t = sqrt((1 - abar_t) / abar_t), then back to t_prev with a share zeta of fresh noise.
    Gradient-free; with sigma_y = 0 the data step is the exact projection A x = y."""
    A, y, sigma_y = problem.operator, problem.y, problem.sigma_y
    plan = _schedule_steps(schedule, steps)
    start = time.perf_counter()
    x = rng.standard_normal(problem.shape)
    for t, t_prev, abar, abar_prev in plan:
        eps = _eps(denoiser, x, t)
        x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        # 1. data step: the prior term weighs sigma_y^2 against the denoiser's noise level sigma_bar_t^2
        rho = lam * sigma_y**2 * abar / (1 - abar)
        x0d = A.proximal(x0, y, rho)
        # 2. back to t_prev: the effective noise of x_t given x0d, mixed with fresh noise
        eps_hat = (x - math.sqrt(abar) * x0d) / math.sqrt(1 - abar)
        x = math.sqrt(abar_prev) * x0d
        if t_prev >= 0:
            x = x + math.sqrt(1 - abar_prev) * (math.sqrt(1 - zeta) * eps_hat + math.sqrt(zeta) * rng.standard_normal(x.shape))
        if progress is not None:
            progress(1)
    return Reconstruction(x, len(plan), float(len(plan)), time.perf_counter() - start)


#: Jacobian-free DPS takes d x0_hat / d x_t as Tweedie's Jacobian under a Gaussian prior of this
#: variance per entry, sqrt(abar) v / (abar v + 1 - abar) I: I / sqrt(abar) (the network's Jacobian
#: merely dropped) wherever abar v >> 1 - abar, but bounded where abar < 1 / v. Unbounded, the
#: guidance explodes at the start of a cosine schedule (abar ~ 1e-9): NMSE +9 dB on the shipped
#: priors, -23.2 dB (QPSK) and -20.9 dB (chirp) with v = 100, 50 % missing; v = 1 (a unit-RMS
#: Gaussian) guides too weakly (-19.0 dB QPSK, and 0.21 instead of 0.04 in the Gaussian-posterior test).
JF_PRIOR_VARIANCE = 100.0


def dps(denoiser: Any, schedule: Any, problem: Problem, *, steps: int = 100, zeta: float = 1.0,
        rng: np.random.Generator, exact: bool | None = None, progress: Progress | None = None) -> Reconstruction:
    """DPS with DDPM-posterior strided steps; exact gradients when the engine offers ``vjp``."""
    A, y = problem.operator, problem.y
    vjp_engine = getattr(denoiser, "forward_with_vjp", None) or getattr(getattr(denoiser, "engine", None),
                                                                        "forward_with_vjp", None)
    if exact and vjp_engine is None:
        raise InputError("exact DPS needs gradients through the network: use --backend torch (or --dps-approx)")
    use_exact = vjp_engine is not None if exact is None else exact
    plan = _schedule_steps(schedule, steps)
    start = time.perf_counter()
    x = rng.standard_normal(problem.shape)
    for t, _, abar, abar_prev in plan:
        s0, s1 = math.sqrt(abar), math.sqrt(1 - abar)
        if use_exact:
            eps32, vjp = vjp_engine(x.astype(np.float32), np.full(len(x), t, dtype=np.float32))
            eps = np.asarray(eps32, dtype=np.float64)
        else:
            eps, vjp = _eps(denoiser, x, t), None
        x0 = (x - s1 * eps) / s0
        residual = A.forward(x0) - y
        norms = np.sqrt((residual.reshape(len(x), -1) ** 2).sum(axis=1)).reshape((-1,) + (1,) * (x.ndim - 1))
        g_x0 = 2 * A.adjoint(residual)  # gradient of ||A x0 - y||^2 with respect to x0
        if vjp is not None:  # through x0_hat = (x_t - s1 eps(x_t)) / s0
            grad = (g_x0 - s1 * np.asarray(vjp(g_x0.astype(np.float32)), dtype=np.float64)) / s0
        else:  # Jacobian-free: d x0_hat / d x_t taken as Tweedie's under a broad Gaussian prior
            grad = g_x0 * (s0 * JF_PRIOR_VARIANCE / (abar * JF_PRIOR_VARIANCE + 1 - abar))
        # DDPM posterior step (DDIM with eta = 1) from x_t with the unguided x0_hat, then the guidance
        sigma = math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * rng.standard_normal(x.shape)
        x = x - zeta / np.maximum(norms, 1e-12) * grad
        if progress is not None:
            progress(1)
    per_step = 2.0 if use_exact else 1.0
    return Reconstruction(x, len(plan), per_step * len(plan), time.perf_counter() - start)
