"""``edgediff export trt``: build a TensorRT engine from a bundle's ONNX, validate it, add it.

Small steps: parse the profile -> decide the build (flags per TensorRT version and precision, a pure
function) -> parse ONNX into a network -> configure -> build -> run the engine against ONNX Runtime
on the reference inputs and on random inputs -> write the plan and the manifest entry.

Version paths: TensorRT 8.6 (JetPack 5) needs the EXPLICIT_BATCH network flag and has no bf16;
TensorRT 10.x (JetPack 6) takes precision builder flags (fp16 with normalisation, softmax and the
timestep embedding pinned to fp32); TensorRT 11 builds strongly typed networks only, so fp16 there
comes from the bundle's mixed-precision ``model.fp16.onnx``.

INT8 is explicit quantization: the engine is built from the bundle's QDQ ``model.int8.onnx``
(``edgediff export int8``, already calibrated and gated by a receiver), whose Q/DQ pairs tell
TensorRT where to run int8; no calibrator. The INT8 flag (TensorRT 8.6/10) lets it use them and
FP16 lets it run the layers left in float faster; on TensorRT 11 the strongly typed network takes
its types from the QDQ graph itself. The engine is validated against ONNX Runtime running that same
int8 model (not fp32), at the int8 self-test's tolerance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgediff.runtime.atomic import atomic_path, write_bytes
from edgediff.runtime.backends import cuda
from edgediff.runtime.backends.ort import OrtEngine, OrtOptions
from edgediff.runtime.backends.trt import VALIDATION_TOLERANCE, TrtEngine, import_tensorrt, version_tuple
from edgediff.runtime.backends.trt import tolerance_key as plan_tolerance_key
from edgediff.runtime.bundle import Bundle, sha256_file
from edgediff.runtime.errors import BackendUnavailableError, BundleError, InputError
from edgediff.runtime import metrics

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_ONNX = "model.int8.onnx"
DEFAULT_WORKSPACE_MIB = 512  # fits the builder on 8 GB Jetson boards
#: Layer types kept in fp32 in a weakly typed fp16/bf16 build (statistics and softmax overflow in fp16).
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
#: Layers whose ONNX node name starts with one of these scopes stay fp32 (the timestep embedding).
FP32_SCOPES = ("embed",)
#: Validation thresholds against ONNX Runtime fp32 on the CPU (runtime/backends/trt.py, which verify reads too).
TOLERANCE = VALIDATION_TOLERANCE


@dataclass(frozen=True)
class Profile:
    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str, bundle_range: tuple[int, int]) -> Profile:
        """``MIN:OPT:MAX`` (or one number for a fixed batch), within the bundle's batch range."""
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            values = values * 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise InputError(f"--batch {text!r} is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:1:16)")
        lo, hi = bundle_range
        if values[0] < lo or values[2] > hi:
            raise InputError(f"--batch {text} leaves the bundle's batch range [{lo}, {hi}]: re-export with --max-batch")
        return cls(*values)

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class BuildSettings:
    precision: str = "fp32"
    profile: Profile = Profile(1, 1, 16)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    timing_cache: Path | None = None
    tf32: bool = False
    version_compatible: bool = False
    device_index: int = 0


@dataclass(frozen=True)
class BuildPlan:
    """What to ask TensorRT for; a pure function of the TensorRT version and the settings."""

    onnx_file: str
    network_flags: tuple[str, ...] = ()
    set_flags: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()
    fp32_layer_types: tuple[str, ...] = ()
    fp32_scopes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags


