"""What the runtime sees on this machine, and what each bundle can run on here (and why not)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.errors import EdgediffError


def is_jetson() -> str | None:
    """The board's model string on a Jetson (L4T), else None."""
    for path in (Path("/proc/device-tree/model"), Path("/etc/nv_tegra_release")):
        try:
            text = path.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
        if path.name == "nv_tegra_release" or "jetson" in text.lower() or "nvidia" in text.lower():
            return text.splitlines()[0][:80]
    return None


#: CPU features that change what edgediff does here: /proc/cpuinfo flag -> its name.
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
                "amx_bf16": "AMX-BF16", "asimddp": "NEON dot product", "i8mm": "I8MM"}


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The CPU features of :data:`CPU_FEATURES` this machine has (its first processor's flags), in that order;
    empty where /proc/cpuinfo is absent (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            flags = set(value.split())
            break
    return [name for flag, name in CPU_FEATURES.items() if flag in flags]


def cpu_advice(features: list[str], machine: str) -> list[str]:
    """What the features mean for the int8 engines and for training here, one line each (nothing where
    the features are unknown)."""
    out = []
    if features and machine in ("x86_64", "AMD64"):
        if "AVX512-VNNI" in features or "AVX-VNNI" in features:
            out.append("int8: VNNI multiplies u8 by s8 exactly: 8-bit weights keep their accuracy here")
        else:
            out.append("int8: no VNNI: ONNX Runtime's u8 x s8 products may saturate; 7-bit weights (export int8's "
                       "default) avoid it, 8-bit ones may miss their reference here")
    if "AMX-BF16" in features:
        out.append("training: AMX-BF16 matrix units: `edgediff train --amp` (bf16 autocast) moves about 1.7x the frames")
    return out


def environment() -> dict[str, Any]:
    features = cpu_features()
    facts: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(), "system": platform.platform(),
        "numpy": np.__version__, "jetson": is_jetson(), "cpu_features": features,
        "cpu_advice": cpu_advice(features, platform.machine()),
    }
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        facts["onnxruntime"] = None
    from edgediff.runtime.backends import cuda
    from edgediff.runtime.backends.trt import import_tensorrt

    try:
        facts["tensorrt"] = import_tensorrt(allow_lean=True).__version__
    except EdgediffError as exc:
        facts["tensorrt"] = None
        facts["tensorrt_reason"] = str(exc)
    try:
        info = cuda.device_info(0)
        facts["cuda"] = {"driver": cuda.version_string(info.driver_version), "runtime": cuda.version_string(info.runtime_version),
                         "gpu": info.name, "compute_capability": info.compute_capability, "memory_gb": info.total_memory / 2**30}
    except EdgediffError as exc:
        facts["cuda"] = None
        facts["cuda_reason"] = str(exc)
    return facts


def find_bundles(root: Path) -> list[Path]:
    if (root / "manifest.json").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def bundle_support(bundle: Path, env: dict[str, Any]) -> dict[str, Any]:
    """Each way of running ``bundle`` here: ok, or the reason it is not available."""
    from edgediff.runtime.backends.trt import incompatibility
    from edgediff.runtime.bundle import Bundle

    out: dict[str, Any] = {"bundle": str(bundle), "engines": {}}
    try:
        b = Bundle.open(bundle)
    except EdgediffError as exc:
        out["error"] = str(exc)
        return out
    except Exception as exc:  # doctor reports and carries on: it promises exit 0 for any bundle
        out["error"] = f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        return out
    out["schedule"] = f"{b.schedule.kind} T={b.schedule.T}"
    out["sample_shape"] = list(b.sample_shape)
    providers = env.get("onnxruntime_providers") or []
    out["engines"]["onnxruntime CPU"] = "ok" if env.get("onnxruntime") else "onnxruntime is not installed: pip install 'edgediff[ort]'"
    out["engines"]["onnxruntime CUDA"] = ("ok" if "CUDAExecutionProvider" in providers and env.get("cuda")
                                          else "needs onnxruntime-gpu and a CUDA GPU")
    if not b.engines:
        out["engines"]["TensorRT"] = f"no plan in the bundle: edgediff export trt {bundle}"
    for entry in b.engines:
        name = f"TensorRT {entry['file']}"
        if env.get("tensorrt") is None:
            out["engines"][name] = env.get("tensorrt_reason", "TensorRT is not installed")
        elif env.get("cuda") is None:
            out["engines"][name] = env.get("cuda_reason", "no CUDA device")
        else:
            from edgediff.runtime.backends import cuda

            info = cuda.device_info(0)
            out["engines"][name] = incompatibility(entry, info, env["tensorrt"]) or "ok"
    return out
