"""Reconstruction: diffusion priors for y = A x + n on any engine (numpy only).

``reconstruct(denoiser, y, operator, sigma_y, method=...)`` takes measurements in the user's units,
applies the bundle's normalisation, runs DDNM+ or DPS, and returns frames in the user's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import (METHODS, Problem, Reconstruction, ddnm, diffpir, dps,
                                              solver_reconstruction)
from edgediff.runtime.inverse.operators import OPERATORS, Operator, build

RECONSTRUCTION_SAMPLERS = ("ddim", "dpmpp2m")

__all__ = ["METHODS", "OPERATORS", "Operator", "Problem", "Reconstruction", "build", "reconstruct"]


def reconstruct(denoiser: Any, y: np.ndarray, operator: Operator, sigma_y: float, *, method: str = "ddnm",
                steps: int = 100, seed: int = 0, eta: float = 0.5, zeta: float | None = None, lam: float = 1.0,
                exact: bool | None = None, samples: int = 1, sampler: str = "ddim",
                progress: Any = None) -> tuple[np.ndarray, Reconstruction]:
    """Reconstruct frames from measurements ``y`` (user units, (B, *measurement) or one frame).

    ``zeta``: DPS step size (default 1.0 with exact gradients, 0.3 without) or DiffPIR's share of
    fresh noise (default 1.0); ``lam``: DiffPIR's data weight; ``eta``: DDNM+'s share of fresh noise.
    ``samples`` K > 1 returns the posterior mean estimate: the average of the K single runs with
    seeds ``seed, seed + 1, ..., seed + K - 1`` (NFE per frame K x steps). One posterior sample
    carries up to twice the posterior mean's MSE where the posterior is broad. ``sampler="dpmpp2m"``
    runs DDNM+'s or DiffPIR's data step inside DPM-Solver++(2M) (deterministic, fewer steps; DPS
    does not compose with it).
    """
    if sampler not in RECONSTRUCTION_SAMPLERS:
        raise InputError(f"--sampler {sampler!r} is unknown: expected one of {', '.join(RECONSTRUCTION_SAMPLERS)}")
    if sampler == "dpmpp2m" and method == "dps":
        raise InputError("--sampler dpmpp2m works with ddnm and diffpir; DPS guides x_t through the network's Jacobian "
                         "and runs on its own DDPM steps")
    if method not in METHODS:
        raise InputError(f"method {method!r} is unknown: expected one of {', '.join(METHODS)}")
    if not 1 <= steps <= denoiser.schedule.T:
        raise InputError(f"--steps {steps} is out of range: expected 1..{denoiser.schedule.T}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"--samples {samples!r}: expected a whole number of posterior samples >= 1")
    y = np.asarray(y)
    if y.shape == operator.measurement_shape:
        y = y[None]
    total: np.ndarray | None = None
    nfe = equivalent = seconds = 0.0
    for k in range(samples):
        x, res = _reconstruct_once(denoiser, y, operator, sigma_y, method, steps, seed + k, eta, zeta, lam, exact,
                                   progress, sampler)
        total = x if total is None else total + x
        nfe, equivalent, seconds = nfe + res.nfe, equivalent + res.nfe_equivalent, seconds + res.seconds
    assert total is not None
    mean = total / samples
    return mean, Reconstruction(mean, int(nfe), equivalent, seconds)


def _reconstruct_once(denoiser: Any, y: np.ndarray, operator: Operator, sigma_y: float, method: str, steps: int,
                      seed: int, eta: float, zeta: float | None, lam: float, exact: bool | None,
                      progress: Any, sampler: str = "ddim") -> tuple[np.ndarray, Reconstruction]:
    if operator.frames is not None and operator.frames != len(y):
        raise InputError(f"{operator.frames} per-frame masks for {len(y)} measured frames: give one mask per frame")
    scale = denoiser.normalisation.scale
    outputs, nfe, equivalent, seconds = [], 0, 0.0, 0.0
    for i, first in enumerate(range(0, len(y), denoiser.max_batch)):
        stop = first + denoiser.max_batch
        problem = Problem(operator.take(first, stop), y[first:stop] / scale, float(sigma_y) / scale)
        rng = np.random.default_rng([seed, i])
        if sampler == "dpmpp2m":
            res = solver_reconstruction(denoiser, denoiser.schedule, problem, steps=steps, data=method, lam=lam, rng=rng,
                                        progress=progress)
        elif method == "ddnm":
            res = ddnm(denoiser, denoiser.schedule, problem, steps=steps, eta=eta, rng=rng, progress=progress)
        elif method == "diffpir":
            res = diffpir(denoiser, denoiser.schedule, problem, steps=steps, lam=lam, zeta=1.0 if zeta is None else zeta,
                          rng=rng, progress=progress)
        else:
            has_grad = exact if exact is not None else hasattr(getattr(denoiser, "engine", None), "forward_with_vjp")
            res = dps(denoiser, denoiser.schedule, problem, steps=steps, rng=rng, exact=exact, progress=progress,
                      zeta=(1.0 if has_grad else 0.3) if zeta is None else zeta)
        outputs.append(res.x)
        nfe, equivalent, seconds = res.nfe, res.nfe_equivalent, seconds + res.seconds
    x = denoiser.normalisation.to_user(np.concatenate(outputs))
    return x, Reconstruction(x, nfe, equivalent, seconds)
