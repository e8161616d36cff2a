"""The INT8 gate: an int8 model against its fp32 original on what the data's user measures.

Blind EVM for PSK priors (within 0.5 dB), mean-PSD LSD for chirps (within 0.2 dB, on 4096 frames:
spectra converge slowly), mode shares for the 2D mixture (within 0.02), and for I/Q priors the NMSE
of 75 % missing samples filled by DDNM+ (within 0.5 dB); a user bundle without a receiver: its
samples' power and mean-PSD LSD against fp32's (within 0.5 dB each). Both models sample with the
``sample`` default and the same seed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.export.quantize import candidate_denoiser
from edgediff.runtime.bundle import Bundle
from edgediff.runtime.errors import InputError

GATES = {"evm_db": 0.5, "lsd_db": 0.2, "share": 0.02, "nmse_db": 0.5, "power_db": 0.5, "user_lsd_db": 0.5}


def gate(bundle: Bundle, int8_path: Path, frames: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The int8 model against fp32 on what the data's user measures (module docstring, step 3)."""
    from edgediff.runtime.generate import SampleRequest, generate

    fp32, int8 = candidate_denoiser(bundle, bundle.path("model.onnx")), candidate_denoiser(bundle, int8_path)
    data = bundle.manifest.get("data") or {}
    dataset = data.get("dataset") if data.get("path") is None else None
    n = frames or {"rf-chirp": 4096, "rf-mix": 1024, "gmm2d": 8192}.get(str(dataset), 512)
    start = time.perf_counter()
    samples = {k: generate(d, SampleRequest(n=n, seed=seed)).x for k, d in (("fp32", fp32), ("int8", int8))}
    report: dict[str, Any] = {"frames": n, "dataset": dataset, "checks": {}}
    checks = report["checks"]
    if dataset == "gmm2d":
        from edgediff.tools.bench_samplers import gmm_row

        a, b = (np.array(gmm_row(samples[k])["mode_shares"]) for k in ("fp32", "int8"))
        checks["share"] = {"fp32": a.tolist(), "int8": b.tolist(), "diff": float(np.max(np.abs(a - b)))}
    elif dataset is not None and dataset.startswith("rf-"):
        try:
            checks.update(_receiver_checks(bundle, samples, dataset, int(data.get("seed", 0))))
        except InputError as exc:  # frames too short for a receiver: the user checks instead, said so
            report["note"] = f"no receiver: {exc}"
            checks.update(_user_checks(samples["fp32"], samples["int8"]))
        checks["nmse_db"] = _reconstruction_check(bundle, fp32, int8, dataset, seed)
    else:
        checks.update(_user_checks(samples["fp32"], samples["int8"]))
    report["passed"] = all(c["diff"] <= GATES[name] for name, c in checks.items())
    report["seconds"] = time.perf_counter() - start
    return report


def _receiver_checks(bundle: Bundle, samples: dict[str, np.ndarray], dataset: str, seed: int) -> dict[str, Any]:
    """Blind EVM (PSK datasets) and, for chirps, the mean-PSD LSD against as many held-out frames."""
    from edgediff.tools.evaluate import PSK_DATASETS, evaluate_frames, reference

    n = len(samples["fp32"])
    ref = reference(dataset, n, int(bundle.sample_shape[-1]), seed)
    ev = {k: evaluate_frames(x, ref, dataset, evm=dataset in PSK_DATASETS) for k, x in samples.items()}
    checks: dict[str, Any] = {}
    if dataset in PSK_DATASETS:
        a, b = (ev[k]["generated"]["evm"]["median_db"] for k in ("fp32", "int8"))
        checks["evm_db"] = {"fp32": a, "int8": b, "diff": abs(a - b)}
    if dataset == "rf-chirp":
        a, b = (ev[k]["psd_lsd_db"] for k in ("fp32", "int8"))
        checks["lsd_db"] = {"fp32": a, "int8": b, "diff": abs(a - b)}
    return checks


