"""How close is an engine's output to a reference? The figures every parity report uses."""

from __future__ import annotations

from typing import Any

import numpy as np

#: An fp32 engine against the torch model, elementwise: the export's parity gate and `verify`'s fp32 checks.
#: fp32's own noise is absolute, not relative: a trained prior reached 1.7e-5 at batch 64, t = 0 (SNR 122 dB),
#: and rf-chirp's reference 1.45e-5 on x86 and 1.48e-5 on ARM64's ONNX Runtime at an output of 0.015 (SNR 120
#: dB), which a 1e-5 bound failed; an export or engine fault is orders of magnitude above 1e-4.
FP32_PARITY = {"atol": 1e-4, "rtol": 1e-5}


def compare(reference: Any, candidate: Any, *, atol: float = 1e-5, rtol: float = 1e-5) -> dict[str, Any]:
    """Elementwise and normwise agreement of ``candidate`` with ``reference``.

    ``passed`` is the elementwise gate |candidate - reference| <= atol + rtol |reference| (the
    convention of numpy.allclose and Polygraphy). ``rel_l2`` is ||c - r|| / ||r||, the fp16 gate.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"compare: shapes {r.shape} and {c.shape} differ")
    diff = np.abs(c - r)
    finite = bool(np.isfinite(c).all())
    ref_norm = float(np.linalg.norm(r))
    err_norm = float(np.linalg.norm(c - r)) if finite else float("inf")
    denom = float(np.linalg.norm(r) * np.linalg.norm(c))
    return {
        "max_abs": float(diff.max()) if finite else float("inf"),
        "max_rel": float((diff / np.maximum(np.abs(r), 1e-12)).max()) if finite else float("inf"),
        "cosine": float(np.sum(r * c) / denom) if finite and denom > 0 else (1.0 if ref_norm == 0 and err_norm == 0 else 0.0),
        "snr_db": float(20 * np.log10(ref_norm / err_norm)) if finite and err_norm > 0 else (float("inf") if finite else float("-inf")),
        "rel_l2": err_norm / ref_norm if ref_norm > 0 else err_norm,
        "finite": finite,
        "passed": finite and bool(np.all(diff <= atol + rtol * np.abs(r))),
    }


def judge(reference: Any, candidate: Any, tolerance: dict[str, float]) -> dict[str, Any]:
    """:func:`compare` against a tolerance: elementwise ``atol``/``rtol``, or a ``rel_l2`` bound (reduced
    precision); non-finite output always fails. JSON-safe."""
    report = compare(reference, candidate, atol=tolerance.get("atol", 0.0), rtol=tolerance.get("rtol", 0.0))
    if "rel_l2" in tolerance:
        report["passed"] = report["finite"] and report["rel_l2"] <= tolerance["rel_l2"]
    return json_safe(report)


def json_safe(report: dict[str, Any]) -> dict[str, Any]:
    """Replace infinities (not valid JSON) with strings."""
    return {k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v) for k, v in report.items()}
