"""Draw N samples from a loaded bundle in batches, in the user's units (numpy only).

Batch ``i`` draws all its noise from ``numpy.random.default_rng([seed, i])``: the same seed, batch
size and backend give identical output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from edgediff.runtime import grids
from edgediff.runtime.errors import InputError
from edgediff.runtime.sampling import DEFAULT_STEPS, METHODS, check_grid, sample, timesteps


@dataclass(frozen=True)
class SampleRequest:
    n: int
    method: str | None = None  # None: the bundle's own sampler (manifest "sampling" method), else DDIM
    steps: int | None = None
    eta: float | None = None  # None: 1 (stochastic steps forgive model error), 0 for a distilled bundle
    seed: int = 0
    batch: int | None = None  # default: the engine's largest batch, at most n
    spacing: str | None = None  # None: the bundle's own grid at its step count (runtime/grids.py), else trailing
    grid: tuple[int, ...] | None = None  # explicit decreasing timesteps for any sampler but DDPM (--grid SPEC)
    tweedie_every: int = 0  # keep x0_hat every K steps (0: none)

    def check(self, T: int, max_batch: int) -> None:
        """Every bad value is refused before any work starts (so nothing is half-written)."""
        if self.n < 1:
            raise InputError(f"--n {self.n}: expected at least 1 sample")
        if (self.method or "ddim") not in METHODS:
            raise InputError(f"--sampler {self.method!r} is unknown: expected one of {', '.join(METHODS)}")
        if self.steps is not None and not 1 <= self.steps <= T:
            raise InputError(f"--steps {self.steps} is out of range: expected 1..{T} (the bundle's T)")
        if self.eta is not None and not self.eta >= 0:
            raise InputError(f"--eta {self.eta} is negative: expected eta >= 0")
        if self.batch is not None and not 1 <= self.batch <= max_batch:
            raise InputError(f"--batch {self.batch} is outside 1..{max_batch}, the engine's batch range: "
                             f"use --batch {max_batch} or less (or re-export with a larger --max-batch)")
        if self.tweedie_every < 0:
            raise InputError(f"--every {self.tweedie_every}: expected a positive step interval")
        timesteps(T, self.nfe(T), self.spacing or "trailing")
        if self.grid is not None:
            check_grid(np.asarray(self.grid, dtype=np.int64), T, len(self.grid))

    def nfe(self, T: int) -> int:
        """Network evaluations per sample (DDPM default: all T steps; DDIM 50; the solvers 15)."""
        method = self.method or "ddim"
        return self.steps or (T if method == "ddpm" else min(DEFAULT_STEPS[method], T))


@dataclass
class SampleRun:
    x: np.ndarray  # (N, ...) float32, user units
    nfe: int  # network evaluations per sample
    seconds: float
    batches: int
    tweedie_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tweedie: np.ndarray | None = None  # (S, N, ...) float32, user units

    @property
    def samples_per_s(self) -> float:
        return len(self.x) / max(self.seconds, 1e-9)


def for_bundle(req: SampleRequest, distilled: dict[str, Any] | None,
               sampling: dict[str, Any] | None = None) -> tuple[SampleRequest, Any]:
    """The request as the bundle needs it, and its timestep grid: a distilled bundle runs its own
    sampler (DDIM, eta 0) at its own timesteps, and anything else it was not made for is refused; a
    bundle with its own grid (manifest "sampling") runs its sampler (DDIM unless the record names another;
    also the sampler of a request that names none) on it when the request names neither a spacing nor
    another step count. An explicit ``req.grid`` places every sampler's steps (DDPM runs all T)."""
    if not distilled:  # --eta is DDIM's knob: a request that sets it and names no sampler asks for DDIM
        method = req.method or ("ddim" if req.eta is not None else grids.method_of(sampling)) or "ddim"
        req = replace(req, method=method, eta=1.0 if req.eta is None else req.eta)
    if req.grid is not None:
        return _explicit_grid(req, distilled)
    if not distilled:
        if sampling and req.method == grids.method_of(sampling) and req.spacing is None \
                and req.steps in (None, int(sampling["steps"])):
            return replace(req, steps=int(sampling["steps"])), np.asarray(sampling["timesteps"], dtype=np.int64)
        return replace(req, spacing=req.spacing or "trailing"), None
    nfe, sampler = int(distilled["nfe"]), str(distilled.get("sampler", "ddim"))
    req = replace(req, method=req.method or sampler)
    if req.steps not in (None, nfe):
        raise InputError(f"--steps {req.steps}: this bundle was distilled for {nfe} steps; leave --steps out or use {nfe}")
    if req.method != sampler:
        raise InputError(f"--sampler {req.method}: this bundle was distilled for {sampler} at its own {nfe} timesteps")
    if req.eta not in (None, float(distilled.get("eta", 0.0))):
        raise InputError(f"--eta {req.eta}: this bundle was distilled for eta {distilled.get('eta', 0.0)}")
    return replace(req, steps=nfe, eta=float(distilled.get("eta", 0.0))), np.asarray(distilled["timesteps"], dtype=np.int64)


