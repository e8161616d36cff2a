"""``edgediff verify``: does this engine compute what the torch model computed?

Three checks, each reported with max abs / max relative error, cosine and SNR:
1. ``reference.npz`` (the torch outputs stored at export): works on a device without torch;
2. fresh random inputs against the torch model, where torch and the exporting run are present;
3. end to end: the same initial and step noise through the numpy loop with this engine and through
   the torch reference loop with the torch model; median and max |dx| of the final samples.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgediff.runtime.backends import BundleDenoiser
from edgediff.runtime.backends.trt import VALIDATION_TOLERANCE, tolerance_key
from edgediff.runtime.errors import EdgediffError
from edgediff.runtime import metrics
from edgediff.runtime.metrics import FP32_PARITY, compare, json_safe
from edgediff.runtime.sampling import sample

#: Elementwise (atol + rtol |ref|) for fp32 engines; relative L2 for reduced precision.
#: A TensorRT plan is held to the bounds its build validated it at (by tolerance key; its fp32 as "trt-fp32").
TOLERANCES = {"fp32": FP32_PARITY, "trt-fp32": VALIDATION_TOLERANCE["fp32"], "fp32-tf32": VALIDATION_TOLERANCE["fp32-tf32"],
              "fp16": {"rel_l2": 1e-2}, "bf16": {"rel_l2": 3e-2}, "int8": {"rel_l2": 0.15}}
#: Bound on the median |dx| of the end-to-end check (errors accumulate over steps; judge the median).
#: An int8 model is judged per call here; whether it still works end to end is the receiver gate's job.
E2E_MEDIAN = {"fp32": 1e-4, "trt-fp32": 1e-3, "fp32-tf32": 1e-2, "fp16": 5e-2, "bf16": 1e-1, "int8": 0.2}


@dataclass
class VerifyReport:
    precision: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.cases)


def precision_of(denoiser: BundleDenoiser) -> str:
    if denoiser.backend == "trt":
        entry = denoiser.engine.entry
        key = tolerance_key(str(entry.get("precision", "fp32")), bool(entry.get("tf32")))
        return "trt-fp32" if key == "fp32" else key
    return str(getattr(denoiser.engine, "precision", "fp32"))


def judge(ref: np.ndarray, got: np.ndarray, precision: str) -> dict[str, Any]:
    return metrics.judge(ref, got, TOLERANCES[precision])


def verify(denoiser: BundleDenoiser, *, steps: int = 20, n: int = 4, seed: int = 0,
           run_dir: Any = None) -> VerifyReport:
    """``run_dir``: the torch model's weights (the exporting run, or a bundle whose model.onnx is read back;
    default: the run the manifest names)."""
    precision = precision_of(denoiser)
    report = VerifyReport(precision)
    ref = denoiser.bundle.reference()
    got = denoiser.batched(ref["x_t"], ref["t"])
    report.cases.append({"name": f"reference.npz ({len(ref['t'])} inputs, t = {sorted(set(ref['t'].tolist()))})",
                         **judge(ref["eps"], got, precision)})
    if importlib.util.find_spec("torch") is None:
        report.notes.append("torch is not installed: checked against reference.npz only")
        return report
    try:
        from edgediff.runtime.backends import load

        torch_denoiser = load(denoiser.bundle.root, backend="torch", run_dir=run_dir)
    except EdgediffError as exc:
        report.notes.append(f"no torch comparison: {exc}")
        return report
    report.cases.extend(fresh_input_cases(denoiser, torch_denoiser, precision, seed))
    report.cases.append(end_to_end(denoiser, torch_denoiser, precision, steps, n, seed))
    return report


def fresh_input_cases(denoiser: BundleDenoiser, torch_denoiser: BundleDenoiser, precision: str,
                      seed: int) -> list[dict[str, Any]]:
    T = denoiser.schedule.T
    rng = np.random.default_rng(seed + 101)
    b = max(denoiser.min_batch, min(4, denoiser.max_batch))
    cases = []
    for label, t in (("0", 0), ("T/2", T // 2), ("T-1", T - 1), ("random", None)):
        tt = rng.integers(0, T, b) if t is None else np.full(b, t)
        x = rng.standard_normal((b, *denoiser.sample_shape)).astype(np.float32)
        cases.append({"name": f"torch model, fresh inputs, batch {b}, t={label}",
                      **judge(torch_denoiser(x, tt), denoiser(x, tt), precision)})
    return cases


def end_to_end(denoiser: BundleDenoiser, torch_denoiser: BundleDenoiser, precision: str, steps: int, n: int,
               seed: int) -> dict[str, Any]:
    """DDIM with eta = 1 (so step noise matters), identical noise through both loops."""
    import torch

    from edgediff.train import reference

    b = max(denoiser.min_batch, min(n, denoiser.max_batch))
    shape = (b, *denoiser.sample_shape)
    eta = 1.0
    if getattr(denoiser, "distilled", None):  # its own trailing grid and eta
        steps, eta = int(denoiser.distilled["nfe"]), float(denoiser.distilled.get("eta", 0.0))
    ours = sample(denoiser, denoiser.schedule, shape, method="ddim", steps=steps, eta=eta,
                  rng=np.random.default_rng(seed)).x
    model = torch_denoiser.engine.model

    def torch_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x.to(torch.float32), t)

    theirs = reference.sample(torch_eps, denoiser.schedule, shape, np.random.default_rng(seed), method="ddim",
                              steps=steps, eta=eta, dtype=torch.float64).numpy()
    diff = np.abs(ours - theirs)
    median, worst = float(np.median(diff)), float(diff.max())
    return {"name": f"end to end: DDIM-{steps}, eta {eta:g}, batch {b}, numpy loop vs torch reference loop",
            **json_safe(compare(theirs, ours)), "median_abs_dx": median, "max_abs_dx": worst,
            "passed": bool(np.isfinite(diff).all() and median <= E2E_MEDIAN[precision])}


def format_case(case: dict[str, Any]) -> str:
    status = "ok  " if case["passed"] else "FAIL"
    extra = (f", median |dx| {case['median_abs_dx']:.2e}, max |dx| {case['max_abs_dx']:.2e}"
             if "median_abs_dx" in case else "")
    return (f"{status} {case['name']}: max abs {float(case['max_abs']):.2e}, max rel {float(case['max_rel']):.2e}, "
            f"cosine {float(case['cosine']):.8f}, SNR {float(case['snr_db']):.1f} dB{extra}")
