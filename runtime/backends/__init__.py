"""Loading a bundle into a denoiser: verify hashes, pick an engine, wrap it in the denoiser protocol.

``load(bundle, backend="auto")`` tries, in order: a TensorRT plan built for this GPU and TensorRT
version; ONNX Runtime with the CUDA provider; ONNX Runtime on the CPU. It logs which and why (also
kept in ``denoiser.reason``). Engine packages are imported only here, on demand.

The ``torch`` backend (reference parity where torch is installed) runs the exporting run's EMA
weights in the training model; it is a plugin that ``edgediff.train.torch_engine`` provides,
imported by name only when asked for, so the runtime never imports torch on its own.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.bundle import FINGERPRINT_KEY, NORMALISATION_KEY, Bundle
from edgediff.runtime.errors import BackendUnavailableError, BundleError, EdgediffError, InputError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "ort", "trt", "torch")
TORCH_PLUGIN = "edgediff.train.torch_engine"


class BundleDenoiser:
    """The denoiser protocol over one engine: ``denoiser(x_t float32 (B, ...), t int (B,)) -> eps``.

    Knows the bundle's schedule, sample shape, normalisation and batch range.
    """

    def __init__(self, bundle: Bundle, engine: Any, backend: str, reason: str, batch_range: tuple[int, int]):
        self.bundle = bundle
        self.engine = engine
        self.backend = backend
        self.reason = reason
        self.schedule = bundle.schedule
        self.sample_shape = bundle.sample_shape
        self.normalisation = bundle.normalisation
        self.min_batch, self.max_batch = batch_range
        self.provider = str(getattr(engine, "provider", backend))
        self.self_test_error: float | None = None
        #: a distilled bundle's grid and sampler (manifest "distilled"), None for ordinary bundles
        self.distilled: dict[str, Any] | None = bundle.manifest.get("distilled")
        #: the bundle's own DDIM grid (manifest "sampling", runtime/grids.py), None for the uniform one
        self.sampling: dict[str, Any] | None = bundle.manifest.get("sampling")

    def check_batch(self, batch: int) -> None:
        if not self.min_batch <= batch <= self.max_batch:
            raise InputError(f"batch {batch} is outside this {self.backend} engine's range "
                             f"[{self.min_batch}, {self.max_batch}]: use --batch {self.max_batch} or less "
                             "(or re-export with a larger --max-batch)")

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        if x_t.shape[1:] != self.sample_shape:
            raise InputError(f"x_t has sample shape {x_t.shape[1:]}: this bundle expects {self.sample_shape}")
        self.check_batch(x_t.shape[0])
        return self.engine(np.ascontiguousarray(x_t, dtype=np.float32), np.asarray(t).astype(np.float32))

    def batched(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Any number of inputs, in chunks the engine's batch range accepts (short chunks padded)."""
        out = []
        for i in range(0, len(x_t), self.max_batch):
            xb, tb = x_t[i:i + self.max_batch], np.asarray(t)[i:i + self.max_batch]
            pad = max(0, self.min_batch - len(xb))
            if pad:
                xb, tb = np.concatenate([xb, xb[:1].repeat(pad, 0)]), np.concatenate([tb, tb[:1].repeat(pad, 0)])
            out.append(self(xb, tb)[: len(xb) - pad])
        return np.concatenate(out)

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


#: ONNX Runtime's model file per precision, and the command that adds it to a bundle.
PRECISIONS = {"fp32": ("model.onnx", "edgediff export onnx RUN --out BUNDLE"),
              "fp16": ("model.fp16.onnx", "edgediff export onnx RUN --out BUNDLE --fp16"),
              "int8": ("model.int8.onnx", "edgediff export int8 BUNDLE")}


