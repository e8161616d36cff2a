"""Self-test on load: the chosen engine must reproduce the bundle's stored reference outputs.

``reference.npz`` holds the exporting torch model's eps on fixed inputs. Running one batch of them
costs milliseconds and refuses a model that was swapped or altered (even with its hash recomputed)
before it can sample garbage silently, on any backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import BundleError

#: Relative L2 error allowed per precision (the export gate measures ~1e-6 for fp32 on onnxruntime;
#: TF32 GPU kernels reach ~1e-3; fp16 engines ~1e-3..1e-2; QDQ int8 models ~3e-2). A different model
#: is off by ~1.
TOLERANCE = {"fp32": 5e-3, "fp16": 3e-2, "bf16": 6e-2, "int8": 0.15}


def self_test(denoiser: Any, precision: str = "fp32") -> float:
    """Run the first reference batch through ``denoiser``; returns its relative L2 error or raises."""
    ref = denoiser.bundle.reference()
    n = max(denoiser.min_batch, min(len(ref["t"]), denoiser.max_batch))
    reps = -(-n // len(ref["t"]))
    x, t, eps = (np.concatenate([ref[k]] * reps)[:n] for k in ("x_t", "t", "eps"))
    got = np.asarray(denoiser(x, t), dtype=np.float64)
    err = float(np.linalg.norm(got - eps) / max(np.linalg.norm(eps), 1e-30))
    if not np.isfinite(got).all() or not err <= TOLERANCE.get(precision, TOLERANCE["fp32"]):
        raise BundleError(f"{denoiser.bundle.root}: the {denoiser.backend} engine does not reproduce reference.npz "
                          f"(relative error {err:.2e}, allowed {TOLERANCE.get(precision, TOLERANCE['fp32']):.0e}): the model "
                          "was altered or swapped; re-export the bundle (or pass --no-self-test to run it anyway)")
    return err
