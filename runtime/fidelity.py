"""Distribution-level fidelity of generated RF frames against held-out frames (numpy only).

- mean-PSD log-spectral distance: the frames' periodograms (Hann window) averaged over frames, then
  the RMS over frequency of the difference of the two means in dB;
- envelope Wasserstein-1: between the distributions of |x| over all samples, both in units of the
  held-out frames' RMS (the 1-D W1 is the mean absolute difference of the quantile functions);
- chirp linearity: the RMS deviation of a frame's instantaneous frequency (cycles per sample) from
  its least-squares line, over the samples where the pulse is on (envelope above half its peak);
- pulse duty: the share of a frame's samples where the pulse is on (envelope above half the pulse's
  level, the 95th percentile of the frame's envelope: robust to a few noise spikes);
- EVM summary: median, 90th percentile and the share of frames below -15 dB;
- EVM split: where a receiver's error vectors lie: in phase or in amplitude, and how much of the
  phase error is a slow wander over the frame (a carrier whose frequency drifts) rather than jitter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

EVM_GOOD_DB = -15.0


def _complex(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 2 or not np.iscomplexobj(frames) or frames.shape[0] < 1 or frames.shape[1] < 8:
        raise InputError(f"{name}: shape {frames.shape}, dtype {frames.dtype}: expected complex frames (N, L), L >= 8")
    return frames.astype(np.complex128)


def mean_psd_db(frames: np.ndarray) -> np.ndarray:
    """10 log10 of the frame-averaged Hann periodogram, (L,) in fftshift order."""
    x = _complex(frames, "frames")
    window = np.hanning(x.shape[1])
    spec = np.fft.fftshift(np.fft.fft(x * window, axis=1), axes=1)
    power = np.mean(np.abs(spec) ** 2, axis=0) / np.sum(window**2)
    return 10 * np.log10(np.maximum(power, 1e-30))


def log_spectral_distance_db(generated: np.ndarray, reference: np.ndarray) -> float:
    a, b = mean_psd_db(generated), mean_psd_db(reference)
    if a.shape != b.shape:
        raise InputError(f"frame lengths differ ({a.shape[0]} vs {b.shape[0]}): compare frames of one length")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def wasserstein_1d(a: np.ndarray, b: np.ndarray, points: int = 4096) -> float:
    """W1 between two 1-D empirical laws: the mean |F_a^-1(q) - F_b^-1(q)| over a fine grid of q."""
    q = (np.arange(points) + 0.5) / points
    return float(np.mean(np.abs(np.quantile(np.ravel(a), q) - np.quantile(np.ravel(b), q))))


def envelope_w1(generated: np.ndarray, reference: np.ndarray) -> float:
    """W1 of |x| between generated and reference frames, in units of the reference RMS."""
    g, r = _complex(generated, "generated"), _complex(reference, "reference")
    rms = np.sqrt(np.mean(np.abs(r) ** 2))
    if not rms > 0:
        raise InputError("reference frames are all zeros: no envelope scale")
    return wasserstein_1d(np.abs(g) / rms, np.abs(r) / rms)


def chirp_linearity(frames: np.ndarray) -> np.ndarray:
    """(N,) RMS deviation of the instantaneous frequency from its fitted line, cycles per sample."""
    x = _complex(frames, "frames")
    env = np.abs(x)
    out = np.full(len(x), np.nan)
    for i, (row, e) in enumerate(zip(x, env)):
        on = np.flatnonzero(e > 0.5 * e.max()) if e.max() > 0 else np.zeros(0, int)
        if len(on) < 8:
            continue
        seg = row[on[0]: on[-1] + 1]
        inst = np.angle(seg[1:] * np.conj(seg[:-1])) / (2 * np.pi)  # (M-1,) cycles per sample
        k = np.arange(len(inst))
        coef = np.polyfit(k, inst, 1)
        out[i] = float(np.sqrt(np.mean((inst - np.polyval(coef, k)) ** 2)))
    return out


def pulse_duty(frames: np.ndarray) -> np.ndarray:
    """(N,) share of each frame's samples whose envelope exceeds half the pulse's level (the frame's
    95th percentile of |x|); an all-zero frame has duty 0."""
    env = np.abs(_complex(frames, "frames"))  # (N, L)
    level = np.percentile(env, 95, axis=1, keepdims=True)
    return np.mean((env > 0.5 * level) & (level > 0), axis=1)


def evm_summary(evm_db: np.ndarray) -> dict[str, Any]:
    evm_db = np.asarray(evm_db, dtype=np.float64)
    return {"median_db": float(np.median(evm_db)), "p90_db": float(np.percentile(evm_db, 90)),
            "share_below_15db": float(np.mean(evm_db < EVM_GOOD_DB)), "frames": int(evm_db.size)}


def evm_split(symbols: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """Where the error vectors of (N, K) received symbols lie against their (N, K) decisions, dB re
    the symbol power, medians over frames: ``phase_db`` the mean squared angle of symbol/decision,
    ``amplitude_db`` the mean squared |symbol/decision| - 1 (the two add up to about the EVM), and
    ``detrended_db`` the EVM left once a quadratic fit of each frame's phase error is taken out: a
    large drop from the EVM to it says the frames' carrier wanders (a frequency that drifts, which a
    receiver fitting one frequency cannot follow) rather than each symbol being off on its own;
    ``phase_correlation`` {lag: r}, the correlation of the phase errors (each frame's mean taken out)
    of symbols 1, 2 and 4 apart: near 0 for symbols off on their own, near 1 for a slow wander."""
    r, d = np.asarray(symbols, dtype=np.complex128), np.asarray(decisions, dtype=np.complex128)
    if r.shape != d.shape or r.ndim != 2 or r.shape[1] < 4 or np.any(d == 0):
        raise InputError(f"symbols {r.shape} and decisions {d.shape}: expected one shape (N, K), K >= 4, "
                         "decisions on a constellation (non-zero)")
    ratio = r / d
    phase, amplitude = np.angle(ratio), np.abs(ratio) - 1
    k = np.arange(r.shape[1], dtype=np.float64)
    trend = np.polynomial.polynomial.polyval(k, np.polynomial.polynomial.polyfit(k, phase.T, 2)).reshape(phase.shape)
    flat = r * np.exp(-1j * trend)
    flat = flat / np.maximum(np.sqrt(np.mean(np.abs(flat) ** 2, axis=1, keepdims=True)), 1e-30)
    power = np.mean(np.abs(d) ** 2, axis=1)

    def median_db(err: np.ndarray) -> float:
        return float(10 * np.log10(max(float(np.median(err)), 1e-30)))

    centred = phase - phase.mean(axis=1, keepdims=True)
    spread = max(float(np.mean(centred**2)), 1e-30)
    correlation = {str(lag): float(np.mean(centred[:, lag:] * centred[:, :-lag]) / spread)
                   for lag in (1, 2, 4) if lag < r.shape[1]}
    return {"phase_db": median_db(np.mean(phase**2, axis=1)), "amplitude_db": median_db(np.mean(amplitude**2, axis=1)),
            "detrended_db": median_db(np.mean(np.abs(flat - d) ** 2, axis=1) / power),
            "phase_correlation": correlation}