def load(bundle_dir: str | Path, backend: str = "auto", device: str | None = None, *, threads: int = 0,
         spinning: bool = True, cuda_graph: bool = False, run_dir: str | Path | None = None,
         self_test: bool = True, precision: str = "fp32") -> BundleDenoiser:
    """Verify ``bundle_dir`` (a path or a shipped prior's name) and return a denoiser on the chosen engine.

    ``device``: for ``ort`` one of cpu / cuda / tensorrt (its execution providers); for ``trt`` and
    ``torch`` a device such as ``cuda:0``. ``run_dir`` overrides where the torch backend finds the
    exporting run (default: the path the manifest recorded). With ``self_test`` (the default) the
    engine must reproduce the bundle's reference outputs before it is returned. ``precision``: the
    ONNX model ONNX Runtime runs (fp32 model.onnx, fp16 or int8 where the bundle has them); with a
    lower precision ``auto`` means ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is unknown: expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r} is unknown: expected one of {', '.join(PRECISIONS)}")
    bundle = Bundle.open(bundle_dir)
    if precision != "fp32" and backend in ("trt", "torch"):
        raise InputError(f"--precision {precision} selects an ONNX model for ONNX Runtime; a TensorRT plan has its own "
                         "precision (edgediff export trt --precision) and torch runs the run's fp32 weights")
    if precision != "fp32":
        denoiser = _ort(bundle, device or "cpu", threads, spinning, f"requested {precision}", precision)
    elif backend == "auto":
        denoiser = _auto(bundle, device, threads, spinning, cuda_graph)
    elif backend == "ort":
        denoiser = _ort(bundle, device or "cpu", threads, spinning, "requested")
    elif backend == "trt":
        denoiser = _trt(bundle, _gpu_index(device), cuda_graph, "requested")
    else:
        denoiser = _torch(bundle, device or "cpu", run_dir)
    if self_test:
        from edgediff.runtime.selftest import self_test as run_self_test

        tested = str(getattr(denoiser.engine, "entry", {}).get("precision", "fp32")) if denoiser.backend == "trt" else precision
        denoiser.self_test_error = run_self_test(denoiser, tested)
    return denoiser


def _auto(bundle: Bundle, device: str | None, threads: int, spinning: bool, cuda_graph: bool) -> BundleDenoiser:
    reasons = []
    gpu_wanted = device is None or device.startswith("cuda")
    if not bundle.engines:
        reasons.append("no TensorRT plan in the bundle")
    elif gpu_wanted:
        try:
            return _trt(bundle, _gpu_index(device), cuda_graph, "auto: a TensorRT plan matches this GPU")
        except EdgediffError as exc:
            reasons.append(f"no TensorRT ({exc})")
    from edgediff.runtime.backends.ort import available_providers

    if "CUDAExecutionProvider" in available_providers() and gpu_wanted:
        try:
            return _ort(bundle, "cuda", threads, spinning, "auto: onnxruntime has CUDA; " + "; ".join(reasons))
        except EdgediffError as exc:
            reasons.append(f"no onnxruntime CUDA ({exc})")
    else:
        reasons.append("onnxruntime has no CUDA provider")
    if device is not None and device != "cpu":  # a GPU was asked for by name: say why there is none
        raise BackendUnavailableError(f"--device {device}: no GPU engine here ({'; '.join(reasons)}); use --device cpu")
    return _ort(bundle, "cpu", threads, spinning, "auto: " + ("; ".join(reasons) or "CPU requested"))


def _ort(bundle: Bundle, device: str, threads: int, spinning: bool, reason: str, precision: str = "fp32") -> BundleDenoiser:
    from edgediff.runtime.backends.ort import OrtEngine, OrtOptions

    name, command = PRECISIONS[precision]
    if name not in bundle.manifest["files"]:
        raise InputError(f"{bundle.root}: the bundle has no {precision} model ({name}); make it with `{command}`")
    engine = OrtEngine(bundle.path(name), OrtOptions(device=device, threads=threads, spinning=spinning,
                                                     channels_first=precision == "int8"))
    expected = bundle.schedule.fingerprint()
    found = engine.metadata.get(FINGERPRINT_KEY)
    if found != expected:
        raise BundleError(f"{bundle.path('model.onnx')}: schedule fingerprint {str(found)[:12]}… does not match "
                          f"manifest.json ({expected[:12]}…); the model and manifest come from different exports: "
                          "re-export the bundle")
    check_graph(bundle, engine.input_shape, engine.metadata)
    engine.precision = precision
    log.info("backend ort (%s, %s): %s", engine.provider, precision, reason)
    return BundleDenoiser(bundle, engine, "ort", reason, bundle.batch_range)


def check_graph(bundle: Bundle, input_shape: tuple[Any, ...], metadata: dict[str, str]) -> None:
    """The manifest's sample shape and normalisation must be the graph's own (stamped at export)."""
    graph = tuple(input_shape[1:])
    if len(graph) != len(bundle.sample_shape) or any(isinstance(g, int) and g != s for g, s in zip(graph, bundle.sample_shape)):
        raise BundleError(f"{bundle.root / 'manifest.json'}: sample_shape {list(bundle.sample_shape)} does not match "
                          f"model.onnx's input {list(graph)}; the manifest was edited: re-export the bundle")
    stamped = metadata.get(NORMALISATION_KEY)
    if stamped is not None:
        try:
            norm = json.loads(stamped)
            same = norm["kind"] == bundle.normalisation.kind and np.isclose(float(norm["scale"]), bundle.normalisation.scale,
                                                                             rtol=1e-9, atol=0)
        except (ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise BundleError(f"{bundle.root / 'manifest.json'}: normalisation {bundle.normalisation.to_dict()} does not "
                              f"match the one model.onnx was exported with ({stamped}); re-export the bundle")


def _trt(bundle: Bundle, device_index: int, cuda_graph: bool, reason: str) -> BundleDenoiser:
    from edgediff.runtime.backends import cuda
    from edgediff.runtime.backends.trt import TrtEngine, import_tensorrt, incompatibility

    if not bundle.engines:
        raise BundleError(f"{bundle.root}: has no TensorRT plan; build one with `edgediff export trt {bundle.root}`")
    version = import_tensorrt(allow_lean=True).__version__
    info = cuda.device_info(device_index)
    refusals = []
    for entry in sorted(bundle.engines, key=lambda e: e.get("precision") != "fp32"):
        why = incompatibility(entry, info, version)
        if why is None:
            engine = TrtEngine(bundle.path(entry["file"]), entry, device_index=device_index, cuda_graph=cuda_graph)
            log.info("backend trt (%s): %s", engine.provider, reason)
            return BundleDenoiser(bundle, engine, "trt", reason, (engine.min_batch, engine.max_batch))
        refusals.append(why)
    raise BundleError("; ".join(refusals))


def _torch(bundle: Bundle, device: str, run_dir: str | Path | None) -> BundleDenoiser:
    try:
        plugin = importlib.import_module(TORCH_PLUGIN)
    except ImportError:
        raise BackendUnavailableError("the torch backend needs torch: pip install 'edgediff[train]'") from None
    engine = plugin.TorchEngine.from_bundle(bundle, device=device, run_dir=run_dir)
    return BundleDenoiser(bundle, engine, "torch", "requested", bundle.batch_range)


def _gpu_index(device: str | None) -> int:
    if device in (None, "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise InputError(f"device {device!r} is not a GPU: expected cuda or cuda:N")
