"""Synthetic RF frames, generated from a seed: QPSK bursts and linear FM chirps, as I/Q (2, L).

numpy only. Each frame draws its own impairments; the ranges are module constants, recorded in the
run config through :func:`describe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QPSK = {
    "samples_per_symbol": 8,
    "rolloff": 0.35,
    "span_symbols": 8,
    "cfo_max": 0.01,  # cycles per sample
    "snr_db": (20.0, 40.0),
}
CHIRP = {
    "start_freq": (-0.2, 0.2),  # cycles per sample
    "sweep": (-0.3, 0.3),  # total frequency change over the pulse, cycles per sample
    "duration": (0.5, 1.0),  # fraction of the frame
    "snr_db": (20.0, 40.0),
}


def describe() -> dict[str, Any]:
    return {"rf-qpsk": QPSK, "rf-chirp": CHIRP}


def rrc_taps(samples_per_symbol: int, rolloff: float, span_symbols: int) -> np.ndarray:
    """Root-raised-cosine impulse response with unit energy, ``span * sps + 1`` taps."""
    sps, beta = samples_per_symbol, rolloff
    t = np.arange(-span_symbols * sps / 2, span_symbols * sps / 2 + 1) / sps  # in symbols
    h = np.empty_like(t)
    for i, ti in enumerate(t):
        if np.isclose(ti, 0.0):
            h[i] = 1.0 - beta + 4 * beta / np.pi
        elif beta > 0 and np.isclose(abs(ti), 1 / (4 * beta)):
            h[i] = beta / np.sqrt(2) * ((1 + 2 / np.pi) * np.sin(np.pi / (4 * beta)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * beta)))
        else:
            num = np.sin(np.pi * ti * (1 - beta)) + 4 * beta * ti * np.cos(np.pi * ti * (1 + beta))
            h[i] = num / (np.pi * ti * (1 - (4 * beta * ti) ** 2))
    return h / np.linalg.norm(h)


def _awgn(signal: np.ndarray, snr_db: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add complex white noise at the per-frame SNR (signal power measured over the frame)."""
    power = np.mean(np.abs(signal) ** 2, axis=1, keepdims=True)
    noise_power = power / 10 ** (snr_db[:, None] / 10)
    noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    return signal + np.sqrt(noise_power / 2) * noise


def qpsk_frames(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Complex (n, length) QPSK with RRC pulses, random timing, carrier offset, phase and SNR."""
    p = QPSK
    sps = p["samples_per_symbol"]
    taps = rrc_taps(sps, p["rolloff"], p["span_symbols"])
    n_sym = length // sps + p["span_symbols"] + 2
    symbols = (rng.choice([-1.0, 1.0], (n, n_sym)) + 1j * rng.choice([-1.0, 1.0], (n, n_sym))) / np.sqrt(2)
    up = np.zeros((n, n_sym * sps), dtype=complex)
    up[:, ::sps] = symbols
    size = up.shape[1] + len(taps) - 1
    shaped = np.fft.ifft(np.fft.fft(up, size, axis=1) * np.fft.fft(taps, size)[None], axis=1)
    start = len(taps) // 2 + p["span_symbols"] * sps // 2 + rng.integers(0, sps, n)
    frames = shaped[np.arange(n)[:, None], start[:, None] + np.arange(length)[None]]
    cfo = rng.uniform(-p["cfo_max"], p["cfo_max"], n)
    phase = rng.uniform(0, 2 * np.pi, n)
    frames = frames * np.exp(1j * (2 * np.pi * cfo[:, None] * np.arange(length)[None] + phase[:, None]))
    return _awgn(frames, rng.uniform(*p["snr_db"], n), rng)


def chirp_frames(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Complex (n, length) linear FM pulses with random start frequency, sweep, delay and SNR."""
    p = CHIRP
    duration = np.round(rng.uniform(*p["duration"], n) * length).astype(int)
    delay = (rng.uniform(0, 1, n) * (length - duration + 1)).astype(int)
    f0 = rng.uniform(*p["start_freq"], n)
    rate = rng.uniform(*p["sweep"], n) / duration  # cycles per sample^2
    k = np.arange(length)[None] - delay[:, None]  # samples since the pulse started
    on = (k >= 0) & (k < duration[:, None])
    phase = 2 * np.pi * (f0[:, None] * k + 0.5 * rate[:, None] * k**2) + rng.uniform(0, 2 * np.pi, n)[:, None]
    pulse = np.where(on, np.exp(1j * phase), 0.0)
    # SNR is defined over the pulse: scale the frame-average power accordingly
    snr_db = rng.uniform(*p["snr_db"], n) + 10 * np.log10(duration / length)
    return _awgn(pulse, snr_db, rng)


def to_iq(frames: np.ndarray) -> np.ndarray:
    """Complex (N, L) -> float32 (N, 2, L) with I in channel 0 and Q in channel 1."""
    return np.stack([frames.real, frames.imag], axis=1).astype(np.float32)


def from_iq(x: np.ndarray) -> np.ndarray:
    """float (N, 2, L) -> complex64 (N, L)."""
    return (x[:, 0] + 1j * x[:, 1]).astype(np.complex64)
