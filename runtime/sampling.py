"""The reverse loop around any denoiser: DDPM (ancestral) and strided DDIM.

A denoiser is any callable ``denoiser(x_t, t) -> eps`` with ``x_t`` float32 of shape (B, ...),
``t`` an int64 array of shape (B,) and ``eps`` float32 of the same shape as ``x_t``. The loop keeps
x in float64 and casts to float32 only at that boundary.

Random draws come from one ``numpy.random.Generator`` in a fixed order: x_T first, then one
standard-normal array of x's shape for every step that adds noise (DDPM: every step with t > 0;
DDIM: every step with eta > 0 that does not end at t_prev = -1). The torch reference loop draws in
the same order, so both can be driven with identical noise.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from edgediff.runtime.checks import check_array
from edgediff.runtime.errors import InputError
from edgediff.runtime.schedule import NoiseSchedule
from edgediff.runtime.solvers import SOLVERS, dpmpp2m, sde_dpmpp2m, unipc
from edgediff.runtime.steps import VARIANCES, StepCoefficients, apply_step, ddim_coefficients, ddpm_coefficients

METHODS = ("ddpm", "ddim", "dpmpp2m", "sde-dpmpp2m", "unipc")
#: Steps a method takes when none are asked for (DDPM: all T).
DEFAULT_STEPS = {"ddim": 50, "dpmpp2m": 15, "sde-dpmpp2m": 20, "unipc": 15}
SPACINGS = ("leading", "trailing", "linspace")

Denoiser = Callable[[np.ndarray, np.ndarray], np.ndarray]
Callback = Callable[[int, int, np.ndarray, np.ndarray], Any]


class SampleResult(NamedTuple):
    """The final sample (float64, the requested shape) and the number of denoiser calls."""

    x: np.ndarray
    nfe: int


def timesteps(T: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """The decreasing training timestep indices a strided sampler visits (diffusers' definitions).

    leading: ``arange(n) * (T // n)`` reversed; trailing: ``round(arange(T, 0, -T/n)) - 1``;
    linspace: ``round(linspace(0, T-1, n))`` reversed. Trailing and linspace start at t = T-1 and
    (for n = T) every spacing visits all of ``T-1 .. 0``.
    """
    if spacing not in SPACINGS:
        raise InputError(f"spacing={spacing!r} is unknown: expected one of {', '.join(SPACINGS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise InputError(f"steps={steps!r} is out of range: expected an integer in [1, {T}] (T = {T})")
    if spacing == "leading":
        ts = (np.arange(steps) * (T // steps))[::-1]
    elif spacing == "trailing":
        # T - i T/n for i < n (not arange(T, 0, -T/n), whose float steps can yield n + 1 values and t = -1)
        ts = np.round(T - np.arange(steps) * (T / steps)) - 1
    else:
        ts = np.round(np.linspace(0, T - 1, steps))[::-1]
    return ts.astype(np.int64)


def sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    spacing: str = "trailing",
    rng: np.random.Generator | None = None,
    callback: Callback | None = None,
    progress: Callable[[int], Any] | None = None,
    variance: str = "small",
    clip: tuple[float, float] | None = None,
    grid: Any = None,
) -> SampleResult:
    """Run the reverse process from x_T ~ N(0, I) of ``shape`` (batch first) to x_0.

    ``method="ddpm"`` with ``steps`` None (or T) runs all T ancestral steps; with fewer steps it runs
    the strided DDPM posterior, which is DDIM with eta = 1 (Song et al. 2021, sec. 4.1).
    ``method="ddim"`` runs ``steps`` (default 50, at most T) DDIM steps with the given ``eta``.
    ``method="dpmpp2m"`` / ``"unipc"`` run the deterministic multistep solvers of
    :mod:`edgediff.runtime.solvers` (default 15 steps; ``eta`` does not apply); ``"sde-dpmpp2m"`` its
    stochastic one (default 20 steps), which draws one normal array per step after x_T.
    ``grid`` replaces the spacing by explicit timesteps (``steps`` of them), as a distilled bundle's.
    ``callback(i, t, x_t, x0_hat)`` receives every Tweedie estimate on the way; ``progress(1)`` is
    called after each step (cheaper: without a callback x0_hat is never formed). ``rng=None`` draws
    fresh, unreproducible entropy.
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is unknown: expected one of {', '.join(METHODS)}")
    shape = _check_shape(shape)
    rng = np.random.default_rng() if rng is None else rng
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng is a {type(rng).__name__}: expected a numpy.random.Generator")
    if steps is None:
        steps = schedule.T if method == "ddpm" else min(DEFAULT_STEPS[method], schedule.T)
    ts = timesteps(schedule.T, steps, spacing) if grid is None else check_grid(grid, schedule.T, steps)
    if method in SOLVERS:
        return _solve(denoiser, schedule, shape, method, ts, rng, callback, progress)
    if method == "ddpm" and steps < schedule.T:
        method, eta = "ddim", 1.0
    if variance not in VARIANCES:
        raise InputError(f"variance={variance!r} is unknown: expected one of {', '.join(VARIANCES)}")
    if not float(eta) >= 0:
        raise InputError(f"eta={eta} is negative: expected eta >= 0")
    if clip is not None and not float(clip[0]) < float(clip[1]):
        raise InputError(f"clip={clip} is empty: expected lo < hi")
    plan = _plan(schedule, ts, method, float(eta), variance)  # every step's numbers, computed once
    x = rng.standard_normal(shape)
    t_batch = np.empty(shape[0], dtype=np.int64)
    combined = [(c.a_xt, c.a_eps) for _, c, _ in plan]
    for i, (t, c, noisy) in enumerate(plan):
        t_batch.fill(t)
        eps = _call(denoiser, x, t_batch)
        z = rng.standard_normal(shape) if noisy else None
        if callback is None and clip is None:
            # the same step in its combined form: x0_hat is not needed, three array operations fewer
            a_xt, a_eps = combined[i]
            x_next = a_xt * x
            x_next += a_eps * eps
            if z is not None:
                x_next += c.sigma * z
        else:
            x_next, x0_hat = apply_step(c, x, eps, z, clip)
            if callback is not None:
                callback(i, int(t), x, x0_hat)
        if progress is not None:
            progress(1)
        x = x_next
    return SampleResult(x, len(ts))


def _solve(denoiser: Denoiser, schedule: NoiseSchedule, shape: tuple[int, ...], method: str, ts: np.ndarray,
           rng: np.random.Generator, callback: Callback | None, progress: Callable[[int], Any] | None) -> SampleResult:
    t_batch = np.empty(shape[0], dtype=np.int64)

    def eps_fn(x: np.ndarray, t: int) -> np.ndarray:
        t_batch.fill(t)
        return _call(denoiser, x, t_batch)

    x_T = rng.standard_normal(shape)
    if method == "sde-dpmpp2m":
        x = sde_dpmpp2m(eps_fn, schedule.alphas_bar, ts, x_T, rng.standard_normal, callback=callback, progress=progress)
    else:
        solver = dpmpp2m if method == "dpmpp2m" else unipc
        x = solver(eps_fn, schedule.alphas_bar, ts, x_T, callback=callback, progress=progress)
    return SampleResult(x, len(ts))


def _plan(schedule: NoiseSchedule, ts: np.ndarray, method: str, eta: float, variance: str) -> list[tuple[int, StepCoefficients, bool]]:
    """(t, coefficients, draws noise) for each step. DDPM adds noise where t > 0; DDIM where eta > 0
    and the step does not end at t_prev = -1."""
    steps = []
    ts_list = ts.tolist()
    for i, t in enumerate(ts_list):
        if method == "ddpm":
            steps.append((t, ddpm_coefficients(schedule, t, variance=variance), t > 0))
        else:
            t_prev = ts_list[i + 1] if i + 1 < len(ts_list) else -1
            steps.append((t, ddim_coefficients(schedule, t, t_prev, eta), eta > 0 and t_prev >= 0))
    return steps


def check_grid(grid: Any, T: int, steps: int) -> np.ndarray:
    """An explicit timestep grid (a distilled bundle's, or --grid): strictly decreasing integers in [0, T-1]."""
    ts = np.asarray(grid)
    if ts.ndim != 1 or ts.size == 0 or len(ts) != steps or ts.dtype.kind not in "iu" or ts.min() < 0 or ts.max() > T - 1 \
            or np.any(np.diff(ts) >= 0):
        raise InputError(f"timestep grid {ts.tolist()[:8]}: expected {steps} strictly decreasing integers in [0, {T - 1}]")
    return ts.astype(np.int64)


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape={shape!r} is not a tuple of integers: expected (B, ...)") from None
    if len(shape) < 1 or min(shape) < 1:
        raise InputError(f"shape={shape} is invalid: expected (B, ...) with every size >= 1")
    return shape


def _call(denoiser: Denoiser, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One network evaluation: float32 at the engine boundary, float64 back, checked once."""
    eps = np.asarray(denoiser(x.astype(np.float32), t))
    if eps.shape != x.shape:
        raise InputError(f"denoiser returned eps of shape {eps.shape}: expected {x.shape}, the shape of x_t")
    eps = eps.astype(np.float64)
    if not np.isfinite(eps.sum()):  # one reduction instead of an elementwise isfinite pass
        check_array("eps (denoiser output)", eps)
    return eps
