"""Measurements behind ``edgediff bench``: every figure taken side by side in one process run.

Timings are medians over repeats after warm-up (min and max kept); the figures worth quoting are the
ratios between backends measured in the same run, since shared machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgediff.runtime.backends import BundleDenoiser
from edgediff.runtime.errors import EdgediffError
from edgediff.runtime.sampling import sample


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "torch"):
        try:
            versions[name] = str(__import__(name).__version__)
        except ImportError:
            pass
    try:
        from edgediff.runtime.backends.trt import import_tensorrt

        versions["tensorrt"] = str(import_tensorrt().__version__)
    except EdgediffError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(), "system": platform.system(), **versions}


def stats(seconds: list[float]) -> dict[str, float]:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "n": len(seconds)}


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return stats(times)


def nfe_latency(denoiser: BundleDenoiser, batch: int, warmup: int, repeats: int) -> dict[str, float]:
    """One network evaluation through the denoiser protocol (numpy in, numpy out)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *denoiser.sample_shape)).astype(np.float32)
    t = rng.integers(0, denoiser.schedule.T, batch)
    return time_calls(lambda: denoiser(x, t), warmup, repeats)


class TimedDenoiser:
    """Forwards to a denoiser and adds up the time spent inside it."""

    def __init__(self, inner: BundleDenoiser):
        self.inner, self.inside, self.calls = inner, 0.0, 0

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        eps = self.inner(x_t, t)
        self.inside += time.perf_counter() - start
        self.calls += 1
        return eps


def loop_overhead(denoiser: BundleDenoiser, batch: int, steps: int, repeats: int, eta: float = 0.0) -> dict[str, Any]:
    """Per-step time of the numpy sampler outside the network: DDIM with ``eta`` (0: deterministic,
    the `edgediff sample` default; 1: the DDPM posterior, which draws noise at every step)."""
    shape = (batch, *denoiser.sample_shape)
    per_step, outside = [], []
    sample(denoiser, denoiser.schedule, shape, method="ddim", steps=min(10, steps), rng=np.random.default_rng(0))
    for r in range(repeats):
        timed = TimedDenoiser(denoiser)
        start = time.perf_counter()
        sample(timed, denoiser.schedule, shape, method="ddim", steps=steps, eta=eta, rng=np.random.default_rng(r))
        total = time.perf_counter() - start
        per_step.append(total / steps)
        outside.append((total - timed.inside) / steps)
    step, over = statistics.median(per_step), statistics.median(outside)
    return {"batch": batch, "steps": steps, "eta": eta, "step_s": step, "overhead_s": over, "overhead_fraction": over / step,
            "overhead_min_s": min(outside), "overhead_max_s": max(outside)}


def end_to_end(denoiser: BundleDenoiser, batch: int, method: str, steps: int | None, repeats: int) -> dict[str, Any]:
    """Wall time per sample of a whole sampling run (first run included in warm-up)."""
    shape = (batch, *denoiser.sample_shape)

    def run() -> None:
        sample(denoiser, denoiser.schedule, shape, method=method, steps=steps, rng=np.random.default_rng(0))

    s = time_calls(run, warmup=0, repeats=repeats)
    return {k: (v / batch if k != "n" else v) for k, v in s.items()}


def torch_weights(bundle: Path | str, run_dir: Path | None) -> tuple[Path | None, str | None]:
    """Where the torch backend takes its weights, and a note when the bundle's own stand in: ``run_dir`` (--run),
    else the exporting run where it is here (None: the manifest's), else the bundle itself, its model.onnx read
    back into torch (a shipped prior's run is never here; the same weights, so the same network to time)."""
    from edgediff.runtime.bundle import Bundle

    if run_dir is not None:
        return run_dir, None
    b = Bundle.open(bundle)
    source = str(b.manifest.get("source_run", {}).get("path", ""))
    if source and (Path(source) / "weights.safetensors").is_file():
        return None, None
    return b.root, f"torch: the exporting run is not here; its weights read back from {b.root / 'model.onnx'}"


def research_loop(denoiser: BundleDenoiser, method: str, steps: int | None, batch: int, repeats: int) -> dict[str, Any]:
    """The usual research-repository way: the same network in a torch eager loop (train.reference); ``denoiser``
    is the torch backend's, whose model it drives."""
    import torch

    from edgediff.train import reference

    model = denoiser.engine.model
    shape = (batch, *denoiser.sample_shape)

    def run() -> None:
        reference.sample(lambda x, t: model(x, t), denoiser.schedule, shape, np.random.default_rng(0), method=method,
                         steps=steps, dtype=torch.float32)

    s = time_calls(run, warmup=0, repeats=repeats)
    return {k: (v / batch if k != "n" else v) for k, v in s.items()}


PEAK_RSS = textwrap.dedent(
    """
    def peak_rss_mb():
        # VmHWM is this process image's high-water mark; ru_maxrss would carry the parent's over exec
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    """
)

LEAN_SCRIPT = PEAK_RSS + textwrap.dedent(
    """
    import importlib.abc, json, sys, time
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "onnx"}:
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
    t0 = time.perf_counter()
    import numpy as np
    import onnxruntime
    from edgediff.runtime import load, sample
    t1 = time.perf_counter()
    d = load(sys.argv[1], backend="ort")
    t2 = time.perf_counter()
    sample(d, d.schedule, (1, *d.sample_shape), method="ddim", steps=20, rng=np.random.default_rng(0))
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "sample_ddim20_s": t3 - t2,
                      "peak_rss_mb": peak_rss_mb(),
                      "torch_imported": any(m.split(".")[0] == "torch" for m in sys.modules)}))
    """
)