def plan_build(trt_version: str, settings: BuildSettings, bundle_files: list[str]) -> BuildPlan:
    if settings.precision not in PRECISIONS:
        raise InputError(f"--precision {settings.precision!r} is unknown: expected one of {', '.join(PRECISIONS)}")
    if settings.workspace_mib < 16:
        raise InputError(f"--workspace {settings.workspace_mib} MiB is too small: expected at least 16")
    major = version_tuple(trt_version)[0]
    if major < 8 or version_tuple(trt_version) < (8, 6):
        raise BackendUnavailableError(f"TensorRT {trt_version} is too old: edgediff needs 8.6 (JetPack 5) or newer")
    if settings.version_compatible and version_tuple(trt_version) < (8, 6):
        raise InputError("--version-compatible needs TensorRT 8.6 or newer")
    clear = () if settings.tf32 else ("TF32",)
    flags: list[str] = ["VERSION_COMPATIBLE"] if settings.version_compatible else []
    network = ("EXPLICIT_BATCH",) if major < 10 else ()
    if settings.precision == "int8":  # explicit quantization from the gated QDQ model
        if INT8_ONNX not in bundle_files:
            raise InputError(f"int8 engines build from {INT8_ONNX}: make it first with `edgediff export int8 BUNDLE`")
        if major >= 11:
            return BuildPlan(INT8_ONNX, ("STRONGLY_TYPED",), tuple(flags), clear)
        return BuildPlan(INT8_ONNX, network, tuple(flags + ["INT8", "FP16"]), clear,
                         notes=["explicit quantization: TensorRT places int8 where the QDQ nodes are"])
    if major >= 11:  # strongly typed only: precision comes from the ONNX's own types
        if settings.precision == "bf16":
            raise InputError("bf16 on TensorRT 11 needs a bf16 ONNX, which edgediff does not write: use --precision fp16")
        onnx_file = "model.fp16.onnx" if settings.precision == "fp16" else "model.onnx"
        if onnx_file not in bundle_files:
            raise InputError("fp16 on TensorRT 11 builds from model.fp16.onnx: re-export with `edgediff export onnx --fp16`")
        return BuildPlan(onnx_file, ("STRONGLY_TYPED",), tuple(flags), clear)
    if settings.precision == "bf16" and major < 9:
        raise InputError(f"bf16 needs TensorRT 9 or newer (this is {trt_version}): use --precision fp16")
    if settings.precision == "fp32":
        return BuildPlan("model.onnx", network, tuple(flags), clear)
    flags += [settings.precision.upper(), "OBEY_PRECISION_CONSTRAINTS"]
    return BuildPlan("model.onnx", network, tuple(flags), clear, FP32_LAYER_TYPES, FP32_SCOPES)


def plan_filename(compute_capability: str, trt_version: str, precision: str) -> str:
    """``model.sm87.trt10.3.0.fp16.plan``: what a plan is valid for, readable in its name."""
    short = ".".join(trt_version.split(".")[:3])
    return f"model.{compute_capability}.trt{short}.{precision}.plan"


def tolerance_key(settings: BuildSettings) -> str:
    return plan_tolerance_key(settings.precision, settings.tf32)


def judge(reference: np.ndarray, candidate: np.ndarray, key: str) -> dict[str, Any]:
    """Compare an engine with ONNX Runtime at the tolerance of its precision."""
    return metrics.judge(reference, candidate, TOLERANCE[key])


def engine_entry(file: str, plan_bytes: int, sha: str, settings: BuildSettings, plan: BuildPlan,
                 device: cuda.DeviceInfo, trt_version: str, onnx_sha: str, validation: dict[str, Any]) -> dict[str, Any]:
    """The manifest record of one engine: everything that decides whether it may run somewhere."""
    return {
        "file": file, "sha256": sha, "bytes": plan_bytes, "precision": settings.precision,
        "profile": settings.profile.to_dict(), "tensorrt": trt_version,
        "cuda_runtime": cuda.version_string(device.runtime_version),
        "cuda_driver": cuda.version_string(device.driver_version), "gpu": device.name,
        "compute_capability": device.compute_capability, "jetson": device.is_jetson, "tf32": settings.tf32,
        "version_compatible": settings.version_compatible, "strongly_typed": plan.strongly_typed,
        "onnx": plan.onnx_file, "onnx_sha256": onnx_sha, "workspace_mib": settings.workspace_mib,
        "validation": validation,
    }


# ---- the parts that need TensorRT ------------------------------------------------------------------

