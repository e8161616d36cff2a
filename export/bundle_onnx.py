"""``edgediff export onnx``: a training run -> a parity-gated bundle, built in a temporary directory.

Chain: load the run's EMA model -> export ONNX -> check -> parity gate on ONNX Runtime -> reference
inputs and outputs -> (fp16 ONNX) -> manifest with hashes -> rename into place. Any failure leaves
no bundle behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edgediff.export import fp16, manifest, onnx_export, parity
from edgediff.runtime.atomic import atomic_directory, save_npz
from edgediff.runtime.backends.ort import OrtEngine, OrtOptions, available_providers
from edgediff.runtime.bundle import sha256_file
from edgediff.runtime.errors import BundleError, EdgediffError, InputError
from edgediff.runtime.metrics import FP32_PARITY, compare, json_safe
from edgediff.train.models import config_to_dict, count_parameters
from edgediff.train.run import load_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxExportOptions:
    opset: int = onnx_export.DEFAULT_OPSET
    batch: int | None = None  # fixed batch; None = dynamic in [1, max_batch]
    max_batch: int = 64
    atol: float = FP32_PARITY["atol"]  # runtime/metrics.py: why not 1e-5
    rtol: float = FP32_PARITY["rtol"]
    fp16: bool = False
    force: bool = False
    seed: int = 0


def export_bundle(run_dir: Path, out: Path, opts: OnnxExportOptions = OnnxExportOptions()) -> dict[str, Any]:
    """Write the bundle ``out`` from the run ``run_dir``; returns its manifest."""
    run_dir, out = Path(run_dir), Path(out)
    check_replaceable(out, opts.force)
    if opts.max_batch < 1 or (opts.batch is not None and opts.batch < 1):
        raise InputError("--batch and --max-batch must be positive")
    config, model = load_run(run_dir)
    max_batch = opts.batch or opts.max_batch
    proto = onnx_export.export_checked(model, config.sample_shape, config.schedule, config.model.kind,
                                       opset=opts.opset, batch=opts.batch, max_batch=max_batch,
                                       normalisation=config.normalisation.to_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out, replace=opts.force) as tmp:
        onnx_export.save(proto, tmp / "model.onnx")
        engine = OrtEngine(tmp / "model.onnx", OrtOptions(device="cpu"))
        cases = parity.gate_cases(config.schedule.T, max_batch, config.sample_shape, seed=opts.seed)
        if opts.batch is not None:
            cases = [c for c in cases if len(c["t"]) == opts.batch]
        report = parity.run_gate(model, engine, cases, atol=opts.atol, rtol=opts.rtol)
        if not report["passed"]:
            raise BundleError(f"parity gate failed, no bundle written: {parity.describe(report)} "
                              "(loosen with --atol/--rtol only if you accept that error)")
        files = ["model.onnx", "reference.npz"]
        write_reference(tmp / "reference.npz", model, config.schedule.T, config.sample_shape, opts)
        if write_stats(tmp / "stats.npz", config):
            files.append("stats.npz")
        extra: dict[str, Any] = {"data": {k: v for k, v in config.data.to_dict().items()
                                           if k in ("dataset", "path", "length", "seed", "normalise")}}
        if config.distilled:
            extra["distilled"] = {k: config.distilled[k] for k in ("nfe", "timesteps", "sampler", "eta")}
        if opts.fp16:
            extra["fp16"] = write_fp16(tmp, proto, model, cases)
            files.append("model.fp16.onnx")
        m = manifest.build(
            root=tmp, files=files,
            model={"kind": config.model.kind, "config": config_to_dict(config.model),
                   "trained_prediction": config.train.prediction,
                   "parameters": count_parameters(model), "opset": opts.opset},
            sample_shape=config.sample_shape,
            batch_range={"min": opts.batch or 1, "opt": opts.batch or 1, "max": max_batch, "dynamic": opts.batch is None},
            normalisation=config.normalisation.to_dict(), schedule=config.schedule.to_dict(),
            versions=versions(), parity=report,
            source_run={"path": str(run_dir.resolve()), "weights_sha256": sha256_file(run_dir / "weights.safetensors")},
            extra=extra,
        )
        manifest.write(tmp, m)
    log.info("bundle written to %s", out)
    return m


def check_replaceable(out: Path, force: bool) -> None:
    """--out may be new, or (with --force) an edgediff bundle or an empty directory; never anything else."""
    if str(out).strip() == "":
        raise InputError("--out is empty: give a bundle directory")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist: create it first")
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file: a bundle is a directory; choose another --out")
    if not force:
        raise InputError(f"{out} exists: pass --force to replace it, or choose another --out")
    entries = list(out.iterdir())
    manifest = out / "manifest.json"
    is_bundle = manifest.is_file() and b'"edgediff-bundle"' in manifest.read_bytes()[:4096]
    if entries and not is_bundle:
        raise InputError(f"--out {out} is not an edgediff bundle ({len(entries)} entries, no bundle manifest): "
                         "--force replaces only bundles and empty directories; choose another --out")


def reference_inputs(T: int, sample_shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eight fixed inputs spanning the schedule, including t = 0 and t = T-1."""
    t = np.array(sorted({0, 1, T // 4, T // 2, (3 * T) // 4, max(T - 2, 0), T - 1}), dtype=np.int64)
    rng = np.random.default_rng(seed + 17)
    t = np.concatenate([t, rng.integers(0, T, 8 - len(t))]).astype(np.int64)
    x = rng.standard_normal((len(t), *sample_shape)).astype(np.float32)
    return x, t


def write_reference(path: Path, model: torch.nn.Module, T: int, sample_shape: tuple[int, ...],
                    opts: OnnxExportOptions) -> None:
    x, t = reference_inputs(T, sample_shape, opts.seed)
    if opts.batch is not None:  # a fixed-batch graph only takes that batch size
        reps = -(-opts.batch // len(t))
        x, t = np.concatenate([x] * reps)[: opts.batch], np.concatenate([t] * reps)[: opts.batch]
    # inputs in the model's own dtypes, so a plain onnxruntime session can replay them as they are
    save_npz(path, x_t=x, t=t.astype(np.float32), eps=parity.torch_eps(model, x, t).astype(np.float32))


#: Frames used for the training data's mean and covariance (stats.npz).
STATS_FRAMES = 20_000


def write_stats(path: Path, config: Any) -> bool:
    """The training frames' mean and covariance (network units, float32) for LMMSE baselines and
    starts on the device; skipped (False) for points, long frames, or user data no longer on disk."""
    from edgediff.train import datasets

    n = int(np.prod(config.sample_shape))
    if len(config.sample_shape) != 2 or n > 4096:
        return False
    try:
        data, _ = datasets.load(replace(config.data, n=min(config.data.n, STATS_FRAMES)))
    except EdgediffError as exc:
        log.warning("no stats.npz: the training data cannot be read again (%s)", exc)
        return False
    flat = data[:STATS_FRAMES].reshape(-1, n).astype(np.float64)
    save_npz(path, mean=flat.mean(axis=0).astype(np.float32), cov=np.cov(flat, rowvar=False).astype(np.float32),
             frames=np.array(len(flat)))
    return True


def write_fp16(tmp: Path, proto: onnx.ModelProto, model: torch.nn.Module, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """model.fp16.onnx plus its parity report (relative L2 against torch), on a GPU when there is one."""
    converted = fp16.convert(proto)
    onnx_export.save(converted, tmp / "model.fp16.onnx")
    device = "cuda" if "CUDAExecutionProvider" in available_providers() else "cpu"
    engine = OrtEngine(tmp / "model.fp16.onnx", OrtOptions(device=device))
    checks = []
    for case in cases:
        ref = parity.torch_eps(model, case["x_t"], case["t"])
        got = engine(case["x_t"], case["t"].astype(np.float32))
        checks.append({"name": case["name"], **json_safe(compare(ref, got, atol=1e-2, rtol=1e-2))})
    worst = max(float(c["rel_l2"]) for c in checks)
    if worst > 1e-2 or not all(c["finite"] for c in checks):
        raise BundleError(f"fp16 ONNX is off by relative L2 {worst:.2e} (> 1e-2) or not finite; no bundle written")
    return {"file": "model.fp16.onnx", "engine": engine.provider, "fp32_nodes": len(fp16.fp32_nodes(converted)),
            "worst_rel_l2": worst, "checks": checks}


def versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}
