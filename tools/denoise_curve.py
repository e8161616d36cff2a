"""The network as a denoiser of held-out frames, level by level (``evaluate --denoise-curve``).

Held-out PSK frames are noised to ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` at each level;
one network call gives Tweedie's ``x0_hat``, and the sampler run down from ``x_t`` (the `sample`
default's grid below t: DDIM-50, eta 1) gives a *resampled* frame. The blind receiver judges the
noisy input (``x_t / sqrt(abar_t)``), ``x0_hat`` and the resampled frame. With an exact score the
resampled frames are data-like from every level (the reverse process samples p(x0 | x_t)); the
level from which they end as poor as frames generated from pure noise is where the network's
errors cost the frames their structure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.fidelity import evm_summary
from edgediff.runtime.receivers import blind_receive
from edgediff.runtime.sampling import timesteps
from edgediff.runtime.steps import ddim_step, tweedie_x0
from edgediff.tools.evaluate import CHIRP_DATASETS, PSK_DATASETS, is_chirp, psk_format
from edgediff.train import rf

#: timesteps of a T = 1000 schedule, from nearly clean to about 0 dB SNR on the cosine schedule
LEVELS = (10, 50, 100, 200, 300, 400, 500, 600)


def denoise_curve(denoiser: Any, frames: np.ndarray, dataset: str, levels: tuple[int, ...] = LEVELS,
                  seed: int = 0) -> list[dict[str, float]]:
    """One row per level: t, SNR of x_t (dB), the blind EVM median (dB) of the noisy input, of the
    one-call denoised frames (and their share below -15 dB) and of the resampled frames. ``frames``
    (N, 2, L) in user units; of a dataset that mixes in chirps (rf-mix) only the PSK frames are used."""
    if dataset not in PSK_DATASETS:
        raise InputError(f"--denoise-curve: dataset {dataset!r} is not a PSK dataset: the curve is judged by the "
                         f"blind receiver (one of {', '.join(PSK_DATASETS)})")
    schedule, norm = denoiser.schedule, denoiser.normalisation
    levels = tuple(t for t in levels if t < schedule.T)
    frames = np.asarray(frames, dtype=np.float64)
    if dataset in CHIRP_DATASETS:
        frames = frames[~is_chirp(frames)]
    x0 = norm.to_network(frames)
    rng = np.random.default_rng(seed)
    fmt = psk_format(dataset)

    def evm(x: np.ndarray) -> dict[str, Any]:
        return evm_summary(blind_receive(rf.from_iq(norm.to_user(x)).astype(np.complex128), fmt).evm_db)

    rows = []
    for t in levels:
        abar = float(schedule.alphas_bar[t])
        x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * rng.standard_normal(x0.shape)
        steps = np.full(len(x0), t)
        x0_hat = tweedie_x0(schedule, x_t, denoiser.batched(x_t.astype(np.float32), steps), steps)
        noisy, clean = evm(x_t / np.sqrt(abar)), evm(x0_hat)
        rows.append({"t": t, "snr_db": float(10 * np.log10(abar / (1 - abar))),
                     "input_evm_db": noisy["median_db"], "denoised_evm_db": clean["median_db"],
                     "denoised_share_below_15db": clean["share_below_15db"],
                     "resampled_evm_db": evm(resample(denoiser, x_t, t, rng))["median_db"]})
    return rows


def resample(denoiser: Any, x_t: np.ndarray, t: int, rng: np.random.Generator, steps: int = 50) -> np.ndarray:
    """``x_t`` at level ``t`` sampled down to x_0 with DDIM (eta 1) on the grid of a ``steps``-step
    run from T, from ``t`` on."""
    grid = [int(s) for s in timesteps(denoiser.schedule.T, steps) if s < t]
    x = x_t
    for now, then in zip([t, *grid], [*grid, -1]):
        steps_now = np.full(len(x), now)
        eps = denoiser.batched(x.astype(np.float32), steps_now)
        x, _ = ddim_step(denoiser.schedule, x, eps, steps_now, np.full(len(x), then), eta=1.0, rng=rng)
    return x


def describe_curve(rows: list[dict[str, float]]) -> list[str]:
    lines = ["  held-out frames noised to each level, then denoised in one call (Tweedie x0) and resampled "
             "(DDIM-50's grid from there, eta 1), blind EVM median:",
             "       t   SNR dB   input EVM   denoised EVM   below -15 dB   resampled EVM"]
    lines += [f"    {r['t']:4d} {r['snr_db']:8.1f} {r['input_evm_db']:11.1f} {r['denoised_evm_db']:14.1f} "
              f"{100 * r['denoised_share_below_15db']:13.0f}% {r['resampled_evm_db']:15.1f}" for r in rows]
    return lines
