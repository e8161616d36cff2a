"""CUDA through NVIDIA's cuda-python bindings: device query, device and pinned buffers, a stream.

Every call returns ``(error, *values)``; :func:`call` turns a non-success code into a
:class:`BackendUnavailableError` that names the call and the CUDA error, so "no GPU here" reads as
one line instead of a crash. On a machine without a driver the bindings still import and answer
``cudaErrorInsufficientDriver`` or ``cudaErrorNoDevice``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgediff.runtime.errors import BackendUnavailableError


def cudart() -> Any:
    """The CUDA runtime module of cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # type: ignore[no-redef]
        return runtime
    except ImportError:
        raise BackendUnavailableError("cuda-python is not installed: pip install 'edgediff[gpu]' "
                                      "(JetPack: pip install cuda-python matching its CUDA)") from None


def error_name(err: Any) -> str:
    try:
        code, name = cudart().cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # an unknown code must not hide the original failure
        return str(err)


def call(name: str, *args: Any) -> Any:
    """Call ``cudart.<name>(*args)``; return its value(s), or raise with the CUDA error's name."""
    rt = cudart()
    result = getattr(rt, name)(*args)
    err, values = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"CUDA {name} failed: {error_name(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    major: int
    minor: int
    total_memory: int
    driver_version: int
    runtime_version: int

    @property
    def compute_capability(self) -> str:
        """"sm87" for an Orin, "sm90" for an H100: the tag plan file names carry."""
        return f"sm{self.major}{self.minor}"

    @property
    def is_jetson(self) -> bool:
        """Jetson GPUs are integrated (Xavier sm72, Orin sm87)."""
        return (self.major, self.minor) in ((7, 2), (8, 7))


def device_count() -> int:
    """Number of CUDA devices; raises with the CUDA error when there is no usable driver."""
    return int(call("cudaGetDeviceCount"))


def device_info(index: int = 0) -> DeviceInfo:
    count = device_count()
    if index >= count:
        raise BackendUnavailableError(f"CUDA device {index} requested but {count} device(s) are present")
    prop = call("cudaGetDeviceProperties", index)
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceInfo(index, name, int(prop.major), int(prop.minor), int(prop.totalGlobalMem),
                      int(call("cudaDriverGetVersion")), int(call("cudaRuntimeGetVersion")))


def version_string(v: int) -> str:
    """CUDA encodes 12.6 as 12060."""
    return f"{v // 1000}.{(v % 1000) // 10}"


class Stream:
    def __init__(self) -> None:
        self.handle = call("cudaStreamCreate")

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def __int__(self) -> int:
        return int(self.handle)

    def close(self) -> None:
        if self.handle is not None:
            call("cudaStreamDestroy", self.handle)
            self.handle = None


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr = int(call("cudaMalloc", max(nbytes, 1)))

    def close(self) -> None:
        if self.ptr:
            call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedArray:
    """A numpy array in page-locked host memory (fast, asynchronous copies to and from the device)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32):
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr = int(call("cudaMallocHost", max(nbytes, 1)))
        buf = (ctypes.c_byte * max(nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(buf, dtype=self.dtype, count=int(np.prod(shape))).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            call("cudaFreeHost", self.ptr)
            self.ptr = 0


def copy_to_device(dst: DeviceBuffer, src: PinnedArray, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    call("cudaMemcpyAsync", dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, int(stream))


def copy_to_host(dst: PinnedArray, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    call("cudaMemcpyAsync", dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, int(stream))


class Graph:
    """A captured CUDA graph: record the work enqueued on ``stream`` once, replay it cheaply."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.exec: Any = None

    def begin(self) -> None:
        rt = cudart()
        call("cudaStreamBeginCapture", int(self.stream), rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)

    def end(self) -> None:
        graph = call("cudaStreamEndCapture", int(self.stream))
        self.exec = call("cudaGraphInstantiate", graph, 0)
        call("cudaGraphDestroy", graph)

    def launch(self) -> None:
        call("cudaGraphLaunch", self.exec, int(self.stream))

    def close(self) -> None:
        if self.exec is not None:
            call("cudaGraphExecDestroy", self.exec)
            self.exec = None
