"""The data normalisation a model was trained with, recorded in run configs and bundles."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

NORMALISATIONS = ("rms", "none")


@dataclass(frozen=True)
class Normalisation:
    """x_network = x_user / scale. ``kind`` "rms" made the training set's RMS 1; "none" kept units."""

    kind: str = "none"
    scale: float = 1.0

    def to_user(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale

    def to_network(self, x: np.ndarray) -> np.ndarray:
        return x / self.scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        try:
            kind, scale = d["kind"], float(d["scale"])
        except (KeyError, TypeError, ValueError):
            kind, scale = None, 0.0
        if kind not in NORMALISATIONS or not scale > 0:
            raise InputError(f"normalisation {d} is invalid: expected kind in {NORMALISATIONS} and scale > 0")
        return cls(kind, scale)