TORCH_SCRIPT = PEAK_RSS + textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from edgediff.runtime.bundle import Bundle
    from edgediff.train import reference
    from edgediff.train.torch_engine import TorchEngine
    t1 = time.perf_counter()
    bundle = Bundle.open(sys.argv[1])
    model = TorchEngine.from_bundle(bundle, run_dir=sys.argv[2] if len(sys.argv) > 2 else None).model
    t2 = time.perf_counter()
    reference.sample(lambda x, t: model(x, t), bundle.schedule, (1, *bundle.sample_shape), np.random.default_rng(0),
                     method="ddim", steps=20)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "sample_ddim20_s": t3 - t2,
                      "peak_rss_mb": peak_rss_mb()}))
    """
)


def process_footprint(bundle: Path, script: str, *args: str) -> dict[str, Any]:
    """Run a fresh process that loads the bundle and samples; report its import/load times and peak RSS."""
    proc = subprocess.run([sys.executable, "-c", script, str(bundle), *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gmm_quality(denoiser: BundleDenoiser, n: int, batch: int) -> dict[str, Any]:
    """Mode shares of DDPM-T and DDIM-50 samples of a gmm2d bundle (exact mixture assignment)."""
    from edgediff.runtime.analytic import GMM2D, GaussianMixtureDenoiser

    exact = GaussianMixtureDenoiser.from_spec(denoiser.schedule, GMM2D)
    out: dict[str, Any] = {"n": n, "weights": list(exact.weights)}
    for label, method, steps in (("ddpm", "ddpm", None), ("ddim50", "ddim", 50)):
        xs = [sample(denoiser, denoiser.schedule, (min(batch, n - i), 2), method=method, steps=steps,
                     rng=np.random.default_rng([7, i])).x for i in range(0, n, batch)]
        x = denoiser.normalisation.to_user(np.concatenate(xs))
        out[label] = exact.mode_shares(x).tolist()
    out["max_share_diff"] = float(np.max(np.abs(np.subtract(out["ddpm"], out["ddim50"]))))
    return out


def install_footprint(roots: list[str]) -> dict[str, Any]:
    """Installed size (MB) of ``roots`` and everything they require, from the installed metadata."""
    import importlib.metadata as md
    import re

    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging comes with onnxruntime
        Marker = None  # type: ignore[assignment, misc]
    seen: dict[str, float] = {}
    todo = list(roots)
    while todo:
        name = re.split(r"[\s\[<>=!~;(]", todo.pop().strip(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = sum((f.size or 0) for f in (dist.files or [])) / 1e6
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and ("extra" in marker or (Marker is not None and not Marker(marker).evaluate())):
                continue
            todo.append(spec)
    return {"total_mb": round(sum(seen.values()), 1), "packages": {k: round(v, 1) for k, v in sorted(seen.items())}}


SAMPLE_CLI = textwrap.dedent(
    """
    import json, resource, subprocess, sys, tempfile, time, os
    with tempfile.TemporaryDirectory() as tmp:  # removed with what the child wrote
        out = os.path.join(tmp, "s.npy")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgediff", "sample", sys.argv[1], "--n", "16", "--steps", "20",
                               "--backend", "ort", "--out", out, "--quiet"], capture_output=True, text=True)
    print(json.dumps({"returncode": proc.returncode, "wall_s": time.perf_counter() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
    """
)


def sample_cli_footprint(bundle: Path) -> dict[str, Any]:
    """Peak RSS and wall time of a whole `edgediff sample` process (CLI start-up included), measured by a
    small parent so the figure is the child's own high-water mark."""
    return process_footprint(bundle, SAMPLE_CLI)


def dynamic_int8(bundle: Any, folder: str, threads: int = 0) -> BundleDenoiser:
    """ONNX Runtime's dynamic quantization of the bundle's model (int8 weights, activations quantized per
    call), written to ``folder``: a bench row, not a bundle file (no calibration, no gate)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgediff.export.quantize import candidate_denoiser
    from edgediff.runtime.bundle import Bundle

    b = Bundle.open(bundle)
    out = Path(folder) / "model.dynamic.onnx"
    quantize_dynamic(str(b.path("model.onnx")), str(out), weight_type=QuantType.QInt8)
    d = candidate_denoiser(b, out, threads)
    d.provider = "CPUExecutionProvider, dynamic int8"
    return d


def converted_fp16(bundle: Any, folder: str, threads: int = 0) -> BundleDenoiser:
    """The bundle's model converted to mixed fp16 here (as `export onnx --fp16` does), for a bench row."""
    import onnx

    from edgediff.export import fp16
    from edgediff.export.quantize import candidate_denoiser
    from edgediff.runtime.bundle import Bundle

    b = Bundle.open(bundle)
    out = Path(folder) / "model.fp16.onnx"
    onnx.save(fp16.convert(onnx.load(str(b.path("model.onnx")))), str(out))
    d = candidate_denoiser(b, out, threads)
    d.provider = "CPUExecutionProvider, fp16 (converted)"
    return d
