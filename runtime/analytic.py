"""Exact denoisers for data whose noisy marginals are known in closed form.

Under the forward process x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, a Gaussian mixture stays a
Gaussian mixture: component k has mean sqrt(abar) mu_k and covariance abar Sigma_k + (1 - abar) I.
Its score is exact, and eps = -sqrt(1 - abar) score. These serve as test oracles (a sampler is
judged against a distribution it must reproduce), in demos and in the score-field plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgediff.runtime.checks import check_array, check_timesteps, per_sample
from edgediff.runtime.errors import InputError
from edgediff.runtime.schedule import NoiseSchedule


@dataclass(frozen=True)
class MixtureSpec:
    """Weights (K,), means (K, D) and one isotropic std per component (K,)."""

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    stds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "means": [list(m) for m in self.means], "stds": list(self.stds)}

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws from the clean mixture (float64, (n, D)) and their component labels."""
        w, mu, sd = np.asarray(self.weights), np.asarray(self.means), np.asarray(self.stds)
        labels = rng.choice(len(w), size=n, p=w)
        return mu[labels] + sd[labels, None] * rng.standard_normal((n, mu.shape[1])), labels


def _ring(k: int, radius: float) -> tuple[tuple[float, float], ...]:
    angles = 2 * np.pi * np.arange(k) / k
    return tuple((round(radius * float(np.cos(a)), 12), round(radius * float(np.sin(a)), 12)) for a in angles)


#: The 2D mixture used across the project (dataset ``gmm2d``, tests, plots): six modes on a ring of
#: radius 2, uneven weights and widths, so both the mode shares and the narrow modes are tested.
GMM2D = MixtureSpec(
    weights=(0.25, 0.2, 0.15, 0.15, 0.15, 0.1),
    means=_ring(6, 2.0),
    stds=(0.15, 0.2, 0.3, 0.15, 0.25, 0.2),
)