def build_serialized(onnx_path: Path, plan: BuildPlan, settings: BuildSettings, verbose: bool = False) -> bytes:
    """Parse the ONNX, configure the builder per ``plan`` and return the serialised engine."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = {"EXPLICIT_BATCH": trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH,
                     "STRONGLY_TYPED": trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED}
    builder_flags = {"FP16": trt.BuilderFlag.FP16, "BF16": trt.BuilderFlag.BF16, "TF32": trt.BuilderFlag.TF32,
                     "INT8": trt.BuilderFlag.INT8,
                     "OBEY_PRECISION_CONSTRAINTS": trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                     "VERSION_COMPATIBLE": trt.BuilderFlag.VERSION_COMPATIBLE}
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(network_flags[name])
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BundleError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    for name in plan.set_flags:
        config.set_flag(builder_flags[name])
    for name in plan.clear_flags:
        config.clear_flag(builder_flags[name])
    pin_fp32_layers(network, plan)
    add_profile(builder, config, network, settings.profile)
    cache = attach_timing_cache(config, settings.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(
            f"TensorRT could not build the engine (most often out of memory): lower --workspace (now "
            f"{settings.workspace_mib} MiB; 256 fits 8 GB Jetsons), close other GPU processes, or see `edgediff -v`")
    if settings.timing_cache is not None and cache is not None:
        write_bytes(settings.timing_cache, bytes(cache.serialize()))
    return bytes(serialized)


def pin_fp32_layers(network: trt.INetworkDefinition, plan: BuildPlan) -> int:
    """Keep normalisation, softmax and the timestep embedding in fp32 in a weakly typed fp16 build."""
    import tensorrt as trt

    by_name = {"NORMALIZATION": trt.LayerType.NORMALIZATION, "SOFTMAX": trt.LayerType.SOFTMAX,
               "REDUCE": trt.LayerType.REDUCE}
    types = {by_name[name] for name in plan.fp32_layer_types}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        scope = layer.name.split("/")[0].split(".")[0]
        if layer.type in types or scope in plan.fp32_scopes:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    log.info("pinned %d layers to fp32", pinned)
    return pinned


def add_profile(builder: trt.Builder, config: trt.IBuilderConfig, network: trt.INetworkDefinition,
                profile: Profile) -> None:
    """One optimisation profile over the batch axis; frames and maps have a fixed shape."""
    import tensorrt as trt

    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tensor.shape
        rest = [int(dims[i]) for i in range(1, len(dims))]  # (C, L), (C, H, W) or (D,); () for t
        opt_profile.set_shape(tensor.name, trt.Dims([profile.min, *rest]), trt.Dims([profile.opt, *rest]),
                              trt.Dims([profile.max, *rest]))
    config.add_optimization_profile(opt_profile)


def attach_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> trt.ITimingCache | None:
    if path is None:
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise InputError(f"{path}: timing cache does not match this GPU/TensorRT; delete it and rebuild")
    return cache


def validate(engine: TrtEngine, bundle: Bundle, settings: BuildSettings, seed: int = 0) -> dict[str, Any]:
    """The engine against ONNX Runtime (CPU) on reference.npz and on random inputs: the fp32 model, or
    for an int8 engine the same QDQ model it was built from."""
    source = INT8_ONNX if settings.precision == "int8" else "model.onnx"
    ort = OrtEngine(bundle.path(source), OrtOptions(device="cpu"))
    key = tolerance_key(settings)
    ref = bundle.reference()
    rng = np.random.default_rng(seed)
    cases = []
    for b in sorted({settings.profile.min, settings.profile.opt, settings.profile.max}):
        reps = -(-b // len(ref["t"]))
        cases.append((f"reference.npz, batch {b}", np.concatenate([ref["x_t"]] * reps)[:b],
                      np.concatenate([ref["t"]] * reps)[:b]))
        cases.append((f"random, batch {b}", rng.standard_normal((b, *bundle.sample_shape)).astype(np.float32),
                      rng.integers(0, bundle.schedule.T, b)))
    checks = []
    for name, x, t in cases:
        t32 = t.astype(np.float32)
        checks.append({"name": name, **judge(ort(x, t32), engine(x, t32), key)})
    return {"against": f"onnxruntime CPU, {source}", "tolerance": TOLERANCE[key], "checks": checks,
            "passed": all(c["passed"] for c in checks)}


def add_engine(bundle_dir: Path, settings: BuildSettings, *, verbose: bool = False) -> dict[str, Any]:
    """Build, validate and add one engine to the bundle; on any failure the bundle is unchanged."""
    from edgediff.export import manifest as manifest_io

    bundle = Bundle.open(bundle_dir)
    trt_module = import_tensorrt()
    device = cuda.device_info(settings.device_index)
    plan = plan_build(trt_module.__version__, settings, list(bundle.manifest["files"]))
    onnx_path = bundle.path(plan.onnx_file)
    serialized = build_serialized(onnx_path, plan, settings, verbose)
    name = plan_filename(device.compute_capability, trt_module.__version__, settings.precision)
    target = Path(bundle_dir) / name
    with atomic_path(target, suffix=".plan") as tmp:
        tmp.write_bytes(serialized)
        entry = {"file": name, "precision": settings.precision, "profile": settings.profile.to_dict(),
                 "tensorrt": trt_module.__version__, "compute_capability": device.compute_capability,
                 "gpu": device.name, "version_compatible": settings.version_compatible}
        engine = TrtEngine(tmp, entry, device_index=settings.device_index)
        try:
            validation = validate(engine, bundle, settings)
        finally:
            engine.close()
        if not validation["passed"]:
            worst = max(validation["checks"], key=lambda c: float(c["rel_l2"]))
            raise BundleError(f"engine rejected, not written: {worst['name']}: rel L2 {worst['rel_l2']}, "
                              f"max abs {worst['max_abs']}, finite {worst['finite']} (limits {validation['tolerance']})")
    sha = sha256_file(target)
    full = engine_entry(name, target.stat().st_size, sha, settings, plan, device, trt_module.__version__,
                        sha256_file(onnx_path), validation)
    m = dict(bundle.manifest)
    m["files"] = {**m["files"], name: {"sha256": sha, "bytes": full["bytes"]}}
    m["engines"] = [e for e in m.get("engines", []) if e.get("file") != name] + [full]
    manifest_io.write(Path(bundle_dir), m)
    return full