def _explicit_grid(req: SampleRequest, distilled: dict[str, Any] | None) -> tuple[SampleRequest, Any]:
    grid = tuple(int(v) for v in req.grid or ())
    if distilled:
        raise InputError(f"--grid: this bundle was distilled for its own {distilled['nfe']} timesteps; leave --grid out")
    if req.method == "ddpm":
        raise InputError("--grid: DDPM runs every one of the T steps; use --sampler ddim (or a solver) to place fewer")
    if req.spacing is not None:
        raise InputError(f"--grid and --spacing {req.spacing} both place the steps: give one of them")
    if req.steps not in (None, len(grid)):
        raise InputError(f"--steps {req.steps} and --grid's {len(grid)} steps disagree: leave --steps out")
    return replace(req, steps=len(grid), grid=grid), np.asarray(grid, dtype=np.int64)


def grid_label(req: SampleRequest, grid: Any) -> str:
    """How a request's steps are placed, for reports: the bundle's own grid or the named spacing."""
    if req.grid is not None:
        return "the given grid"
    return "the bundle's own grid" if grid is not None else str(req.spacing or "trailing")


def generate(denoiser: Any, req: SampleRequest, progress: Callable[[int], Any] | None = None) -> SampleRun:
    """Sample ``req.n`` frames with a bundle denoiser (it carries schedule, shape, normalisation)."""
    schedule, shape = denoiser.schedule, tuple(denoiser.sample_shape)
    req, grid = for_bundle(req, getattr(denoiser, "distilled", None), getattr(denoiser, "sampling", None))
    req.check(schedule.T, denoiser.max_batch)
    batch = min(req.batch or denoiser.max_batch, req.n)
    n_steps = req.nfe(schedule.T)
    outputs, keeps, kept_t = [], [], []
    nfe = 0
    start = time.perf_counter()
    for i, first in enumerate(range(0, req.n, batch)):
        size = min(batch, req.n - first)
        traj: list[np.ndarray] = []
        ts: list[int] = []

        def keep(step: int, t: int, x_t: np.ndarray, x0_hat: np.ndarray, traj=traj, ts=ts, size=size) -> None:
            if step % req.tweedie_every == 0 or step == n_steps - 1:
                traj.append(x0_hat[:size].astype(np.float32))
                ts.append(t)

        # a fixed-batch engine runs the last, short batch padded; only what was asked is kept
        res = sample(denoiser, schedule, (max(size, denoiser.min_batch), *shape), method=req.method, steps=req.steps,
                     eta=req.eta, spacing=req.spacing or "trailing", rng=np.random.default_rng([req.seed, i]), grid=grid,
                     callback=keep if req.tweedie_every else None, progress=progress)
        nfe = res.nfe
        outputs.append(res.x[:size])
        if traj:
            keeps.append(np.stack(traj))
            kept_t = ts
    seconds = time.perf_counter() - start
    norm = denoiser.normalisation
    x = norm.to_user(np.concatenate(outputs)).astype(np.float32)
    tweedie = norm.to_user(np.concatenate(keeps, axis=1)).astype(np.float32) if keeps else None
    return SampleRun(x, nfe, seconds, len(outputs), np.asarray(kept_t, dtype=np.int64), tweedie)
