"""Receivers for PSK frames: what a radio does with a frame, used to judge priors by their symbols.

numpy only, so they run on the device next to the runtime. Frames are complex (N, L) arrays.

Blind receiver (no knowledge of the frame's carrier, phase or timing), for M-PSK with an RRC pulse:

1. coarse carrier offset: the M-th power of the frame carries a tone at M x the offset; the peak of
   its zero-padded spectrum, searched within +-1/(2 sps) so the cyclic tones at k/sps are not taken;
2. derotate, then matched filter with the RRC pulse (unit energy, so RRC * RRC is a unit Nyquist pulse);
3. symbol timing, decision-directed: steps 4 and 5 at each of the ``sps`` sampling phases, and the
   phase whose symbols lie closest to the constellation (lowest EVM) is kept. The phase with the most
   energy, the usual feed-forward choice, is a sample off on about 1 % of clean generator frames
   (-14.5 dB EVM where the truth's timing gives -35: 23 symbols and an RRC of roll-off 0.35 leave
   the energy of adjacent phases within a few per cent), and on 4 % it is off with no harm done;
4. residual carrier frequency and phase from the M-th power of the symbol-spaced samples;
5. unit-RMS gain, nearest-point decisions; EVM = mean |r - d|^2 / mean |d|^2 in dB.

``edge_symbols`` symbols at each end are dropped: their pulses are cut by the frame edges.

Genie-aided receiver: the generator's truth (carrier offset, phase, symbol positions and symbols)
replaces steps 1, 3 and 4; a least-squares gain against the true symbols, then decisions give the
symbol error rate and, with Gray mapping (bit 0: I < 0, bit 1: Q < 0), the bit error rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgediff.runtime.errors import InputError


@dataclass(frozen=True)
class PskFormat:
    """The modulation a receiver expects: M-PSK (M = 4: QPSK) with an RRC pulse."""

    samples_per_symbol: int = 8
    rolloff: float = 0.35
    span_symbols: int = 8
    order: int = 4
    edge_symbols: int = 4

    def __post_init__(self) -> None:
        if self.samples_per_symbol < 2 or self.order < 2 or not 0 <= self.rolloff <= 1 or self.span_symbols < 1:
            raise InputError(f"PSK format {self} is invalid: expected sps >= 2, order >= 2, rolloff in [0, 1]")

    @property
    def constellation(self) -> np.ndarray:
        """Unit-power points exp(j (2 pi k / M + pi / M)): for QPSK (+-1 +-j) / sqrt(2)."""
        k = np.arange(self.order)
        return np.exp(1j * (2 * np.pi * k / self.order + np.pi / self.order))


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


class BlindResult(NamedTuple):
    evm_db: np.ndarray  # (N,) per-frame EVM in dB
    symbols: np.ndarray  # (N, K) complex, derotated, unit-RMS symbol-spaced samples
    decisions: np.ndarray  # (N, K) complex, nearest constellation points
    cfo: np.ndarray  # (N,) carrier offset estimate, cycles per sample
    timing: np.ndarray  # (N,) sampling phase 0 .. sps-1 of the matched-filter output


class GenieResult(NamedTuple):
    symbol_errors: np.ndarray  # (N,) count per frame
    bit_errors: np.ndarray  # (N,) count per frame
    symbols_scored: np.ndarray  # (N,) symbols scored per frame (those clear of the edges)
    evm_db: np.ndarray  # (N,) EVM against the true symbols

    @property
    def ser(self) -> float:
        return float(self.symbol_errors.sum() / max(1, self.symbols_scored.sum()))

    @property
    def ber(self) -> float:
        return float(self.bit_errors.sum() / max(1, 2 * self.symbols_scored.sum()))


def _check_frames(frames: np.ndarray, fmt: PskFormat) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 2 or not np.iscomplexobj(frames):
        raise InputError(f"frames of shape {frames.shape} and dtype {frames.dtype}: expected complex (N, L)")
    min_len = (2 * fmt.edge_symbols + 4) * fmt.samples_per_symbol
    if frames.shape[1] < min_len:
        raise InputError(f"frames of length {frames.shape[1]} are too short for this receiver: need >= {min_len}")
    return frames.astype(np.complex128)


def matched_filter(frames: np.ndarray, fmt: PskFormat) -> np.ndarray:
    """Each row convolved with the RRC pulse, aligned so output n is centred on input n ('same')."""
    taps = rrc_taps(fmt.samples_per_symbol, fmt.rolloff, fmt.span_symbols)
    n, length = frames.shape
    size = length + len(taps) - 1
    full = np.fft.ifft(np.fft.fft(frames, size, axis=1) * np.fft.fft(taps, size)[None], axis=1)
    half = len(taps) // 2
    return full[:, half: half + length]


def _tone(z: np.ndarray, max_freq: float, pad: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Frequency (cycles per sample, |f| <= max_freq) and complex amplitude of the strongest tone of
    each row of ``z``: zero-padded FFT peak, refined by a parabola through the peak's neighbours."""
    n, length = z.shape
    size = int(2 ** np.ceil(np.log2(length * pad)))
    spec = np.fft.fft(z, size, axis=1)
    freqs = np.fft.fftfreq(size)
    allowed = np.abs(freqs) <= max_freq
    mag = np.where(allowed[None], np.abs(spec), -1.0)
    k = np.argmax(mag, axis=1)
    rows = np.arange(n)
    left, mid, right = np.abs(spec[rows, k - 1]), np.abs(spec[rows, k]), np.abs(spec[rows, (k + 1) % size])
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > 0, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    f = freqs[k] + np.clip(shift, -0.5, 0.5) / size
    amp = np.sum(z * np.exp(-2j * np.pi * f[:, None] * np.arange(length)[None]), axis=1)
    return f, amp