class GaussianMixtureDenoiser:
    """Exact epsilon and score of a mixture of isotropic Gaussians, for every t of ``schedule``.

    ``weights`` (K,), ``means`` (K, D), ``stds`` (K,). Inputs x have shape (B, D) (or (B, ...) with
    D elements per sample). Calling it follows the denoiser protocol: float32 in, float32 out.
    """

    def __init__(self, schedule: NoiseSchedule, weights: Any, means: Any, stds: Any):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        sd = np.asarray(stds, dtype=np.float64)
        if mu.ndim != 2 or w.shape != (mu.shape[0],) or sd.shape != w.shape:
            raise InputError(
                f"mixture shapes weights {w.shape}, means {mu.shape}, stds {sd.shape}: expected (K,), (K, D), (K,)"
            )
        if (w <= 0).any() or not np.isclose(w.sum(), 1.0) or (sd <= 0).any():
            raise InputError("mixture weights must be positive and sum to 1, and every std must be positive")
        self.schedule, self.weights, self.means, self.stds = schedule, w, mu, sd

    @classmethod
    def from_spec(cls, schedule: NoiseSchedule, spec: MixtureSpec = GMM2D) -> GaussianMixtureDenoiser:
        return cls(schedule, spec.weights, spec.means, spec.stds)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def responsibilities(self, x: Any, t: Any) -> np.ndarray:
        """Posterior component probabilities p(k | x_t), shape (B, K)."""
        return self._terms(x, t)[0]

    def score(self, x: Any, t: Any) -> np.ndarray:
        """grad_x log p_t(x), float64, same shape as x."""
        resp, diffs, var = self._terms(x, t)
        # (B, K, D) weighted by (B, K, 1) responsibilities, divided by per-component variances
        s = -(resp[:, :, None] * diffs / var[:, :, None]).sum(axis=1)
        return s.reshape(np.shape(x))

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        t = check_timesteps(self.schedule.T, t, np.shape(x_t)[0])
        s = self.score(x_t, t)
        eps = -np.sqrt(1.0 - per_sample(self.schedule.alphas_bar, t, s.ndim)) * s
        return eps.astype(np.float32)

    def assign(self, x: Any) -> np.ndarray:
        """The most probable clean component of each sample (responsibilities at t = 0), shape (B,)."""
        return self.responsibilities(x, 0).argmax(axis=1)

    def mode_shares(self, x: Any) -> np.ndarray:
        """Fraction of the samples assigned to each component, shape (K,)."""
        return np.bincount(self.assign(x), minlength=len(self.weights)) / len(x)

    def sample_x0(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n draws from the clean mixture and their component labels."""
        spec = MixtureSpec(tuple(self.weights), tuple(map(tuple, self.means)), tuple(self.stds))
        return spec.sample(n, rng)

    def _terms(self, x: Any, t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = check_array("x", x).astype(np.float64).reshape(np.shape(x)[0], -1)
        if x.shape[1] != self.dim:
            raise InputError(f"x has {x.shape[1]} values per sample: expected {self.dim}, the mixture's dimension")
        t = check_timesteps(self.schedule.T, t, x.shape[0])
        abar = np.broadcast_to(np.asarray(self.schedule.alphas_bar[t], dtype=np.float64), (x.shape[0],))
        var = abar[:, None] * self.stds[None, :] ** 2 + (1.0 - abar[:, None])  # (B, K)
        diffs = x[:, None, :] - np.sqrt(abar)[:, None, None] * self.means[None]  # (B, K, D)
        sq = (diffs**2).sum(axis=2)
        log_p = np.log(self.weights)[None] - 0.5 * self.dim * np.log(2 * np.pi * var) - 0.5 * sq / var
        log_p -= log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(axis=1, keepdims=True)
        return resp, diffs, var


class GaussianDenoiser:
    """Exact epsilon for x0 ~ N(mean, cov) with a full covariance over the flattened sample.

    p_t = N(sqrt(abar) mean, abar cov + (1 - abar) I); with cov = U diag(lam) U^T the precision is
    U diag(1 / (abar lam + 1 - abar)) U^T. ``shape`` is one sample's shape, e.g. (2, 64) for I/Q.
    """

    def __init__(self, schedule: NoiseSchedule, mean: Any, cov: Any, shape: tuple[int, ...] | None = None):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(cov, dtype=np.float64)
        n = self.mean.size
        if self.cov.shape != (n, n) or not np.allclose(self.cov, self.cov.T):
            raise InputError(f"cov has shape {self.cov.shape}: expected a symmetric ({n}, {n}) matrix")
        lam, self.eigvecs = np.linalg.eigh(self.cov)
        if lam.min() < -1e-10 * max(1.0, lam.max()):
            raise InputError(f"cov has a negative eigenvalue {lam.min():.3g}: expected a covariance matrix")
        self.eigvals = np.maximum(lam, 0.0)
        self.schedule = schedule
        self.shape = tuple(shape) if shape is not None else (n,)
        self.sample_shape = self.shape

    def score(self, x: Any, t: Any) -> np.ndarray:
        x = check_array("x", x).astype(np.float64)
        flat = x.reshape(x.shape[0], -1)
        t = check_timesteps(self.schedule.T, t, flat.shape[0])
        abar = np.broadcast_to(np.asarray(self.schedule.alphas_bar[t], dtype=np.float64), (flat.shape[0],))
        centred = flat - np.sqrt(abar)[:, None] * self.mean[None]  # (B, n)
        coords = centred @ self.eigvecs  # (B, n) in the eigenbasis
        coords /= abar[:, None] * self.eigvals[None] + (1.0 - abar[:, None])
        return -(coords @ self.eigvecs.T).reshape(x.shape)

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        t = check_timesteps(self.schedule.T, t, np.shape(x_t)[0])
        s = self.score(x_t, t)
        return (-np.sqrt(1.0 - per_sample(self.schedule.alphas_bar, t, s.ndim)) * s).astype(np.float32)

    def forward_with_vjp(self, x_t: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, Any]:
        """eps and v -> J^T v in closed form: eps = sqrt(1 - abar) P_t (x - sqrt(abar) mu), P_t symmetric."""
        t_int = np.asarray(t).astype(np.int64)
        eps = self(x_t, t_int)
        abar = np.broadcast_to(np.asarray(self.schedule.alphas_bar[t_int], dtype=np.float64), (len(x_t),))

        def vjp(v: np.ndarray) -> np.ndarray:
            flat = np.asarray(v, dtype=np.float64).reshape(len(v), -1) @ self.eigvecs
            flat /= abar[:, None] * self.eigvals[None] + (1.0 - abar[:, None])
            return (np.sqrt(1 - abar)[:, None] * (flat @ self.eigvecs.T)).reshape(np.shape(v))

        return eps, vjp
