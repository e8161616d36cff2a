"""The parity gate: ONNX Runtime (CPU) against the torch model, on fresh inputs, as a hard failure.

Checks every batch size in {1, 7, profile maximum} at t in {0, T/2, T-1} and at random t. Each check
reports max abs / max relative error, cosine similarity and SNR; the gate passes when every element
satisfies |ort - torch| <= atol + rtol |torch|.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgediff.runtime.metrics import compare, json_safe

Engine = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x_t float32, t float32) -> eps


def torch_eps(model: nn.Module, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_t), torch.from_numpy(t.astype(np.float32))).numpy()


def gate_cases(T: int, max_batch: int, sample_shape: tuple[int, ...], seed: int = 0) -> list[dict[str, Any]]:
    """Fresh inputs: x_t ~ N(0, 1), one case per (batch, timestep choice)."""
    rng = np.random.default_rng(seed)
    batches = sorted({1, min(7, max_batch), max_batch})
    cases = []
    for b in batches:
        for label in ("0", "T/2", "T-1", "random"):
            fixed = {"0": 0, "T/2": T // 2, "T-1": T - 1}.get(label)
            t = np.full(b, fixed) if fixed is not None else rng.integers(0, T, b)
            x = rng.standard_normal((b, *sample_shape)).astype(np.float32)
            cases.append({"name": f"batch {b}, t={label}", "x_t": x, "t": t.astype(np.int64)})
    return cases


def run_gate(model: nn.Module, engine: Engine, cases: list[dict[str, Any]], *, atol: float, rtol: float) -> dict[str, Any]:
    """Compare ``engine`` with the torch model on every case; the report goes into the manifest."""
    checks = []
    for case in cases:
        ref = torch_eps(model, case["x_t"], case["t"])
        got = engine(case["x_t"], case["t"].astype(np.float32))
        checks.append({"name": case["name"], **json_safe(compare(ref, got, atol=atol, rtol=rtol))})
    return {
        "engine": "onnxruntime CPUExecutionProvider",
        "tolerance": {"atol": atol, "rtol": rtol},
        "checks": checks,
        "worst_max_abs": max(float(c["max_abs"]) for c in checks),
        "passed": all(c["passed"] for c in checks),
    }


def describe(report: dict[str, Any]) -> str:
    failed = [c for c in report["checks"] if not c["passed"]]
    worst = max(report["checks"], key=lambda c: float(c["max_abs"]))
    head = (f"{len(report['checks']) - len(failed)}/{len(report['checks'])} checks within atol "
            f"{report['tolerance']['atol']:g} + rtol {report['tolerance']['rtol']:g}; worst {worst['name']}: "
            f"max abs {float(worst['max_abs']):.2e}, cosine {worst['cosine']:.9f}, SNR {float(worst['snr_db']):.1f} dB")
    return head