def _decide(r: np.ndarray, points: np.ndarray) -> np.ndarray:
    idx = np.argmin(np.abs(r[..., None] - points), axis=-1)
    return points[idx]


def _evm_db(r: np.ndarray, d: np.ndarray) -> np.ndarray:
    err = np.mean(np.abs(r - d) ** 2, axis=1)
    ref = np.mean(np.abs(d) ** 2, axis=1)
    return 10 * np.log10(np.maximum(err, 1e-30) / ref)


def blind_receive(frames: np.ndarray, fmt: PskFormat = PskFormat()) -> BlindResult:
    """Demodulate frames with no side information; see the module docstring for the steps."""
    x = _check_frames(frames, fmt)
    n, length = x.shape
    sps, m = fmt.samples_per_symbol, fmt.order
    nidx = np.arange(length)[None]
    # 1. coarse carrier offset from the M-th power tone (M f within +-1/(2 sps): clear of k/sps lines)
    f_m, _ = _tone(x**m, 0.5 / sps)
    cfo = f_m / m
    # 2. derotate and matched-filter
    y = matched_filter(x * np.exp(-2j * np.pi * cfo[:, None] * nidx), fmt)
    # 3. timing: every sampling phase through steps 4 and 5; the lowest EVM wins (edge symbols left out)
    lo, hi = fmt.edge_symbols * sps, length - fmt.edge_symbols * sps
    k_count = (hi - lo - sps) // sps
    phases = [_symbols(y[:, lo + p: lo + p + sps * k_count: sps], fmt) for p in range(sps)]
    r, d, f_sym, evm = (np.stack(parts) for parts in zip(*phases))  # each (sps, N, ...)
    best, rows = np.argmin(evm, axis=0), np.arange(n)
    return BlindResult(evm[best, rows], r[best, rows], d[best, rows], cfo + f_sym[best, rows] / (m * sps),
                       (lo + best) % sps)


def _symbols(r: np.ndarray, fmt: PskFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 4 and 5 on symbol-spaced samples (N, K): derotated unit-RMS symbols, their decisions,
    the residual frequency (cycles per symbol) removed, and the EVM (dB)."""
    m, k_count = fmt.order, r.shape[1]
    # 4. residual frequency and phase from the M-th power of the symbols (the -1 of a QPSK point^4 is pi)
    f_sym, amp = _tone(r**m, 0.5)
    ref_phase = np.angle(fmt.constellation[0] ** m)
    r = r * np.exp(-1j * (2 * np.pi * f_sym[:, None] * np.arange(k_count)[None] + (np.angle(amp) - ref_phase)[:, None]) / m)
    # 5. unit-RMS gain, decisions
    r = r / np.maximum(np.sqrt(np.mean(np.abs(r) ** 2, axis=1, keepdims=True)), 1e-30)
    d = _decide(r, fmt.constellation)
    return r, d, f_sym, _evm_db(r, d)


@dataclass(frozen=True)
class PskTruth:
    """What the generator knows about each frame: carrier offset (cycles/sample), phase (rad), the
    sample index of each symbol's pulse peak (N, K) and the symbols (N, K), unit power."""

    cfo: np.ndarray
    phase: np.ndarray
    peaks: np.ndarray
    symbols: np.ndarray

    def subset(self, idx: np.ndarray) -> PskTruth:
        return PskTruth(self.cfo[idx], self.phase[idx], self.peaks[idx], self.symbols[idx])


def gray_bits(points: np.ndarray) -> np.ndarray:
    """QPSK Gray bits (..., 2): bit 0 is set for I < 0, bit 1 for Q < 0."""
    return np.stack([points.real < 0, points.imag < 0], axis=-1)


def genie_receive(frames: np.ndarray, truth: PskTruth, fmt: PskFormat = PskFormat()) -> GenieResult:
    """Symbol and bit errors of frames whose carrier, timing and symbols are known (QPSK bits)."""
    x = _check_frames(frames, fmt)
    n, length = x.shape
    if truth.symbols.shape[0] != n or truth.peaks.shape != truth.symbols.shape:
        raise InputError(f"truth for {truth.symbols.shape[0]} frames does not match {n} frames")
    nidx = np.arange(length)[None]
    y = matched_filter(x * np.exp(-1j * (2 * np.pi * truth.cfo[:, None] * nidx + truth.phase[:, None])), fmt)
    lo, hi = fmt.edge_symbols * fmt.samples_per_symbol, length - fmt.edge_symbols * fmt.samples_per_symbol
    valid = (truth.peaks >= lo) & (truth.peaks < hi)  # (N, K): symbols whose pulses the frame holds
    r = y[np.arange(n)[:, None], np.clip(truth.peaks, 0, length - 1)]
    sym = truth.symbols
    gain = np.sum(valid * r * np.conj(sym), axis=1).real / np.maximum(np.sum(valid * np.abs(sym) ** 2, axis=1), 1e-30)
    r = r / np.where(np.abs(gain) > 1e-30, gain, 1.0)[:, None]
    d = _decide(r, fmt.constellation)
    sym_err = np.sum(valid & ~np.isclose(d, sym, atol=1e-6), axis=1)
    bit_err = np.sum(valid[..., None] & (gray_bits(d) != gray_bits(sym)), axis=(1, 2))
    err = np.sum(valid * np.abs(r - sym) ** 2, axis=1) / np.maximum(np.sum(valid * np.abs(sym) ** 2, axis=1), 1e-30)
    return GenieResult(sym_err, bit_err, valid.sum(axis=1), 10 * np.log10(np.maximum(err, 1e-30)))
