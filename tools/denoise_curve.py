"""The network as a one-shot denoiser of held-out frames, level by level (``evaluate --denoise-curve``).

Held-out PSK frames are noised to ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` at each level,
and one network call gives Tweedie's ``x0_hat``; the blind receiver judges both the noisy input
(``x_t / sqrt(abar_t)``) and ``x0_hat``. Where the denoised EVM stays near the data's, the network
restores frames that are already near the data at that level; where generated frames end far
worse than every level's denoised EVM, their error was set earlier on the sampling path (at noise
levels above the curve's, or by steps that leave the data's neighbourhood), not by the last steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.fidelity import chirp_linearity, evm_summary
from edgediff.runtime.receivers import blind_receive
from edgediff.runtime.steps import tweedie_x0
from edgediff.tools.evaluate import CHIRP_DATASETS, CHIRP_SPLIT, PSK_DATASETS, psk_format
from edgediff.train import rf

#: timesteps of a T = 1000 schedule, from nearly clean to about 0 dB SNR on the cosine schedule
LEVELS = (10, 50, 100, 200, 300, 400, 500, 600)


def denoise_curve(denoiser: Any, frames: np.ndarray, dataset: str, levels: tuple[int, ...] = LEVELS,
                  seed: int = 0) -> list[dict[str, float]]:
    """One row per level: t, SNR of x_t (dB), the noisy input's and the denoised frames' blind EVM
    (median, dB, and the share below -15 dB). ``frames`` (N, 2, L) in user units; of a dataset that
    mixes in chirps (rf-mix) only the PSK frames are used."""
    if dataset not in PSK_DATASETS:
        raise InputError(f"--denoise-curve: dataset {dataset!r} is not a PSK dataset: the curve is judged by the "
                         f"blind receiver (one of {', '.join(PSK_DATASETS)})")
    schedule, norm = denoiser.schedule, denoiser.normalisation
    levels = tuple(t for t in levels if t < schedule.T)
    frames = np.asarray(frames, dtype=np.float64)
    if dataset in CHIRP_DATASETS:
        frames = frames[~(np.nan_to_num(chirp_linearity(rf.from_iq(frames).astype(np.complex128)), nan=np.inf) < CHIRP_SPLIT)]
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
                     "denoised_share_below_15db": clean["share_below_15db"]})
    return rows


def describe_curve(rows: list[dict[str, float]]) -> list[str]:
    lines = ["  one-shot denoising of held-out frames (Tweedie x0 from one call at each level):",
             "       t   SNR dB   input EVM   denoised EVM   below -15 dB"]
    lines += [f"    {r['t']:4d} {r['snr_db']:8.1f} {r['input_evm_db']:11.1f} {r['denoised_evm_db']:14.1f} "
              f"{100 * r['denoised_share_below_15db']:13.0f}%" for r in rows]
    return lines
