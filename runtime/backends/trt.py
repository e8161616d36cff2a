"""TensorRT engine: deserialise a verified plan and run it with cuda-python buffers and a stream.

Written against TensorRT's tensor-name API (TensorRT >= 8.6, the API of 10.x and 11):
``num_io_tensors`` / ``get_tensor_name`` / ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``. The only runtime module that imports tensorrt (or ``tensorrt_lean`` for
version-compatible plans). Plans are executable artefacts: the bundle's sha256 check has passed
before this module reads one, and a plan built for another GPU or TensorRT version is refused
with our message before TensorRT can fail on it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgediff.runtime.backends import cuda
from edgediff.runtime.errors import BackendUnavailableError, BundleError, InputError

if TYPE_CHECKING:  # mypy checks every TensorRT call against the tensorrt-stubs package
    import tensorrt as trt

log = logging.getLogger(__name__)

TRT_MISSING = "TensorRT is not installed: pip install 'edgediff[gpu]', or use JetPack's python3-libnvinfer"
INPUT_NAMES = ("x_t", "t")
OUTPUT_NAME = "eps"
#: A plan's bounds against ONNX Runtime fp32 on the CPU, by tolerance key: the build validates at these
#: (export/tensorrt_build.py) and `edgediff verify` holds a plan to no tighter.
VALIDATION_TOLERANCE = {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "fp32-tf32": {"rel_l2": 1e-3}, "fp16": {"rel_l2": 1e-2},
                        "bf16": {"rel_l2": 3e-2}, "int8": {"rel_l2": 0.1}}


def tolerance_key(precision: str, tf32: bool) -> str:
    """A plan's tolerance key: its precision, an fp32 build with TF32 allowed being ``fp32-tf32`` (its manifest
    entry records ``precision`` fp32 and ``tf32``)."""
    return "fp32-tf32" if precision == "fp32" and tf32 else precision


def import_tensorrt(*, allow_lean: bool = False) -> Any:
    """The tensorrt module, or tensorrt_lean (enough for version-compatible plans).

    Type-stub packages install an empty ``tensorrt`` namespace; a module without ``Runtime`` is
    treated as "not installed".
    """
    names = ("tensorrt", "tensorrt_lean") if allow_lean else ("tensorrt",)
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "Runtime") and hasattr(module, "__version__"):
            return module
    raise BackendUnavailableError(TRT_MISSING)


def make_runtime(*, verbose: bool = False, allow_lean: bool = False) -> trt.Runtime:
    """A TensorRT runtime from the full package, else (version-compatible plans) the lean one."""
    module = import_tensorrt(allow_lean=allow_lean)
    if module.__name__ == "tensorrt":
        import tensorrt as trt

        return trt.Runtime(trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING))
    return module.Runtime(module.Logger(module.Logger.WARNING))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def incompatibility(entry: dict[str, Any], device: cuda.DeviceInfo, trt_version: str) -> str | None:
    """Why the plan of a manifest ``entry`` cannot run here (None when it can)."""
    rebuild = f"rebuild it here with `edgediff export trt BUNDLE --precision {entry.get('precision', 'fp32')}`"
    if entry.get("compute_capability") != device.compute_capability:
        return (f"plan {entry.get('file')} was built for {entry.get('compute_capability')} ({entry.get('gpu')}), "
                f"this GPU is {device.compute_capability} ({device.name}); {rebuild}")
    built = version_tuple(str(entry.get("tensorrt", "0")))
    here = version_tuple(trt_version)
    same = built[:3] == here[:3]
    forward_ok = bool(entry.get("version_compatible")) and here[:1] == built[:1] and here >= built
    if not (same or forward_ok):
        return (f"plan {entry.get('file')} was built with TensorRT {entry.get('tensorrt')}, this is TensorRT "
                f"{trt_version}; {rebuild}")
    return None


class TrtEngine:
    """``engine(x_t float32, t float32) -> eps float32`` on a TensorRT plan, batch within its profile."""

    def __init__(self, plan_path: Path, entry: dict[str, Any], *, device_index: int = 0, cuda_graph: bool = False):
        lean_ok = bool(entry.get("version_compatible"))
        version = import_tensorrt(allow_lean=lean_ok).__version__
        self.device = cuda.device_info(device_index)
        reason = incompatibility(entry, self.device, version)
        if reason:
            raise BundleError(reason)
        cuda.call("cudaSetDevice", device_index)
        self.entry = entry
        runtime = make_runtime(allow_lean=lean_ok)
        if lean_ok:
            runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
        self.engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise BundleError(f"{plan_path}: TensorRT could not deserialise the plan; rebuild it with `edgediff export trt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted((*INPUT_NAMES, OUTPUT_NAME)):
            raise BundleError(f"{plan_path}: engine tensors {names} are not x_t, t -> eps")
        profile = entry["profile"]
        self.min_batch, self.max_batch = int(profile["min"]), int(profile["max"])
        dims = self.engine.get_tensor_shape("x_t")
        self.sample_shape = tuple(int(dims[i]) for i in range(1, len(dims)))
        self.stream = cuda.Stream()
        self._allocate()
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, cuda.Graph] = {}
        self.provider = f"TensorRT {version} on {self.device.name} ({entry.get('precision')})"

    def _allocate(self) -> None:
        """Device buffers and pinned host arrays sized for the profile's largest batch."""
        shape = (self.max_batch, *self.sample_shape)
        self.host = {"x_t": cuda.PinnedArray(shape), "t": cuda.PinnedArray((self.max_batch,)),
                     OUTPUT_NAME: cuda.PinnedArray(shape)}
        self.dev = {name: cuda.DeviceBuffer(arr.array.nbytes) for name, arr in self.host.items()}
        for name, buf in self.dev.items():
            if not self.context.set_tensor_address(name, buf.ptr):
                raise BackendUnavailableError(f"TensorRT refused the device address of {name}")

    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        b = x_t.shape[0]
        if not self.min_batch <= b <= self.max_batch:
            raise InputError(f"batch {b} is outside the engine profile [{self.min_batch}, {self.max_batch}]: "
                             "rebuild with `edgediff export trt --batch MIN:OPT:MAX` or use a smaller --batch")
        self.host["x_t"].array[:b] = x_t
        self.host["t"].array[:b] = t
        if self.cuda_graph:
            self._graph_for(b).launch()
        else:
            self._enqueue(b)
        self.stream.synchronize()
        return self.host[OUTPUT_NAME].array[:b].copy()

    def _enqueue(self, b: int) -> None:
        """Copy in, run, copy out: all asynchronous on one stream."""
        x_bytes = b * int(np.prod(self.sample_shape)) * 4
        self.context.set_input_shape("x_t", (b, *self.sample_shape))
        self.context.set_input_shape("t", (b,))
        cuda.copy_to_device(self.dev["x_t"], self.host["x_t"], x_bytes, self.stream)
        cuda.copy_to_device(self.dev["t"], self.host["t"], b * 4, self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendUnavailableError("TensorRT execute_async_v3 failed; see `edgediff -v` for its log")
        cuda.copy_to_host(self.host[OUTPUT_NAME], self.dev[OUTPUT_NAME], x_bytes, self.stream)

    def _graph_for(self, b: int) -> cuda.Graph:
        """Capture copies + inference for batch ``b`` once (after one plain run, which TensorRT needs)."""
        graph = self._graphs.get(b)
        if graph is None:
            self._enqueue(b)
            self.stream.synchronize()
            graph = cuda.Graph(self.stream)
            graph.begin()
            self._enqueue(b)
            graph.end()
            self._graphs[b] = graph
        return graph

    def close(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        for buf in list(self.dev.values()) + list(self.host.values()):
            buf.close()
        self.stream.close()
