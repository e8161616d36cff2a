"""Where a chirp prior loses its chirps (rf-mix) or its pulses' length (rf-chirp): ``evaluate --denoise-curve``.

Held-out frames, half chirps, are noised to ``x_t`` at each level and sampled down from there (DDIM-50's
grid below t, eta 1, as the denoise curve does). With an exact score the reverse process samples
p(x0 | x_t), so the frames sampled down from any level hold the data's chirp share; the level from which
the share falls is where the network decides a frame's kind wrongly. Each row also says how many of the
chirps stayed chirps and how many QPSK frames became chirps (with an exact score the two flows balance).
On rf-chirp the rows give the pulses' duty (the share of the frame a pulse is on) of the frames sampled
down, and its mean change from each frame's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edgediff.runtime.fidelity import pulse_duty
from edgediff.runtime.steps import q_sample
from edgediff.tools.denoise_curve import resample
from edgediff.tools.evaluate import is_chirp
from edgediff.train import rf

#: timesteps of a T = 1000 schedule, from about 0 dB SNR to pure noise on the cosine schedule
FLOW_LEVELS = (500, 700, 800, 850, 900, 950, 999)


def resampled(denoiser: Any, frames: np.ndarray, levels: tuple[int, ...] = FLOW_LEVELS,
              seed: int = 0) -> Iterator[tuple[dict[str, float], np.ndarray]]:
    """For each level below T: ({"t", "snr_db"}, ``frames`` (N, 2, L, user units) noised to x_t and
    sampled down from there, back in user units)."""
    schedule, norm = denoiser.schedule, denoiser.normalisation
    x0 = norm.to_network(np.asarray(frames, dtype=np.float64))
    rng = np.random.default_rng(seed)
    for t in (t for t in levels if t < schedule.T):
        abar = float(schedule.alphas_bar[t])
        x_t = q_sample(schedule, x0, np.full(len(x0), t), rng.standard_normal(x0.shape))
        yield {"t": t, "snr_db": float(10 * np.log10(abar / (1 - abar)))}, norm.to_user(resample(denoiser, x_t, t, rng))


def chirp_flow(denoiser: Any, frames: np.ndarray, levels: tuple[int, ...] = FLOW_LEVELS,
               seed: int = 0) -> list[dict[str, float]]:
    """One row per level: t, SNR of x_t (dB), the chirp share of the frames sampled down from it, the
    share of chirps kept and of non-chirps turned into chirps. ``frames`` (N, 2, L) in user units."""
    was = is_chirp(np.asarray(frames, dtype=np.float64))
    rows = []
    for row, down in resampled(denoiser, frames, levels, seed):
        now = is_chirp(down)
        rows.append(row | {"chirp_share": float(now.mean()),
                           "chirps_kept": float(now[was].mean()) if was.any() else float("nan"),
                           "others_to_chirps": float(now[~was].mean()) if (~was).any() else float("nan")})
    return rows


def describe_flow(rows: list[dict[str, float]], held_out_share: float) -> list[str]:
    lines = [f"  held-out frames (chirp share {held_out_share:.2f}) noised to each level and resampled "
             "(DDIM-50's grid from there, eta 1):",
             "       t   SNR dB   chirp share   chirps kept   QPSK -> chirp"]
    lines += [f"    {r['t']:4d} {r['snr_db']:8.1f} {r['chirp_share']:13.2f} {r['chirps_kept']:13.2f} "
              f"{r['others_to_chirps']:15.2f}" for r in rows]
    return lines


def duty_flow(denoiser: Any, frames: np.ndarray, levels: tuple[int, ...] = FLOW_LEVELS,
              seed: int = 0) -> list[dict[str, float]]:
    """One row per level: t, SNR of x_t (dB), the median pulse duty of the frames sampled down from it,
    the mean change of each frame's duty from its own and the correlation of the two over the frames (how
    much of its own length a pulse keeps: near 1 from low noise, near 0 from pure noise for any prior).
    ``frames`` (N, 2, L) pulses, user units."""
    was = pulse_duty(rf.from_iq(np.asarray(frames, dtype=np.float64)))
    rows = []
    for row, down in resampled(denoiser, frames, levels, seed):
        now = pulse_duty(rf.from_iq(down))
        kept = float(np.corrcoef(now, was)[0, 1]) if np.std(now) > 0 and np.std(was) > 0 else 0.0
        rows.append(row | {"pulse_duty_median": float(np.median(now)), "duty_change_mean": float(np.mean(now - was)),
                           "duty_correlation": kept})
    return rows


def describe_duty_flow(rows: list[dict[str, float]], held_out_duty: float) -> list[str]:
    lines = [f"  held-out pulses (on for {100 * held_out_duty:.0f}% of the frame, median) noised to each level and "
             "resampled (DDIM-50's grid from there, eta 1):",
             "       t   SNR dB   pulse on (median)   mean change per frame   correlation with its own"]
    lines += [f"    {r['t']:4d} {r['snr_db']:8.1f} {100 * r['pulse_duty_median']:18.0f}% {100 * r['duty_change_mean']:+22.1f}%"
              f" {r['duty_correlation']:26.2f}" for r in rows]
    return lines
