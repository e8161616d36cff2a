"""FMCW radar maps as a radar engineer reads them: a cell-averaging CFAR detector and its scoring.

A frame of N chirps x M samples (slow time x fast time) becomes the range-Doppler map by the unitary
2D DFT (``maps_from_chirps``); maps are complex (N, M) arrays, or I/Q frames (2, N, M) for the
priors. numpy only, beside :mod:`edgediff.runtime.receivers`.

Cell-averaging CFAR on the square law |X|^2: each cell is compared with alpha times the mean of its
training cells, a (2 train + 2 guard + 1)^2 window minus the (2 guard + 1)^2 block around it, with
wrap-around at the edges (Doppler is circular; range wraps too, which the maps here allow). For
exponentially distributed noise power (complex Gaussian noise) and n training cells, alpha =
n (Pfa^(-1/n) - 1) gives the false-alarm probability Pfa exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError


def maps_from_chirps(chirps: np.ndarray) -> np.ndarray:
    """Complex (..., N, M) chirp-domain frames -> range-Doppler maps (unitary 2D DFT, DC centred)."""
    return np.fft.fftshift(np.fft.fft2(chirps, norm="ortho"), axes=(-2, -1))


def chirps_from_maps(maps: np.ndarray) -> np.ndarray:
    return np.fft.ifft2(np.fft.ifftshift(maps, axes=(-2, -1)), norm="ortho")


def to_complex(frames: np.ndarray) -> np.ndarray:
    """I/Q frames (B, 2, N, M) -> complex (B, N, M)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] != 2:
        raise InputError(f"maps of shape {frames.shape}: expected I/Q frames (B, 2, N, M)")
    return frames[:, 0] + 1j * frames[:, 1]


def to_iq(maps: np.ndarray) -> np.ndarray:
    return np.stack([maps.real, maps.imag], axis=1)


@dataclass(frozen=True)
class Cfar:
    """CA-CFAR parameters: training and guard cells on each side, and the false-alarm probability."""

    train: int = 4
    guard: int = 1
    pfa: float = 1e-4

    def __post_init__(self) -> None:
        if self.train < 1 or self.guard < 0 or not 0 < self.pfa < 1:
            raise InputError(f"CFAR {self}: expected train >= 1, guard >= 0, 0 < pfa < 1")

    @property
    def cells(self) -> int:
        return (2 * (self.train + self.guard) + 1) ** 2 - (2 * self.guard + 1) ** 2

    @property
    def alpha(self) -> float:
        n = self.cells
        return n * (self.pfa ** (-1.0 / n) - 1.0)

    def kernel(self, shape: tuple[int, int]) -> np.ndarray:
        """The training-cell ring as a (N, M) circular kernel centred on cell (0, 0)."""
        k = np.zeros(shape)
        r, g = self.train + self.guard, self.guard
        for i in range(-r, r + 1):
            for j in range(-r, r + 1):
                if max(abs(i), abs(j)) > g:
                    k[i % shape[0], j % shape[1]] = 1.0
        return k / self.cells

    def statistic(self, maps: np.ndarray) -> np.ndarray:
        """|X|^2 over the mean of each cell's training ring, (..., N, M): the ratio ``detect`` compares
        with alpha. A ring of exact zeros (an l1 map) counts as 1e-12 of the map's mean power."""
        power = np.abs(np.asarray(maps)) ** 2
        if power.ndim < 2 or min(power.shape[-2:]) < 2 * (self.train + self.guard) + 1:
            raise InputError(f"maps of shape {power.shape} are smaller than the CFAR window "
                             f"({2 * (self.train + self.guard) + 1} cells a side)")
        ring = np.fft.fft2(self.kernel(power.shape[-2:]))
        local = np.real(np.fft.ifft2(np.fft.fft2(power) * np.conj(ring)))  # circular correlation
        floor = 1e-12 * power.mean(axis=(-2, -1), keepdims=True) + 1e-300
        return power / np.maximum(local, floor)

    def detect(self, maps: np.ndarray) -> np.ndarray:
        """Boolean (..., N, M) detections of complex maps: |X|^2 > alpha x local mean of the ring."""
        return self.statistic(maps) > self.alpha


def matched_threshold(statistic: np.ndarray, background: np.ndarray, pfa: float) -> float:
    """The threshold on a CFAR statistic that declares ``pfa`` of the ``background`` cells: how a
    detector is set for maps whose noise is not the exponential law alpha assumes (reconstructions)."""
    values = np.sort(statistic[background])
    k = int(np.floor(pfa * len(values)))
    return float(values[-k - 1]) if k < len(values) else 0.0


def background_cells(shape: tuple[int, ...], targets: list[list[tuple[int, int]]], guard: int = 2,
                     ridge: int | None = 1) -> np.ndarray:
    """Cells away from every target (``guard`` cells) and, unless ``ridge`` is None, off the
    zero-Doppler clutter ridge (its row +- ``ridge``): where a detection is a false alarm."""
    keep = np.ones(shape, dtype=bool)
    n, m = shape[-2:]
    if ridge is not None:
        keep[:, n // 2 - ridge:n // 2 + ridge + 1] = False
    for b, frame_targets in enumerate(targets):
        for (i, j) in frame_targets:
            for di in range(-guard, guard + 1):
                keep[b, (i + di) % n, [(j + dj) % m for dj in range(-guard, guard + 1)]] = False
    return keep


def detection_rate(detections: np.ndarray, targets: list[list[tuple[int, int]]], tolerance: int = 1) -> np.ndarray:
    """Per target, whether a detection lies within ``tolerance`` cells of it (circular): (total,) bool,
    targets of frame b given as (doppler, range) cells in ``targets[b]``."""
    hits = []
    n, m = detections.shape[-2:]
    for b, frame_targets in enumerate(targets):
        for (i, j) in frame_targets:
            rows = [(i + di) % n for di in range(-tolerance, tolerance + 1)]
            cols = [(j + dj) % m for dj in range(-tolerance, tolerance + 1)]
            hits.append(bool(detections[b][np.ix_(rows, cols)].any()))
    return np.asarray(hits, dtype=bool)


def false_alarm_rate(detections: np.ndarray, targets: list[list[tuple[int, int]]], guard: int = 2,
                     ridge: int | None = None) -> float:
    """Share of the background cells (:func:`background_cells`) that were detected."""
    keep = background_cells(detections.shape, targets, guard, ridge)
    return float(detections[keep].mean()) if keep.any() else float("nan")


def summary(detections: np.ndarray, targets: Any, snr_db: np.ndarray, bins: np.ndarray) -> dict[str, Any]:
    """Probability of detection per target-SNR bin and the false-alarm rate."""
    hit = detection_rate(detections, targets)
    idx = np.digitize(snr_db, bins)
    pd = [float(hit[idx == k].mean()) if np.any(idx == k) else float("nan") for k in range(1, len(bins))]
    return {"pd": pd, "bins_db": bins.tolist(), "pfa": false_alarm_rate(detections, targets)}