def _reconstruction_check(bundle: Bundle, fp32: Any, int8: Any, dataset: str, seed: int, frames: int = 16) -> dict[str, Any]:
    """75 % of the samples lost, DDNM+ (100 steps, same seeds) with each model: NMSE in dB."""
    from edgediff.runtime.inverse import reconstruct
    from edgediff.runtime.inverse.operators import Mask
    from edgediff.tools.evaluate import reference

    truth = reference(dataset, frames, int(bundle.sample_shape[-1]), int((bundle.manifest.get("data") or {}).get("seed", 0)))
    rng = np.random.default_rng(seed + 75)
    masks = (rng.random((frames, 1, truth.shape[-1])) < 0.25).astype(float).repeat(2, axis=1)
    sigma = 0.01 * float(np.sqrt(np.mean(truth**2)))
    y = truth * masks + sigma * rng.standard_normal(truth.shape) * masks
    out = {}
    for name, d in (("fp32", fp32), ("int8", int8)):
        x, _ = reconstruct(d, y, Mask(masks, tuple(bundle.sample_shape)), sigma, method="ddnm", steps=100, seed=seed)
        out[name] = float(10 * np.log10(np.sum((x - truth) ** 2) / np.sum(truth**2)))
    return {**out, "diff": abs(out["fp32"] - out["int8"])}


def _user_checks(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """A bundle without a receiver: the int8 samples' spectrum and power against fp32's."""
    pa, pb = float(np.mean(a**2)), float(np.mean(b**2))
    checks = {"power_db": {"fp32": pa, "int8": pb, "diff": abs(10 * math.log10(max(pb, 1e-30) / max(pa, 1e-30)))}}
    if a.ndim == 3 and a.shape[1] == 2:
        from edgediff.runtime.fidelity import log_spectral_distance_db

        za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
        checks["user_lsd_db"] = {"diff": float(log_spectral_distance_db(zb.astype(complex), za.astype(complex)))}
    return checks


def quantize_gated(bundle_dir: Path, method: str = "percentile", calibration: int = 512, frames: int | None = None,
                   seed: int = 0, force: bool = False, log: Any = print,
                   weight_bits: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize ``bundle_dir`` and keep model.int8.onnx only if :func:`gate` passes (``edgediff export
    int8``, and ``priors adopt`` for a prior that shipped one); returns (manifest, gate report).
    A failed gate raises :class:`BundleError` and leaves the bundle as it was."""
    import tempfile

    from edgediff.export import quantize as q
    from edgediff.runtime.atomic import reclaim, tmp_prefix
    from edgediff.runtime.errors import BundleError

    bundle = Bundle.open(bundle_dir)
    q.check_quantizable(bundle, force)
    target = Path(bundle.root) / q.INT8_FILE
    reclaim(target)  # what a killed earlier run left beside it
    with tempfile.TemporaryDirectory(prefix=tmp_prefix(target), dir=bundle.root) as tmp:
        candidate = Path(tmp) / q.INT8_FILE
        keep = q.quantize(bundle, candidate, method, calibration, seed, weight_bits)
        log(f"quantized ({method}, {calibration} calibration inputs over the schedule, {weight_bits}-bit weights, "
            f"{len(keep)} nodes kept in float); gating against fp32")
        report = gate(bundle, candidate, frames, seed)
        if "note" in report:
            log(f"  note: {report['note']}")
        for name, c in report["checks"].items():
            sides = f"fp32 {c['fp32']:.3g}, int8 {c['int8']:.3g}, " if isinstance(c.get("fp32"), float) else ""
            log(f"  {name}: {sides}difference {c['diff']:.3g} (allowed {GATES[name]})")
        if not report["passed"]:
            failed = ", ".join(f"{k} off by {c['diff']:.3g} (allowed {GATES[k]})" for k, c in report["checks"].items()
                               if c["diff"] > GATES[k])
            raise BundleError(f"int8 gate failed, nothing written: {failed}; try --method entropy or percentile, "
                              "or keep the fp32 model")
        m = q.add_int8(bundle, candidate, {"calibration": {"method": method, "inputs": calibration, "seed": seed,
                                                          "timesteps": "stratified over [0, T)"},
                                           "weight_bits": weight_bits, "float_nodes": len(keep), "gate": report})
    size = m["files"][q.INT8_FILE]["bytes"] / 1e6
    log(f"wrote {target} ({size:.1f} MB, reference error {m['int8']['reference_rel_l2']:.2e}, "
        f"gate {report['seconds']:.0f} s on {report['frames']} frames)")
    return m, report
