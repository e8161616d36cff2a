"""Training data: the built-in datasets (from a seed), user files, and the normalisation record.

numpy only: the reconstruction benchmark and the plots draw held-out frames from here without
torch. Every dataset is float32, (N, C, L) for signals or (N, D) for points, scaled so that the
network sees unit RMS; ``Normalisation`` records the factor so that export and runtime undo it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgediff.runtime.analytic import GMM2D
from edgediff.runtime.errors import DataError, InputError
from edgediff.runtime.normalisation import NORMALISATIONS, Normalisation
from edgediff.train import rf

BUILTINS = ("gmm2d", "rf-qpsk", "rf-chirp", "rf-mix", "rf-qpsk-fast", "radar-rd")
#: Offset added to the seed for held-out frames, so evaluation never sees training frames.
HELD_OUT_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class DataConfig:
    """Where the frames come from: a built-in name or a user path, plus framing and normalisation."""

    dataset: str | None = "rf-qpsk"
    path: str | None = None
    n: int = 20000  # built-ins: number of frames generated
    length: int = 256  # frame length L for signals (built-ins and SigMF framing)
    hop: int | None = None  # SigMF framing hop (default: L)
    seed: int = 0
    normalise: str = "rms"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> dict[str, Any]:
        """The config plus what the generators used (mixture parameters, RF impairment ranges)."""
        d = self.to_dict()
        if self.dataset == "gmm2d":
            d["mixture"] = GMM2D.to_dict()
        elif self.dataset == "radar-rd":
            from edgediff.train.radar import describe

            d["generator"] = describe()
        elif self.dataset in BUILTINS:
            d["generator"] = rf.describe()
        return d


def builtin(name: str, n: int, length: int, seed: int) -> np.ndarray:
    """``n`` raw (unnormalised) samples of a built-in dataset, float32."""
    rng = np.random.default_rng(seed)
    if name == "gmm2d":
        return GMM2D.sample(n, rng)[0].astype(np.float32)
    if name == "rf-qpsk":
        return rf.to_iq(rf.qpsk_frames(n, length, rng))
    if name == "rf-qpsk-fast":
        return rf.to_iq(rf.qpsk_frames(n, length, rng, rf.QPSK_FAST))
    if name == "rf-chirp":
        return rf.to_iq(rf.chirp_frames(n, length, rng))
    if name == "radar-rd":  # range-Doppler maps of length x length cells (chirps x samples)
        from edgediff.train.radar import radar_maps

        return radar_maps(n, length, rng)
    if name == "rf-mix":
        is_chirp = rng.random(n) < 0.5
        frames = np.empty((n, length), dtype=complex)
        frames[~is_chirp] = rf.qpsk_frames(int((~is_chirp).sum()), length, rng)
        frames[is_chirp] = rf.chirp_frames(int(is_chirp.sum()), length, rng)
        return rf.to_iq(frames)
    raise InputError(f"dataset {name!r} is unknown: expected one of {', '.join(BUILTINS)} or --data PATH")


def fit_normalisation(x: np.ndarray, kind: str) -> Normalisation:
    if kind not in NORMALISATIONS:
        raise InputError(f"normalise={kind!r} is unknown: expected one of {', '.join(NORMALISATIONS)}")
    if kind == "none":
        return Normalisation("none", 1.0)
    if not np.isfinite(x).all():
        raise DataError("the dataset holds NaN or Inf values: clean the recording (or drop those frames) first")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if rms == 0:
        raise DataError("the dataset is all zeros: RMS normalisation is impossible; check the recording")
    if not 1e-30 < rms < 1e30:
        raise DataError(f"the dataset's RMS {rms:.3g} is outside 1e-30..1e30: rescale the recording or use --normalise none")
    return Normalisation("rms", rms)


def load(config: DataConfig) -> tuple[np.ndarray, Normalisation]:
    """The training array (normalised, float32) and the normalisation that was applied."""
    if config.path is not None:
        from edgediff.train.userdata import load_user_data

        raw = load_user_data(config.path, frame=config.length, hop=config.hop)
    else:
        raw = builtin(str(config.dataset), config.n, config.length, config.seed)
    norm = fit_normalisation(raw, config.normalise)
    return (raw / norm.scale).astype(np.float32), norm


def held_out(config: DataConfig, n: int) -> np.ndarray:
    """Frames of the same built-in dataset that training never saw (raw units, float32)."""
    if config.dataset not in BUILTINS:
        raise InputError("held-out frames exist for built-in datasets only; pass your own test file instead")
    return builtin(config.dataset, n, config.length, config.seed + HELD_OUT_SEED_OFFSET)
