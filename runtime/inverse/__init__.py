"""Reconstruction: diffusion priors for y = A x + n on any engine (numpy only).

``reconstruct(denoiser, y, operator, sigma_y, method=...)`` takes measurements in the user's units,
applies the bundle's normalisation, runs DDNM+ or DPS, and returns frames in the user's units.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import (METHODS, Problem, Reconstruction, ddnm, diffpir, dps, restart_calls,
                                              solver_reconstruction)
from edgediff.runtime.inverse.operators import OPERATORS, Operator, build

RECONSTRUCTION_SAMPLERS = ("ddim", "dpmpp2m", "sde-dpmpp2m")
log = logging.getLogger(__name__)

__all__ = ["METHODS", "OPERATORS", "Operator", "Problem", "Reconstruction", "build", "reconstruct"]


def reconstruct(denoiser: Any, y: np.ndarray, operator: Operator, sigma_y: float, *, method: str = "ddnm",
                steps: int = 100, seed: int = 0, eta: float = 0.5, zeta: float | None = None, lam: float = 1.0,
                exact: bool | None = None, samples: int = 1, sampler: str = "ddim", particles: int = 16,
                travel: tuple[int, int] = (0, 0), restart: tuple[int, ...] = (), init: Any = None,
                progress: Any = None) -> tuple[np.ndarray, Reconstruction]:
    """Reconstruct frames from measurements ``y`` (user units, (B, *measurement) or one frame).

    ``zeta``: DPS step size (default 1.0 with exact gradients, 0.3 without) or DiffPIR's share of
    fresh noise (default 1.0); ``lam``: DiffPIR's data weight; ``eta``: DDNM+'s share of fresh noise.
    ``samples`` K > 1 returns the posterior mean estimate: the average of the K single runs with
    seeds ``seed, seed + 1, ..., seed + K - 1`` (NFE per frame K x steps). One posterior sample
    carries up to twice the posterior mean's MSE where the posterior is broad. ``sampler="dpmpp2m"``
    runs DDNM+'s or DiffPIR's data step inside DPM-Solver++(2M) (deterministic, fewer steps; DPS
    does not compose with it).

    ``method="smc"``: sequential Monte Carlo with ``particles`` per frame (:mod:`.smc`); the output is
    the weighted posterior mean (the MMSE estimate, like LMMSE), or with ``samples`` K > 1, K draws
    from the final particles, shape (B, K, *sample_shape). NFE per frame: particles x steps.

    DDNM+ on its DDIM steps only: ``travel = (L, R)`` walks each block of L steps R more times (the
    time-travel trick, :func:`.methods.travel_order`); ``restart = (T1, T2, ...)`` then runs one round per
    timestep, K passes begun at T from q(x_T | the mean so far) and walked with ``travel``, their mean the
    next start (:func:`.methods.restart_calls` counts the calls); ``init`` begins the rounds there in place
    of the K first passes: frames in user units, or "lmmse" (the bundle's covariance, stats.npz).
    """
    if sampler not in RECONSTRUCTION_SAMPLERS:
        raise InputError(f"--sampler {sampler!r} is unknown: expected one of {', '.join(RECONSTRUCTION_SAMPLERS)}")
    if sampler != "ddim" and method == "dps":
        raise InputError(f"--sampler {sampler} works with ddnm and diffpir; DPS guides x_t through the network's "
                         "Jacobian and runs on its own DDPM steps")
    if method not in METHODS:
        raise InputError(f"method {method!r} is unknown: expected one of {', '.join(METHODS)}")
    travel, restart = tuple(travel), tuple(restart)
    if (travel != (0, 0) or restart) and (method != "ddnm" or sampler != "ddim"):
        raise InputError("--travel and --restart apply to --method ddnm on its own steps (--sampler ddim); "
                         + (f"--method {method}" if method != "ddnm" else f"--sampler {sampler}") + " has neither")
    if init is not None and not restart:
        raise InputError("a starting estimate (--init) applies to --restart's rounds: give --restart T[,T...] "
                         "or leave --init out")
    if method == "smc":
        if sampler != "ddim":
            raise InputError("--method smc runs its own DDPM steps: leave --sampler at ddim")
        return _smc(denoiser, y, operator, sigma_y, steps, seed, particles, samples, progress)
    if not 1 <= steps <= denoiser.schedule.T:
        raise InputError(f"--steps {steps} is out of range: expected 1..{denoiser.schedule.T}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise InputError(f"--samples {samples!r}: expected a whole number of posterior samples >= 1")
    restart_calls(denoiser.schedule, steps, travel, restart)  # checks each round walks more than one block
    y = np.asarray(y)
    if y.shape == operator.measurement_shape:
        y = y[None]
    mean = None if init is None else _start(denoiser, y, operator, sigma_y, init)
    nfe = equivalent = seconds = 0.0
    rounds: list[Reconstruction] = []
    for r in range(0 if mean is None else 1, 1 + len(restart)):  # round 0 from noise; r >= 1 from the mean so far
        start = None if mean is None else (restart[r - 1], denoiser.normalisation.to_network(mean))
        total: np.ndarray | None = None
        for k in range(samples):
            x, res = _reconstruct_once(denoiser, y, operator, sigma_y, method, steps, seed + k, eta, zeta, lam, exact,
                                       progress, sampler, travel=travel, start=start, round_=r)
            total = x if total is None else total + x
            nfe, equivalent, seconds = nfe + res.nfe, equivalent + res.nfe_equivalent, seconds + res.seconds
        assert total is not None
        mean = total / samples
        rounds.append(Reconstruction(mean, int(nfe), equivalent, seconds))
    assert mean is not None
    return mean, Reconstruction(mean, int(nfe), equivalent, seconds, tuple(rounds) if restart else ())


def _start(denoiser: Any, y: np.ndarray, operator: Operator, sigma_y: float, init: Any) -> np.ndarray:
    """The rounds' first estimate in user units: the frames given, or LMMSE from the bundle's covariance."""
    if isinstance(init, str):
        from edgediff.runtime.inverse.baselines import GaussianPrior, lmmse

        if init != "lmmse":
            raise InputError(f"--init {init!r} is unknown: expected lmmse, or starting frames")
        bundle = getattr(denoiser, "bundle", None)
        stats = bundle.stats() if bundle is not None else None
        if stats is None:
            raise InputError("--init lmmse needs the bundle's stats.npz (the training frames' covariance): "
                             "re-export the bundle with this edgediff")
        scale = denoiser.normalisation.scale
        return denoiser.normalisation.to_user(lmmse(Problem(operator, y / scale, float(sigma_y) / scale),
                                                    GaussianPrior(*stats)))
    x0 = np.asarray(init, dtype=np.float64)
    if x0.shape != (len(y), *denoiser.sample_shape) or not np.isfinite(x0).all():
        raise InputError(f"the starting estimate has shape {x0.shape}: expected finite frames "
                         f"({len(y)}, {', '.join(map(str, denoiser.sample_shape))}), one per measurement")
    return x0


def _smc(denoiser: Any, y: Any, operator: Operator, sigma_y: float, steps: int, seed: int, particles: int,
         samples: int, progress: Any) -> tuple[np.ndarray, Reconstruction]:
    """SMC over chunks of frames whose particles fill about one engine batch each."""
    from edgediff.runtime.inverse.smc import check_particles, smc

    y = np.asarray(y)
    if y.shape == operator.measurement_shape:
        y = y[None]
    P = check_particles(particles, int(np.prod(operator.sample_shape)), len(y))
    if operator.frames is not None and operator.frames != len(y):
        raise InputError(f"{operator.frames} per-frame masks for {len(y)} measured frames: give one mask per frame")
    scale = denoiser.normalisation.scale
    chunk = max(1, denoiser.max_batch // P)
    outputs, nfe, seconds = [], 0, 0.0
    for i, first in enumerate(range(0, len(y), chunk)):
        problem = Problem(operator.take(first, first + chunk), y[first:first + chunk] / scale, float(sigma_y) / scale)
        res = smc(denoiser, denoiser.schedule, problem, particles=P, steps=steps, rng=np.random.default_rng([seed, i]),
                  draws=samples if samples > 1 else 0, progress=progress)
        outputs.append(res.x)
        nfe, seconds = res.nfe, seconds + res.seconds
        log.info("SMC frames %d..%d: ESS min %.2f of %d particles, %d resamplings", first, first + len(res.x) - 1,
                 res.ess_min, P, res.resamplings)
    x = denoiser.normalisation.to_user(np.concatenate(outputs))
    return x, Reconstruction(x, nfe, float(nfe), seconds)


def _reconstruct_once(denoiser: Any, y: np.ndarray, operator: Operator, sigma_y: float, method: str, steps: int,
                      seed: int, eta: float, zeta: float | None, lam: float, exact: bool | None,
                      progress: Any, sampler: str = "ddim", travel: tuple[int, int] = (0, 0),
                      start: tuple[int, np.ndarray] | None = None, round_: int = 0) -> tuple[np.ndarray, Reconstruction]:
    if operator.frames is not None and operator.frames != len(y):
        raise InputError(f"{operator.frames} per-frame masks for {len(y)} measured frames: give one mask per frame")
    scale = denoiser.normalisation.scale
    outputs, nfe, equivalent, seconds = [], 0, 0.0, 0.0
    for i, first in enumerate(range(0, len(y), denoiser.max_batch)):
        stop = first + denoiser.max_batch
        problem = Problem(operator.take(first, stop), y[first:stop] / scale, float(sigma_y) / scale)
        rng = np.random.default_rng([seed, i] + ([round_] if round_ else []))
        if sampler != "ddim":
            res = solver_reconstruction(denoiser, denoiser.schedule, problem, steps=steps, data=method, lam=lam, rng=rng,
                                        progress=progress, solver=sampler)
        elif method == "ddnm":
            res = ddnm(denoiser, denoiser.schedule, problem, steps=steps, eta=eta, rng=rng, progress=progress,
                       travel=travel, start=None if start is None else (start[0], start[1][first:stop]))
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
