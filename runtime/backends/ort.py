"""ONNX Runtime engine: session options for tiny models, CPU or CUDA, IO binding on the device.

The only module of the runtime that imports onnxruntime.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.errors import BackendUnavailableError, BundleError, InputError

log = logging.getLogger(__name__)

OPTIMISATION_LEVELS = ("disable", "basic", "extended", "all")
DEVICES = ("cpu", "cuda", "tensorrt")
MAX_THREADS = 256
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class OrtOptions:
    """Engine options, in one typed place.

    ``threads`` 0 means min(2, CPU count): measured fastest for a ~1 M-parameter U-Net on small CPUs
    (more threads cost more in synchronisation than they gain). ``spinning`` keeps worker threads
    busy-waiting between calls, which cuts latency of back-to-back sampler steps.
    """

    device: str = "cpu"
    threads: int = 0
    spinning: bool = True
    optimisation: str = "all"
    #: keep int8 convolutions in the graph's own channels-first layout: ONNX Runtime's NHWC transformer
    #: wraps each QLinearConv of a QDQ U-Net in transposes (a third of an int8 call at batch 16)
    channels_first: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 0 <= self.threads <= MAX_THREADS:
            raise InputError(f"--threads {self.threads!r}: expected 0 (automatic) to {MAX_THREADS}")
        if self.device not in DEVICES:
            raise BackendUnavailableError(f"onnxruntime device {self.device!r} is unknown: expected one of {DEVICES}")
        if self.optimisation not in OPTIMISATION_LEVELS:
            raise BackendUnavailableError(f"optimisation {self.optimisation!r} is unknown: expected {OPTIMISATION_LEVELS}")


def import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install 'edgediff[ort]' "
                                      "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def available_providers() -> list[str]:
    try:
        return list(import_ort().get_available_providers())
    except BackendUnavailableError:
        return []


def session_options(opts: OrtOptions) -> Any:
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.threads or min(2, os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.spinning else "0")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opts.optimisation]
    so.log_severity_level = 3
    return so


def providers_for(opts: OrtOptions) -> list[str]:
    """Execution providers in priority order; asking for one that is not built in is an error."""
    wanted = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[opts.device]
    have = available_providers()
    missing = PROVIDERS[opts.device] not in have
    if missing:
        raise BackendUnavailableError(
            f"onnxruntime here has no {PROVIDERS[opts.device]} (available: {', '.join(have) or 'none'}): "
            "install onnxruntime-gpu with a matching CUDA, or use --backend ort on the CPU")
    return [PROVIDERS[d] for d in wanted if PROVIDERS[d] in have]


class OrtEngine:
    """``engine(x_t float32, t float32) -> eps float32`` on one ONNX Runtime session."""

    def __init__(self, model_path: Path, opts: OrtOptions = OrtOptions()):
        ort = import_ort()
        self.options = opts
        try:
            disabled = {"disabled_optimizers": ["NhwcTransformer"]} if opts.channels_first else {}
            self.session = ort.InferenceSession(str(model_path), session_options(opts), providers=providers_for(opts),
                                                **disabled)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt models
            raise BundleError(f"{model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        self.provider = self.session.get_providers()[0]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_shape = tuple(self.session.get_inputs()[0].shape)  # e.g. ("batch", 2, 256)
        self._on_device = opts.device != "cpu" and self.provider != "CPUExecutionProvider"
        self._bound: dict[tuple[int, ...], Any] = {}
        log.info("onnxruntime %s on %s (%d threads, spinning %s)", ort.__version__, self.provider,
                 self.session.get_session_options().intra_op_num_threads, opts.spinning)

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        try:
            if self._on_device:
                return self._run_bound(x_t, t)
            return self.session.run(None, {"x_t": x_t, "t": t})[0]
        except Exception as exc:  # a graph that loads but cannot run (altered nodes, wrong shapes)
            raise BundleError(f"onnxruntime cannot run this model ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]}); re-export the bundle") from None

    def _run_bound(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        """IO binding: inputs and output live in device buffers reused across calls of one shape."""
        ort = import_ort()
        slot = self._bound.get(x_t.shape)
        if slot is None:
            values = {
                "x_t": ort.OrtValue.ortvalue_from_numpy(x_t, "cuda", 0),
                "t": ort.OrtValue.ortvalue_from_numpy(t, "cuda", 0),
                "eps": ort.OrtValue.ortvalue_from_shape_and_type(x_t.shape, np.float32, "cuda", 0),
            }
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("x_t", values["x_t"])
            binding.bind_ortvalue_input("t", values["t"])
            binding.bind_ortvalue_output("eps", values["eps"])
            slot = self._bound[x_t.shape] = (binding, values)
        binding, values = slot
        values["x_t"].update_inplace(x_t)
        values["t"].update_inplace(t)
        self.session.run_with_iobinding(binding)
        return values["eps"].numpy()
