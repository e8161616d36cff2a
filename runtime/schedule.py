"""Noise schedules: the one source of truth for beta_t, alpha_t and alpha-bar_t.

Everything is float64 ("use float64 for accuracy", improved-diffusion). Array index ``t = 0 .. T-1``
is the paper's step ``t + 1``: ``alphas_bar[0]`` is the least noisy level, ``alphas_bar[T-1]`` the
noisiest. train/ converts these arrays to torch; nothing else computes a schedule.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

SCHEDULE_KINDS = ("linear", "cosine")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _check_T(T: Any) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise InputError(f"schedule T={T!r} is invalid: expected an integer >= 1")
    return int(T)


def _check_open_unit(name: str, value: Any) -> float:
    value = float(value)
    if not (0.0 < value < 1.0) or not math.isfinite(value):
        raise InputError(f"schedule {name}={value!r} is invalid: expected a number in (0, 1)")
    return value


class NoiseSchedule:
    """A discrete DDPM noise schedule of ``T`` steps.

    Build one with :meth:`linear` or :meth:`cosine` (or :meth:`from_dict`). Attributes ``betas``,
    ``alphas`` and ``alphas_bar`` are read-only float64 arrays of shape ``(T,)``.
    """

    __slots__ = ("kind", "params", "T", "betas", "alphas", "alphas_bar", "alphas_bar_prev", "posterior_variance",
                 "snr")

    def __init__(self, kind: str, params: dict[str, Any], betas: np.ndarray):
        self.kind = kind
        self.params = dict(params)
        self.betas = _readonly(betas)
        self.T = int(self.betas.shape[0])
        self.alphas = _readonly(1.0 - self.betas)
        self.alphas_bar = _readonly(np.cumprod(self.alphas))
        # derived once here: the sampler reads them at every step
        #: abar_{t-1} with abar_{-1} = 1 (no noise before the first step), shape (T,)
        self.alphas_bar_prev = _readonly(np.concatenate([[1.0], self.alphas_bar[:-1]]))
        #: variance of q(x_{t-1} | x_t, x0): (1 - abar_{t-1}) / (1 - abar_t) * beta_t, shape (T,)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only where abar = 1 (no noise at all)
            ratio = np.where(self.alphas_bar < 1.0, (1.0 - self.alphas_bar_prev) / (1.0 - self.alphas_bar), 0.0)
        self.posterior_variance = _readonly(ratio * self.betas)
        #: signal-to-noise ratio abar_t / (1 - abar_t), shape (T,)
        with np.errstate(divide="ignore"):  # abar = 1 (no noise) has infinite SNR
            self.snr = _readonly(self.alphas_bar / (1.0 - self.alphas_bar))

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. (2020): betas evenly spaced from ``beta_start`` to ``beta_end``."""
        T = _check_T(T)
        beta_start = _check_open_unit("beta_start", beta_start)
        beta_end = _check_open_unit("beta_end", beta_end)
        if beta_end < beta_start:
            raise InputError(
                f"schedule beta_end={beta_end} is below beta_start={beta_start}: "
                "expected beta_start <= beta_end"
            )
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        return cls("linear", {"T": T, "beta_start": beta_start, "beta_end": beta_end}, betas)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal (2021), eq. 17: abar(t) = f(t) / f(0),
        f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), beta_t = min(1 - abar(t)/abar(t-1), max_beta)."""
        T = _check_T(T)
        s = float(s)
        if not (s >= 0.0) or not math.isfinite(s):
            raise InputError(f"schedule s={s!r} is invalid: expected a finite offset >= 0")
        max_beta = _check_open_unit("max_beta", max_beta)
        steps = np.arange(T + 1, dtype=np.float64)
        # the C library's cos, not numpy's: numpy's SIMD cos differs by an ulp between versions and
        # CPUs (numpy 1.24 with AVX-512 against 2.x), and the schedule's fingerprint is bitwise
        angles = ((steps / T + s) / (1.0 + s)) * (math.pi / 2.0)
        f = np.array([math.cos(a) for a in angles.tolist()], dtype=np.float64) ** 2
        abar = f / f[0]
        betas = np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)
        return cls("cosine", {"T": T, "s": s, "max_beta": max_beta}, betas)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseSchedule:
        """Rebuild a schedule from :meth:`to_dict` output, with the same validation."""
        if not isinstance(d, dict) or d.get("kind") not in SCHEDULE_KINDS:
            kind = d.get("kind") if isinstance(d, dict) else d
            raise InputError(f"schedule kind {kind!r} is unknown: expected one of {', '.join(SCHEDULE_KINDS)}")
        params = {k: v for k, v in d.items() if k not in ("kind", "fingerprint")}
        build = cls.linear if d["kind"] == "linear" else cls.cosine
        try:
            schedule = build(**params)
        except TypeError as exc:
            raise InputError(f"schedule parameters {sorted(params)} do not fit kind {d['kind']!r}: {exc}") from None
        expected = d.get("fingerprint")
        if expected is not None and expected != schedule.fingerprint():
            raise InputError(
                f"schedule fingerprint {str(expected)[:12]}… does not match the values it describes "
                f"({schedule.fingerprint()[:12]}…); the record was edited or written by another version"
            )
        return schedule

    # ---- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description: kind and parameters (plus the fingerprint, checked on load)."""
        return {"kind": self.kind, **self.params, "fingerprint": self.fingerprint()}

    def fingerprint(self) -> str:
        """sha256 (hex) of the little-endian float64 betas: equal values, equal fingerprint."""
        return hashlib.sha256(self.betas.astype("<f8").tobytes()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"NoiseSchedule.{self.kind}({params})"
