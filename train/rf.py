"""Synthetic RF frames, generated from a seed: QPSK bursts and linear FM chirps, as I/Q (2, L).

numpy only. Each frame draws its own impairments; the ranges are module constants, recorded in the
run config through :func:`describe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.receivers import PskFormat, PskTruth, rrc_taps

QPSK = {
    "samples_per_symbol": 8,
    "rolloff": 0.35,
    "span_symbols": 8,
    "cfo_max": 0.01,  # cycles per sample
    "snr_db": (20.0, 40.0),
}
#: A second digital signal for interference studies: QPSK at twice the symbol rate, wider roll-off.
QPSK_FAST = {**QPSK, "samples_per_symbol": 4, "rolloff": 0.5}
CHIRP = {
    "start_freq": (-0.2, 0.2),  # cycles per sample
    "sweep": (-0.3, 0.3),  # total frequency change over the pulse, cycles per sample
    "duration": (0.5, 1.0),  # fraction of the frame
    "snr_db": (20.0, 40.0),
}


def describe() -> dict[str, Any]:
    return {"rf-qpsk": QPSK, "rf-qpsk-fast": QPSK_FAST, "rf-chirp": CHIRP}


def psk_format(params: dict[str, Any]) -> PskFormat:
    """The receiver's view of a generator's parameters."""
    return PskFormat(samples_per_symbol=params["samples_per_symbol"], rolloff=params["rolloff"],
                     span_symbols=params["span_symbols"])


def _awgn(signal: np.ndarray, snr_db: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add complex white noise at the per-frame SNR (signal power measured over the frame)."""
    noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    return add_noise(signal, snr_db, noise)


def add_noise(signal: np.ndarray, snr_db: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``signal`` plus unit complex Gaussian ``noise`` (re + j im, each N(0, 1)) scaled to the SNR."""
    power = np.mean(np.abs(signal) ** 2, axis=1, keepdims=True)
    noise_power = power / 10 ** (snr_db[:, None] / 10)
    return signal + np.sqrt(noise_power / 2) * noise


def qpsk_shape(symbols: np.ndarray, offset: np.ndarray, cfo: np.ndarray, phase: np.ndarray, length: int,
               params: dict[str, Any] = QPSK) -> np.ndarray:
    """Clean complex (n, length) frames from the draws: symbols (n, n_sym) through the RRC pulse,
    cut at the timing ``offset`` (samples), turned by the carrier offset ``cfo`` and ``phase``.

    A pure function of its draws, mirrored in torch by :mod:`edgediff.train.rf_torch`."""
    sps, span = params["samples_per_symbol"], params["span_symbols"]
    n, n_sym = symbols.shape
    taps = rrc_taps(sps, params["rolloff"], span)
    up = np.zeros((n, n_sym * sps), dtype=complex)
    up[:, ::sps] = symbols
    size = up.shape[1] + len(taps) - 1
    shaped = np.fft.ifft(np.fft.fft(up, size, axis=1) * np.fft.fft(taps, size)[None], axis=1)
    start = len(taps) // 2 + span * sps // 2 + offset
    frames = shaped[np.arange(n)[:, None], start[:, None] + np.arange(length)[None]]
    return frames * np.exp(1j * (2 * np.pi * cfo[:, None] * np.arange(length)[None] + phase[:, None]))


def qpsk_symbols_per_frame(length: int, params: dict[str, Any] = QPSK) -> int:
    """Symbols drawn per frame: the frame's own plus the pulse span on both sides."""
    return length // params["samples_per_symbol"] + params["span_symbols"] + 2


def qpsk_frames_with_truth(n: int, length: int, rng: np.random.Generator, params: dict[str, Any] = QPSK,
                           snr_db: tuple[float, float] | None = None) -> tuple[np.ndarray, PskTruth]:
    """Complex (n, length) QPSK with RRC pulses, random timing, carrier offset, phase and SNR, and the
    truth a genie receiver needs (``snr_db=(inf, inf)`` gives clean frames)."""
    p = params
    sps, span = p["samples_per_symbol"], p["span_symbols"]
    n_sym = qpsk_symbols_per_frame(length, p)
    symbols = (rng.choice([-1.0, 1.0], (n, n_sym)) + 1j * rng.choice([-1.0, 1.0], (n, n_sym))) / np.sqrt(2)
    offset = rng.integers(0, sps, n)
    cfo = rng.uniform(-p["cfo_max"], p["cfo_max"], n)
    phase = rng.uniform(0, 2 * np.pi, n)
    frames = qpsk_shape(symbols, offset, cfo, phase, length, p)
    lo, hi = snr_db or p["snr_db"]
    snr = np.full(n, float(lo)) if lo == hi else rng.uniform(lo, hi, n)
    # symbol k peaks at shaped index k sps + len(taps) // 2, i.e. at frame sample k sps - span sps / 2 - offset
    peaks = np.arange(n_sym)[None] * sps - span * sps // 2 - offset[:, None]
    noisy = frames if np.all(np.isinf(snr)) else _awgn(frames, snr, rng)
    return noisy, PskTruth(cfo, phase, peaks, symbols)


def qpsk_frames(n: int, length: int, rng: np.random.Generator, params: dict[str, Any] = QPSK) -> np.ndarray:
    """Complex (n, length) QPSK frames (see :func:`qpsk_frames_with_truth`)."""
    return qpsk_frames_with_truth(n, length, rng, params)[0]


def chirp_shape(duration: np.ndarray, delay: np.ndarray, f0: np.ndarray, sweep: np.ndarray, phase0: np.ndarray,
                length: int) -> np.ndarray:
    """Clean complex (n, length) linear FM pulses from the draws: ``duration`` and ``delay`` in samples,
    start frequency ``f0`` and total ``sweep`` in cycles per sample, start phase ``phase0``."""
    rate = sweep / duration  # cycles per sample^2
    k = np.arange(length)[None] - delay[:, None]  # samples since the pulse started
    on = (k >= 0) & (k < duration[:, None])
    phase = 2 * np.pi * (f0[:, None] * k + 0.5 * rate[:, None] * k**2) + phase0[:, None]
    return np.where(on, np.exp(1j * phase), 0.0)


def chirp_frames(n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Complex (n, length) linear FM pulses with random start frequency, sweep, delay and SNR."""
    p = CHIRP
    duration = np.round(rng.uniform(*p["duration"], n) * length).astype(int)
    delay = (rng.uniform(0, 1, n) * (length - duration + 1)).astype(int)
    f0 = rng.uniform(*p["start_freq"], n)
    sweep = rng.uniform(*p["sweep"], n)
    pulse = chirp_shape(duration, delay, f0, sweep, rng.uniform(0, 2 * np.pi, n), length)
    # SNR is defined over the pulse: scale the frame-average power accordingly
    snr_db = rng.uniform(*p["snr_db"], n) + 10 * np.log10(duration / length)
    return _awgn(pulse, snr_db, rng)


def to_iq(frames: np.ndarray) -> np.ndarray:
    """Complex (N, L) -> float32 (N, 2, L) with I in channel 0 and Q in channel 1."""
    return np.stack([frames.real, frames.imag], axis=1).astype(np.float32)


def from_iq(x: np.ndarray) -> np.ndarray:
    """float (N, 2, L) -> complex64 (N, L)."""
    return (x[:, 0] + 1j * x[:, 1]).astype(np.complex64)
