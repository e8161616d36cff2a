"""Source separation y = s + b + n with one diffusion prior per source (numpy, any engine).

Each source lives in its own prior's network units: s = a_s s_net, b = a_b b_net in user units, where
a = sqrt(P / 2) for a source of power P (mean |x|^2 per complex sample; a network-unit frame has unit
mean square per real entry). A power not given is taken from the prior's training data (the scale
its bundle records); :func:`source_amplitudes` explains the rule and its failure mode.

Joint reverse diffusion (``joint-ddnm``, ``joint-diffpir``): the two sources are one variable
z = (s_net, b_net), its denoiser runs each prior on its half at the same timestep, and the
measurement operator is the sum A z = a_s s_net + a_b b_net. A A^T = (a_s^2 + a_b^2) I, so DDNM+'s
range-space step and DiffPIR's proximal step are closed form: the residual y - A z0 is split between
the sources in proportion a_s : a_b (noise-aware through sigma_y, see :class:`SumOperator`).
``travel = (L, R)`` walks joint DDNM+'s steps with the time-travel trick (methods.travel_order): where two
QPSK signals overlap in band each sample settles nearer the truth (README, Separation), and averaging
such samples goes past where averaging plain ones levels off. ``restart = (T1, T2, ...)`` then runs one round
per timestep: K more joint samples restarted at T from q(x_T | x0) around the mean so far (the SOI, and
the interferer as what it leaves of the mixture), their mean the next round's start, or, with ``init``, the
rounds alone from an estimate at hand (LMMSE's). With Gaussian priors and an exact sampler the posterior
mean is a fixed point of a round (the restarted samples' mean is linear in where they restart, and
q(x_T | E[x | y]) has the mean of p(x_T | y)), so the rounds contract what a few-step sampler got wrong;
with QPSK priors the fixed point sits nearer the symbols than the plain mean does (README, Separation).

alpha-RGS (Jayashankar et al., NeurIPS 2023): MAP with an alpha-posterior under randomised Gaussian
smoothing. Starting from the LMMSE (or Wiener-gain) estimate, each iteration draws a noise level t
for the SOI and u for the interference, smooths both current estimates to those levels and takes
a gradient step along
    grad = sqrt(abar_t) (z_t - eps_s(s_t, t)) / sigma_t - omega sqrt(abar_u) (z_u - eps_b(b_u, u)) / sigma_u,
the network scores with the injected noise subtracted (score-distillation style), b = (y - a_s s) / a_b.
As in the paper, the interference term carries the alpha-posterior weight omega but not the chain
rule's a_s / a_b: that factor would fade the interferer's prior exactly when it dominates (at -12 dB
SINR, omega = 1 here measured BER 0.0000-0.0013 against 0.09 with the factor; README).
No backward pass, one network call per source per iteration; the step size anneals from eta_max
to eta_min on a cosine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import Problem, Reconstruction, ddnm, diffpir, restart_calls
from edgediff.runtime.inverse.operators import Operator

SEPARATION_METHODS = ("joint-ddnm", "joint-diffpir", "alpha-rgs", "joint-smc")
#: ``auto`` runs alpha-RGS below this SINR (dB) and joint DDNM+ at or above it. Measured with the shipped
#: priors (bench-separate, 100 frames a point): alpha-RGS has the lower BER at -6 dB and below against
#: both interferers (e.g. 0.0004 vs 0.0069 against a chirp at -6 dB), joint DDNM+ at 0 dB (0.0037 vs
#: 0.0104 chirp, 0.082 vs 0.098 rf-qpsk-fast); -3 dB is a tie. The threshold sits between.
AUTO_ALPHA_BELOW_DB = -4.5
#: At and above this SINR (dB) the SOI dominates: bench-separate's matched filter on the mixture itself decodes
#: every bit at +6 dB against both interferers, where the diffusion methods lose a few frames whose interferer
#: sample went astray (joint DDNM+ 0.8 % of bits against a chirp, 2.4 % against rf-qpsk-fast; stop 68) and
#: averaging 4 samples cuts that about 3x. ``separate`` says so: there it buys the waveform's MSE, not bits.
SOI_DOMINATES_DB = 4.5
#: Default network calls per source: what bench-separate measured (alpha-RGS: twice the joint steps).
DEFAULT_STEPS = {"joint-ddnm": 100, "joint-diffpir": 100, "alpha-rgs": 200, "joint-smc": 50}


def choose_method(amp: "Amplitudes") -> tuple[str, float]:
    """The method ``auto`` runs for these source amplitudes, and the SINR (dB) it chose by."""
    sinr_db = 20 * math.log10(max(amp.a_s, 1e-300) / max(amp.a_b, 1e-300))
    return ("alpha-rgs" if sinr_db < AUTO_ALPHA_BELOW_DB else "joint-ddnm"), sinr_db


class SumOperator(Operator):
    """A z = a_s z[:, :C] + a_b z[:, C:] for z = (s_net, b_net) stacked along channels (B, 2C, L)."""

    name = "sum"

    def __init__(self, source_shape: tuple[int, ...], a_s: float, a_b: float):
        c = source_shape[0]
        super().__init__((2 * c, *source_shape[1:]))
        self.c, self.a_s, self.a_b = c, float(a_s), float(a_b)
        self.gram = self.a_s**2 + self.a_b**2
        #: A^+ n = A^T n / gram: per entry of z the noise is a sigma_y / gram, about sigma_y / sqrt(gram)
        self.pinv_noise_gain = 1.0 / math.sqrt(self.gram)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        return (self.c, *self.sample_shape[1:])

    def forward(self, z: np.ndarray) -> np.ndarray:
        return self.a_s * z[:, : self.c] + self.a_b * z[:, self.c:]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return np.concatenate([self.a_s * y, self.a_b * y], axis=1)

    def pinv(self, y: np.ndarray) -> np.ndarray:
        return self.adjoint(y) / self.gram

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        return v / (self.gram + c)


class StackedDenoiser:
    """The denoiser of z = (s_net, b_net): each prior on its own half, at the same timestep."""

    def __init__(self, soi: Any, interference: Any):
        self.soi, self.interference = soi, interference
        self.c = soi.sample_shape[0]
        self.schedule = soi.schedule

    def __call__(self, z: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.concatenate([_batched(self.soi, z[:, : self.c], t), _batched(self.interference, z[:, self.c:], t)], axis=1)


def _batched(d: Any, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return d.batched(x, t) if hasattr(d, "batched") else d(x, t)


def check_pair(soi: Any, interference: Any) -> None:
    """Two priors that can share a mixture: one frame shape and one noise schedule."""
    if tuple(soi.sample_shape) != tuple(interference.sample_shape):
        raise InputError(f"the SOI prior's frames are {tuple(soi.sample_shape)} but the interference prior's are "
                         f"{tuple(interference.sample_shape)}: separate needs priors of one frame shape")
    if len(soi.sample_shape) != 2:
        raise InputError(f"frames of shape {tuple(soi.sample_shape)} are not (C, L) signals: separation works on I/Q frames")
    if soi.schedule.fingerprint() != interference.schedule.fingerprint():
        raise InputError("the two priors were trained with different noise schedules: joint steps need one schedule "
                         f"(SOI {soi.schedule.kind} T={soi.schedule.T}, interference {interference.schedule.kind} "
                         f"T={interference.schedule.T}); re-train one of them")


@dataclass(frozen=True)
class Amplitudes:
    a_s: float  # user units per SOI network unit
    a_b: float
    source: str  # how they were set, for the report


def source_amplitudes(y: np.ndarray, sigma_y: float, soi_scale: float, interference_scale: float,
                      soi_power: float | None = None, interference_power: float | None = None) -> Amplitudes:
    """Amplitudes of the two sources in the mixture (user units), from the powers where given.

    Given both: used as they are. Given one: the other is the mixture's power minus it and the noise
    (refused if that leaves nothing). Given neither: each prior's training scale, refused when the
    mixture's power is off their sum by more than 3 dB (then the powers must be given). A wrong power
    scales that source's prior away from the data; separation degrades smoothly with the error.
    """
    p_y = float(2 * np.mean(np.square(y)))  # mean |y|^2 per complex sample
    noise = 2 * sigma_y**2
    train = (2 * soi_scale**2, 2 * interference_scale**2)
    for name, p in (("--soi-power", soi_power), ("--interference-power", interference_power)):
        if p is not None and not (math.isfinite(p) and p > 0):
            raise InputError(f"{name} {p}: expected a finite power > 0 (mean |x|^2 per complex sample, user units)")
    if soi_power is not None and interference_power is not None:
        return Amplitudes(math.sqrt(soi_power / 2), math.sqrt(interference_power / 2), "given")
    if soi_power is not None or interference_power is not None:
        known = soi_power if soi_power is not None else interference_power
        rest = p_y - known - noise
        if rest <= 0.01 * p_y:
            raise InputError(f"the mixture's power {p_y:.3g} leaves nothing for the other source after {known:.3g} and the "
                             "noise: check the power you gave (mean |x|^2 per complex sample) or give both")
        p_s, p_b = (soi_power, rest) if soi_power is not None else (rest, interference_power)
        return Amplitudes(math.sqrt(p_s / 2), math.sqrt(p_b / 2), "one given, the other from the mixture")
    expected = sum(train) + noise
    if abs(10 * math.log10(max(p_y, 1e-300) / expected)) > 3:
        raise InputError(f"the mixture's power {p_y:.3g} is {10 * math.log10(max(p_y, 1e-300) / expected):+.1f} dB off "
                         f"the priors' training powers ({train[0]:.3g} + {train[1]:.3g}): give --soi-power and/or "
                         "--interference-power (mean |x|^2 per complex sample, user units)")
    return Amplitudes(soi_scale, interference_scale, "training powers")


@dataclass
class Separation:
    soi: np.ndarray  # (B, C, L) user units
    interference: np.ndarray
    nfe_per_source: int
    seconds: float


def separate(soi: Any, interference: Any, y: np.ndarray, sigma_y: float, amplitudes: Amplitudes, *,
             method: str = "joint-ddnm", steps: int = 100, samples: int = 1, seed: int = 0, eta: float = 0.5,
             lam: float = 1.0, zeta: float = 1.0, init: np.ndarray | None = None, omega: float = 1.0,
             lr: tuple[float, float] = (0.1, 1e-3), t_range: tuple[float, float] = (0.02, 0.5), particles: int = 16,
             travel: tuple[int, int] = (0, 0), restart: tuple[int, ...] = (),
             progress: Callable[[int], Any] | None = None) -> Separation:
    """Separate (B, C, L) mixtures in user units; ``samples`` > 1 averages posterior samples (joint
    methods, seeds ``seed .. seed + K - 1``). ``init``: alpha-RGS's starting SOI estimate (user units), or the
    one joint DDNM+'s restarts begin from in place of its own first K samples.
    ``travel``: joint DDNM+'s time-travel trick (L, R); its NFE per source is len(travel_order).
    ``restart = (T1, T2, ...)``: one round after the K samples for each timestep, K more joint DDNM+ passes
    (walked with ``travel`` too) restarted at that timestep from the SOI so far (and what it leaves of the
    mixture), their mean the next (:func:`restart_calls` counts them)."""
    if method not in SEPARATION_METHODS:
        raise InputError(f"--method {method!r} is unknown: expected one of {', '.join(SEPARATION_METHODS)}")
    if tuple(travel) != (0, 0) and method != "joint-ddnm":
        raise InputError(f"--travel applies to joint-ddnm (the time-travel trick of DDNM+); --method {method} "
                         "has no steps to walk again")
    if len(restart) and method != "joint-ddnm":
        raise InputError(f"--restart applies to joint-ddnm (DDNM+ restarted from the mean of its samples); "
                         f"--method {method} does not restart")
    if init is not None and method != "alpha-rgs" and not len(restart):
        raise InputError(f"a starting estimate applies to alpha-rgs, or to joint-ddnm's restarts; --method {method} "
                         "without --restart starts from noise")
    check_pair(soi, interference)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 3 or y.shape[1:] != tuple(soi.sample_shape):
        raise InputError(f"the mixture has shape {y.shape}: expected frames (N, {', '.join(map(str, soi.sample_shape))})")
    if not np.isfinite(y).all():
        raise InputError("the mixture holds NaN or Inf values: clean or drop those frames")
    if not math.isfinite(sigma_y) or sigma_y < 0:
        raise InputError(f"--sigma-y {sigma_y}: expected a finite noise level >= 0")
    start = time.perf_counter()
    if method == "alpha-rgs":
        s = alpha_rgs(soi, interference, y, amplitudes, steps=steps, seed=seed, init=init, omega=omega, lr=lr,
                      t_range=t_range, progress=progress)
        return Separation(s, y - s, steps, time.perf_counter() - start)
    joint = StackedDenoiser(soi, interference)
    op = SumOperator(tuple(soi.sample_shape), amplitudes.a_s, amplitudes.a_b)
    total = np.zeros((len(y), 2 * soi.sample_shape[0], *soi.sample_shape[1:]))
    batch = min(getattr(soi, "max_batch", len(y)), getattr(interference, "max_batch", len(y)))
    if method == "joint-smc":  # particles of a few frames per engine batch; K > 1: K draws, averaged
        from edgediff.runtime.inverse.smc import check_particles, smc

        P = check_particles(particles, int(np.prod(soi.sample_shape)), len(y))
        chunk = max(1, batch // P)
        for i, first in enumerate(range(0, len(y), chunk)):
            res_smc = smc(joint, soi.schedule, Problem(op, y[first:first + chunk], float(sigma_y)), particles=P,
                          steps=steps, rng=np.random.default_rng([seed, i]), draws=samples if samples > 1 else 0,
                          progress=progress)
            total[first:first + chunk] = res_smc.x.mean(axis=1) if samples > 1 else res_smc.x
        c = soi.sample_shape[0]
        return Separation(amplitudes.a_s * total[:, :c], amplitudes.a_b * total[:, c:], steps * P,
                          time.perf_counter() - start)
    calls = restart_calls(soi.schedule, steps, travel, restart, init is None) if method == "joint-ddnm" else steps
    c = soi.sample_shape[0]
    z: np.ndarray | None = None
    if init is not None:  # restarts from the estimate given: round 0 is not run
        z = np.asarray(init, dtype=np.float64) / amplitudes.a_s
        if z.shape != y.shape:
            raise InputError(f"the starting estimate has shape {z.shape}: expected the mixture's {y.shape}")
    for r in range(0 if z is None else 1, 1 + len(restart)):  # round 0 from noise; r >= 1 from round r - 1's mean
        if z is not None:  # a restart begins from the SOI so far and what it leaves of the mixture
            z = np.concatenate([z[:, :c], (y - amplitudes.a_s * z[:, :c]) / amplitudes.a_b], axis=1)
        total = np.zeros_like(total)
        for k in range(samples):
            for i, first in enumerate(range(0, len(y), batch)):
                problem = Problem(op, y[first:first + batch], float(sigma_y))
                rng = np.random.default_rng([seed + k, i] + ([r] if r else []))
                if method == "joint-ddnm":
                    from_mean = None if z is None else (restart[r - 1], z[first:first + batch])
                    res: Reconstruction = ddnm(joint, soi.schedule, problem, steps=steps, eta=eta, rng=rng,
                                               progress=progress, travel=travel, start=from_mean)
                else:
                    res = diffpir(joint, soi.schedule, problem, steps=steps, lam=lam, zeta=zeta, rng=rng,
                                  progress=progress)
                total[first:first + batch] += res.x
        z = total / samples
    return Separation(amplitudes.a_s * z[:, :c], amplitudes.a_b * z[:, c:], calls * samples,
                      time.perf_counter() - start)


def alpha_rgs(soi: Any, interference: Any, y: np.ndarray, amp: Amplitudes, *, steps: int, seed: int,
              init: np.ndarray | None, omega: float, lr: tuple[float, float], t_range: tuple[float, float],
              progress: Callable[[int], Any] | None = None) -> np.ndarray:
    """The SOI estimate (user units) after ``steps`` alpha-RGS iterations; see the module docstring."""
    abar_s, abar_b = soi.schedule.alphas_bar, interference.schedule.alphas_bar
    T = soi.schedule.T
    lo, hi = max(1, int(t_range[0] * T)), max(1, int(t_range[1] * T))
    if not 1 <= lo <= hi < T:
        raise InputError(f"t_range {t_range}: expected 0 < lo <= hi < 1 (fractions of T)")
    eta_max, eta_min = lr
    rng = np.random.default_rng(seed)
    s = (np.asarray(init, dtype=np.float64) if init is not None else y * amp.a_s**2 / (amp.a_s**2 + amp.a_b**2)) / amp.a_s
    for i in range(steps):
        eta = eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * i / steps))
        # 1. random smoothing levels t (SOI) and u (interference), one per frame
        t = rng.integers(lo, hi + 1, len(y))
        u = rng.integers(lo, hi + 1, len(y))
        z1, z2 = rng.standard_normal(s.shape), rng.standard_normal(s.shape)
        b = (y - amp.a_s * s) / amp.a_b
        at, au = abar_s[t][:, None, None], abar_b[u][:, None, None]
        s_t = np.sqrt(at) * s + np.sqrt(1 - at) * z1
        b_u = np.sqrt(au) * b + np.sqrt(1 - au) * z2
        # 2. smoothed scores with the injected noise subtracted, times d(x_t)/dx = sqrt(abar)
        g_s = -np.sqrt(at) * (np.asarray(_batched(soi, s_t.astype(np.float32), t), np.float64) - z1) / np.sqrt(1 - at)
        g_b = -np.sqrt(au) * (np.asarray(_batched(interference, b_u.astype(np.float32), u), np.float64) - z2) / np.sqrt(1 - au)
        # 3. ascend log p_s(s) + omega log p_b((y - a_s s) / a_b)
        s = s + eta * (g_s - omega * g_b)
        if not np.isfinite(s).all():
            raise InputError(f"alpha-RGS diverged at iteration {i + 1}: lower the step size or --omega")
        if progress is not None:
            progress(1)
    return amp.a_s * s


def lmmse_separation(y: np.ndarray, sigma_y: float, amp: Amplitudes, soi_stats: tuple[np.ndarray, np.ndarray],
                     interference_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The SOI's LMMSE estimate from both sources' second-order statistics (network units, scaled by
    the amplitudes): s = mu_s + S_s (S_s + S_b + sigma^2 I)^-1 (y - mu_s - mu_b). The RF Challenge's
    classical baseline, and alpha-RGS's start."""
    (mu_s, cov_s), (mu_b, cov_b) = soi_stats, interference_stats
    m_s, m_b = amp.a_s * mu_s, amp.a_b * mu_b
    c_s, c_b = amp.a_s**2 * cov_s, amp.a_b**2 * cov_b
    n = len(mu_s)
    flat = y.reshape(len(y), -1) - m_s - m_b
    gain = np.linalg.solve(c_s + c_b + sigma_y**2 * np.eye(n), c_s).T  # S_s (S_s + S_b + s^2 I)^-1 (symmetric)
    return (m_s + flat @ gain.T).reshape(y.shape)
