"""Synthetic FMCW radar frames, generated from a seed: point targets over clutter and noise.

numpy only. A frame is N chirps x M samples of the dechirped (beat) signal; a point target at beat
frequency f_r (cycles/sample, its range) and Doppler f_d (cycles/chirp, its radial velocity) adds
a exp(j 2 pi (f_r m + f_d n) + j phi). Its range-Doppler map (unitary 2D DFT, DC centred:
:func:`edgediff.runtime.radar.maps_from_chirps`) concentrates the target into about one cell with
SNR |a|^2 N M / sigma^2, spread into sidelobes when f_r, f_d fall between bins. Clutter (with
probability ``clutter_prob``) is a ridge at zero Doppler: stationary scatterers at every range with
Rayleigh amplitudes. Noise is complex white Gaussian of unit power per sample.

The built-in dataset ``radar-rd`` holds the maps as I/Q frames (2, N, N) (N = ``length``); the
chirp-domain view and the targets' cells and SNRs come from :func:`radar_frames_with_truth`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from edgediff.runtime.radar import maps_from_chirps

RADAR = {
    "targets": (1, 4),  # point targets per frame, uniform
    "snr_db": (5.0, 35.0),  # per target, in its map cell: the dynamic range
    "range": (0.05, 0.45),  # beat frequency, cycles/sample (positive: in front of the radar)
    "doppler": (-0.45, 0.45),  # cycles/chirp
    "clutter_prob": 0.5,
    "clutter_cnr_db": (10.0, 20.0),  # clutter-to-noise per map cell, on the zero-Doppler ridge
}


class RadarTruth(NamedTuple):
    cells: list[list[tuple[int, int]]]  # per frame, (doppler, range) map cells of the targets
    snr_db: np.ndarray  # (total targets,) in the order of the cells


def describe() -> dict[str, Any]:
    return {"radar-rd": RADAR}


def cell(f: float, size: int) -> int:
    """The map cell (DC centred) nearest frequency f in cycles per sample or chirp."""
    return int(np.round(f * size + size // 2)) % size


def radar_frames_with_truth(n: int, size: int, rng: np.random.Generator,
                            params: dict[str, Any] = RADAR) -> tuple[np.ndarray, np.ndarray, RadarTruth]:
    """(chirp-domain frames, range-Doppler maps) as complex (n, size, size), and the targets' truth."""
    p = params
    N = M = size
    nn, mm = np.arange(N)[:, None], np.arange(M)[None, :]
    chirps = (rng.standard_normal((n, N, M)) + 1j * rng.standard_normal((n, N, M))) / np.sqrt(2)  # unit power
    cells, snrs = [], []
    for b in range(n):
        k = int(rng.integers(p["targets"][0], p["targets"][1] + 1))
        frame_cells = []
        for _ in range(k):
            f_r, f_d = rng.uniform(*p["range"]), rng.uniform(*p["doppler"])
            snr = rng.uniform(*p["snr_db"])
            amp = np.sqrt(10 ** (snr / 10) / (N * M))  # |a|^2 N M / sigma^2 = SNR in the cell
            chirps[b] += amp * np.exp(1j * (2 * np.pi * (f_r * mm + f_d * nn) + rng.uniform(0, 2 * np.pi)))
            frame_cells.append((cell(f_d, N), cell(f_r, M)))
            snrs.append(snr)
        if rng.random() < p["clutter_prob"]:
            cnr = rng.uniform(*p["clutter_cnr_db"])
            ranges = (rng.standard_normal(M) + 1j * rng.standard_normal(M)) / np.sqrt(2) * np.sqrt(10 ** (cnr / 10) / N)
            chirps[b] += np.fft.ifft(ranges, norm="ortho")[None, :]  # the same every chirp: zero Doppler
        cells.append(frame_cells)
    return chirps, maps_from_chirps(chirps), RadarTruth(cells, np.asarray(snrs))


def radar_maps(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """I/Q range-Doppler maps (n, 2, size, size), float32: the ``radar-rd`` dataset's frames."""
    _, maps, _ = radar_frames_with_truth(n, size, rng)
    return np.stack([maps.real, maps.imag], axis=1).astype(np.float32)
