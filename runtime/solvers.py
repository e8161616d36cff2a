"""High-order multistep solvers of the diffusion ODE in data-prediction form: fewer network calls.

Both work in the half-log-SNR variable lambda_t = log(alpha_t / sigma_t) with alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t), on the data prediction x0_hat = (x_t - sigma_t eps) / alpha_t (Tweedie),
and end at sigma = 0, where the last step returns x0_hat. Float64 throughout; one network call per
step; the only random draw is x_T.

DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2, midpoint form), h_i = lambda_{i+1} - lambda_i:

1. first step (no history): x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D0, D0 = x0_hat_i;
2. later steps: r = h_{i-1} / h_i, D1 = (x0_hat_i - x0_hat_{i-1}) / r and
   x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) (D0 + D1 / 2);
3. the last step is first order ("lower order final"), which at sigma = 0 is x0_hat itself.

SDE-DPM-Solver++(2M) (Lu et al. 2022, section 4 and appendix; diffusers' "sde-dpmsolver++"): the same
data predictions through the reverse SDE instead of the ODE, so each step injects fresh noise that
forgives earlier errors, as DDPM's steps do:

  x_{i+1} = (sigma_{i+1}/sigma_i) e^{-h} x_i + alpha_{i+1} (1 - e^{-2h}) (D0 + D1 / 2)
            + sigma_{i+1} sqrt(1 - e^{-2h}) z,   z ~ N(0, I) drawn every step (times 0 at sigma = 0),

first order (D1 = 0) at the first and the last step. Its random draws: x_T, then one z per step.

UniPC (Zhao et al. 2023, "UniPC", B(h) = e^h - 1, i.e. "bh2"), order 2 with lower order at the start
and at the end: a predictor UniP-p (eq. 8) and, from the second step on, a corrector UniC-p applied to
x_i with the model output at x_i before the next prediction (no extra network call).

All three reproduce diffusers' DPMSolverMultistepScheduler (dpmsolver++ and sde-dpmsolver++, order
2, midpoint, lower_order_final, final_sigmas_type "zero") and UniPCMultistepScheduler (bh2, order 2)
to float64 rounding when given the same timesteps (and, for the SDE, the same noise); the test suite
runs diffusers as the oracle.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

SOLVERS = ("dpmpp2m", "sde-dpmpp2m", "unipc")


class _Grid:
    """alpha, sigma and lambda at each visited timestep, plus the final sigma = 0 point."""

    def __init__(self, alphas_bar: np.ndarray, ts: np.ndarray):
        abar = np.asarray(alphas_bar, dtype=np.float64)[ts]
        # as diffusers: sigma_vp = sqrt((1 - abar) / abar), alpha = 1 / sqrt(1 + sigma_vp^2), sigma = sigma_vp alpha
        sigma_vp = np.append(np.sqrt((1 - abar) / abar), 0.0)
        self.alpha = 1.0 / np.sqrt(sigma_vp**2 + 1.0)
        self.sigma = sigma_vp * self.alpha
        with np.errstate(divide="ignore"):
            self.lam = np.log(self.alpha) - np.log(self.sigma)  # +inf at the final point

    def x0(self, i: int, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return (x - self.sigma[i] * eps) / self.alpha[i]

    def predict(self, i: int, t: int, x: np.ndarray, eps_fn: Callable[[np.ndarray, int], np.ndarray],
                data_step: Callable[[int, np.ndarray, float, float], np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """(x_t, x0_hat) at step i: Tweedie's estimate, replaced by ``data_step``'s consistent one if given.
        x_t then moves with it (x_t = alpha x0 + sigma eps, eps kept): otherwise the (sigma_next / sigma) x_t
        term of the step carries the unconstrained x0 on into the next state."""
        x0 = self.x0(i, x, eps_fn(x, t))
        if data_step is None:
            return x, x0
        x0c = data_step(i, x0, float(self.alpha[i + 1]), float(self.sigma[i + 1]))
        return x + self.alpha[i] * (x0c - x0), x0c


def _expm1_neg(h: float) -> float:
    """e^{-h} - 1, with h = +inf at the final step giving -1."""
    return -1.0 if np.isinf(h) else float(np.expm1(-h))


def dpmpp2m(eps_fn: Callable[[np.ndarray, int], np.ndarray], alphas_bar: np.ndarray, ts: np.ndarray, x: np.ndarray,
            callback: Callable[[int, int, np.ndarray, np.ndarray], Any] | None = None,
            progress: Callable[[int], Any] | None = None,
            data_step: Callable[[int, np.ndarray, float, float], np.ndarray] | None = None) -> np.ndarray:
    """DPM-Solver++(2M) from x (at ts[0]) through every t in ``ts`` to sigma = 0.

    ``data_step(i, x0_hat, alpha_next, sigma_next)`` may replace each data prediction by a
    measurement-consistent one before it is used (reconstruction: DDNM+'s range-space step or
    DiffPIR's proximal step compose with the solver this way, since it works on x0_hat); x_t moves
    with it, its noise component kept, so the first-order step is DDNM+ with eta = 0 exactly."""
    g = _Grid(alphas_bar, ts)
    n = len(ts)
    prev_x0 = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, t in enumerate(ts.tolist()):
            # 1. data prediction (Tweedie) at this step, made consistent with the measurement if asked
            x, x0 = g.predict(i, t, x, eps_fn, data_step)
            if callback is not None:
                callback(i, t, x, x0)
            h = g.lam[i + 1] - g.lam[i]
            phi = _expm1_neg(h)
            ratio = 0.0 if g.sigma[i + 1] == 0 else g.sigma[i + 1] / g.sigma[i]
            if prev_x0 is None or i == n - 1:
                # 2. first order: the first step (no history) and the last ("lower order final")
                x = ratio * x - g.alpha[i + 1] * phi * x0
            else:
                # 3. second order, midpoint: D1 from the previous data prediction
                r = (g.lam[i] - g.lam[i - 1]) / h
                d1 = (x0 - prev_x0) / r
                x = ratio * x - g.alpha[i + 1] * phi * x0 - 0.5 * g.alpha[i + 1] * phi * d1
            prev_x0 = x0
            if progress is not None:
                progress(1)
    return x


def sde_dpmpp2m(eps_fn: Callable[[np.ndarray, int], np.ndarray], alphas_bar: np.ndarray, ts: np.ndarray, x: np.ndarray,
                noise: Callable[[tuple[int, ...]], np.ndarray], callback: Callable[[int, int, np.ndarray, np.ndarray], Any] | None = None,
                progress: Callable[[int], Any] | None = None,
                data_step: Callable[[int, np.ndarray, float, float], np.ndarray] | None = None) -> np.ndarray:
    """SDE-DPM-Solver++(2M) (see the module docstring) from x at ts[0] to sigma = 0; ``noise(shape)``
    gives each step's z (the generator's normals, or injected noise for a parity test); ``data_step``
    as in :func:`dpmpp2m` (reconstruction)."""
    g = _Grid(alphas_bar, ts)
    n = len(ts)
    prev_x0 = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, t in enumerate(ts.tolist()):
            # 1. data prediction (Tweedie) at this step, made consistent with the measurement if asked
            x, x0 = g.predict(i, t, x, eps_fn, data_step)
            if callback is not None:
                callback(i, t, x, x0)
            h = g.lam[i + 1] - g.lam[i]
            decay = 0.0 if np.isinf(h) else float(np.exp(-h))  # e^{-h}, 0 at the final sigma = 0
            ratio = 0.0 if g.sigma[i + 1] == 0 else g.sigma[i + 1] / g.sigma[i]
            drift = g.alpha[i + 1] * (1.0 - decay**2)
            z = noise(x.shape)
            # 2. first order at the first and the last step, else the midpoint second order with D1
            d = x0 if prev_x0 is None or i == n - 1 else x0 + 0.5 * (x0 - prev_x0) / ((g.lam[i] - g.lam[i - 1]) / h)
            x = ratio * decay * x + drift * d + g.sigma[i + 1] * np.sqrt(max(1.0 - decay**2, 0.0)) * z
            prev_x0 = x0
            if progress is not None:
                progress(1)
    return x


def _unipc_coefficients(g: _Grid, target: int, s0: int, history: list[int], order: int) -> tuple[float, float, np.ndarray, list[float]]:
    """h phi_1, B(h), the r_k of the history points, and the b vector of UniPC for a step s0 -> target."""
    h = g.lam[target] - g.lam[s0]
    hh = -h  # data prediction
    h_phi_1 = -1.0 if np.isinf(h) else float(np.expm1(hh))
    b_h = h_phi_1  # bh2: B(h) = e^h - 1 (in hh)
    rks = [(g.lam[si] - g.lam[s0]) / h for si in history] + [1.0]
    b, factorial = [], 1
    h_phi_k = h_phi_1 / hh - 1
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, np.array(rks), b


def unipc(eps_fn: Callable[[np.ndarray, int], np.ndarray], alphas_bar: np.ndarray, ts: np.ndarray, x: np.ndarray,
          callback: Callable[[int, int, np.ndarray, np.ndarray], Any] | None = None,
          progress: Callable[[int], Any] | None = None, order: int = 2) -> np.ndarray:
    """UniPC-bh2 (predictor-corrector, ``order`` 2 by default) from x at ts[0] to sigma = 0."""
    g = _Grid(alphas_bar, ts)
    n = len(ts)
    outputs: list[np.ndarray] = []  # data predictions at visited points, newest last
    last_x, last_order = None, 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, t in enumerate(ts.tolist()):
            x0 = g.x0(i, x, eps_fn(x, t))
            if callback is not None:
                callback(i, t, x, x0)
            if last_x is not None:
                # 1. corrector UniC: redo the step (i-1 -> i) with the model output now known at i
                x = _unic(g, i, outputs, x0, last_x, last_order)
            outputs = (outputs + [x0])[-order:]
            this_order = min(order, n - i, len(outputs))  # warm-up at the start, lower order at the end
            last_x, last_order = x, this_order
            # 2. predictor UniP to the next point
            x = _unip(g, i, outputs, x, this_order)
            if progress is not None:
                progress(1)
    return x


def _unip(g: _Grid, i: int, outputs: list[np.ndarray], x: np.ndarray, order: int) -> np.ndarray:
    m0 = outputs[-1]
    history = [i - k for k in range(1, order)]
    h_phi_1, b_h, rks, b = _unipc_coefficients(g, i + 1, i, history, order)
    ratio = 0.0 if g.sigma[i + 1] == 0 else g.sigma[i + 1] / g.sigma[i]
    x_next = ratio * x - g.alpha[i + 1] * h_phi_1 * m0
    if order >= 2:
        d1s = [(outputs[-(k + 1)] - m0) / rks[k - 1] for k in range(1, order)]
        rhos = [0.5] if order == 2 else list(np.linalg.solve(np.vander(rks[:-1], order - 1, increasing=True).T, b[:-1]))
        x_next = x_next - g.alpha[i + 1] * b_h * sum(r * d for r, d in zip(rhos, d1s))
    return x_next


def _unic(g: _Grid, i: int, outputs: list[np.ndarray], model_t: np.ndarray, last_x: np.ndarray, order: int) -> np.ndarray:
    m0 = outputs[-1]
    s0 = i - 1
    history = [s0 - k for k in range(1, order)]
    h_phi_1, b_h, rks, b = _unipc_coefficients(g, i, s0, history, order)
    x_t = g.sigma[i] / g.sigma[s0] * last_x - g.alpha[i] * h_phi_1 * m0
    if order == 1:
        rhos = np.array([0.5])
    else:
        rhos = np.linalg.solve(np.vander(rks, order, increasing=True).T, np.array(b))
    corr = sum(rhos[k - 1] * (outputs[-(k + 1)] - m0) / rks[k - 1] for k in range(1, order))
    return x_t - g.alpha[i] * b_h * (corr + rhos[-1] * (model_t - m0))
