"""The TensorRT path: what can be checked without a GPU here, the real builds where one exists.

TensorRT cannot be installed on the CI machine. The build decisions are pure functions and tested
directly; the API calls are type-checked with mypy against the published TensorRT 10.13 stubs; the
"no CUDA device" answers come from the real cuda-python bindings; the GPU tests build and run real
engines and skip with a reason where TensorRT or a GPU is absent.
"""

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgediff.export.tensorrt_build import (
    TOLERANCE,
    BuildSettings,
    Profile,
    engine_entry,
    judge,
    plan_build,
    plan_filename,
)
from edgediff.runtime import BackendUnavailableError, BundleError, InputError
from edgediff.runtime.backends import cuda
from edgediff.runtime.backends.trt import TRT_MISSING, import_tensorrt, incompatibility

REPO = Path(__file__).resolve().parents[2]


def trt_available() -> bool:
    try:
        import_tensorrt()
        cuda.device_info()
        return True
    except BackendUnavailableError:
        return False


needs_gpu = pytest.mark.skipif(not trt_available(), reason="needs TensorRT and a CUDA GPU (absent on this machine)")


@pytest.mark.parametrize("text, expected", [("1:8:64", (1, 8, 64)), ("4", (4, 4, 4)), ("1:1:16", (1, 1, 16))])
def test_profile_parsing(text, expected):
    p = Profile.parse(text, (1, 64))
    assert (p.min, p.opt, p.max) == expected and p.to_dict() == dict(zip(("min", "opt", "max"), expected))


@pytest.mark.parametrize("text, match", [("8:1:64", "MIN <= OPT"), ("a:b:c", "MIN:OPT:MAX"), ("0:1:2", "1 <= MIN"),
                                         ("1:2", "MIN:OPT:MAX"), ("1:8:128", "leaves the bundle's batch range")])
def test_profile_errors(text, match):
    with pytest.raises(InputError, match=match):
        Profile.parse(text, (1, 64))


FILES = ["model.onnx", "reference.npz"]


def test_build_plan_tensorrt_86_jetpack5():
    fp32 = plan_build("8.6.2", BuildSettings(), FILES)
    assert fp32.network_flags == ("EXPLICIT_BATCH",) and fp32.clear_flags == ("TF32",) and fp32.set_flags == ()
    fp16 = plan_build("8.6.2", BuildSettings(precision="fp16"), FILES)
    assert fp16.set_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert "NORMALIZATION" in fp16.fp32_layer_types and "SOFTMAX" in fp16.fp32_layer_types
    assert fp16.fp32_scopes == ("embed",) and fp16.onnx_file == "model.onnx"
    with pytest.raises(InputError, match="bf16 needs TensorRT 9"):
        plan_build("8.6.2", BuildSettings(precision="bf16"), FILES)


def test_build_plan_tensorrt_10_jetpack6():
    plan = plan_build("10.3.0.30", BuildSettings(precision="bf16", tf32=True, version_compatible=True), FILES)
    assert plan.network_flags == () and plan.clear_flags == ()
    assert plan.set_flags == ("VERSION_COMPATIBLE", "BF16", "OBEY_PRECISION_CONSTRAINTS") and not plan.strongly_typed


def test_build_plan_tensorrt_11_is_strongly_typed():
    with pytest.raises(InputError, match="re-export with `edgediff export onnx --fp16`"):
        plan_build("11.4.0", BuildSettings(precision="fp16"), FILES)
    plan = plan_build("11.4.0", BuildSettings(precision="fp16"), FILES + ["model.fp16.onnx"])
    assert plan.strongly_typed and plan.onnx_file == "model.fp16.onnx" and plan.set_flags == ()
    assert plan_build("11.4.0", BuildSettings(), FILES).onnx_file == "model.onnx"
    with pytest.raises(InputError, match="bf16 on TensorRT 11"):
        plan_build("11.4.0", BuildSettings(precision="bf16"), FILES)


@pytest.mark.parametrize("version, settings, match", [
    ("8.5.3", BuildSettings(), "too old"),
    ("10.3.0", BuildSettings(precision="int4"), "unknown"),
    ("10.3.0", BuildSettings(workspace_mib=4), "too small"),
])
def test_build_plan_errors(version, settings, match):
    with pytest.raises((InputError, BackendUnavailableError), match=match):
        plan_build(version, settings, FILES)


def test_build_plan_int8_is_explicit_quantization_from_the_qdq_model():
    with pytest.raises(InputError, match="edgediff export int8"):
        plan_build("10.3.0", BuildSettings(precision="int8"), FILES)
    plan = plan_build("10.3.0", BuildSettings(precision="int8"), FILES + ["model.int8.onnx"])
    assert plan.onnx_file == "model.int8.onnx" and {"INT8", "FP16"} <= set(plan.set_flags)
    assert not plan.fp32_layer_types  # the QDQ graph says what runs in int8; the rest may use fp16
    eight = plan_build("8.6.2", BuildSettings(precision="int8"), FILES + ["model.int8.onnx"])
    assert "EXPLICIT_BATCH" in eight.network_flags and "INT8" in eight.set_flags
    eleven = plan_build("11.4.0", BuildSettings(precision="int8"), FILES + ["model.int8.onnx"])
    assert eleven.strongly_typed and "INT8" not in eleven.set_flags


def test_plan_filename_names_what_it_is_valid_for():
    assert plan_filename("sm87", "10.3.0.30", "fp16") == "model.sm87.trt10.3.0.fp16.plan"


def test_validation_thresholds():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 2, 8))
    assert judge(ref, ref + 5e-5, "fp32")["passed"]
    assert not judge(ref, ref + 5e-4, "fp32")["passed"]
    assert judge(ref, ref * (1 + 5e-3), "fp16")["passed"]
    assert not judge(ref, ref * 1.05, "fp16")["passed"]
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    report = judge(ref, bad, "fp16")
    assert not report["passed"] and report["finite"] is False and report["max_abs"] == "inf"


def test_verify_holds_each_plan_to_no_tighter_a_bound_than_its_build_validated():
    """`edgediff verify` reads a plan's precision from its manifest entry; a --tf32 build records fp32 with tf32
    set, validated at fp32-tf32's relative bound, which verify's elementwise fp32 bound would fail."""
    from types import SimpleNamespace

    from edgediff.tools import verify

    for entry, key in (({"precision": "fp32", "tf32": False}, "fp32"), ({"precision": "fp32", "tf32": True}, "fp32-tf32"),
                       ({"precision": "fp16", "tf32": False}, "fp16"), ({"precision": "int8"}, "int8")):
        denoiser = SimpleNamespace(backend="trt", engine=SimpleNamespace(entry=entry))
        precision = verify.precision_of(denoiser)
        assert precision in verify.E2E_MEDIAN
        built, checked = TOLERANCE[key], verify.TOLERANCES[precision]
        assert all(checked[k] >= v for k, v in built.items()), (entry, built, checked)
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 2, 64))
    tf32_like = ref * (1 + 5e-4 * rng.standard_normal(ref.shape))  # TF32's 10-bit mantissa, within its build bound
    assert judge(ref, tf32_like, "fp32-tf32")["passed"] and verify.judge(ref, tf32_like, "fp32-tf32")["passed"]


DEVICE = cuda.DeviceInfo(0, "Orin (nvgpu)", 8, 7, 8 << 30, 12060, 12060)


def test_engine_entry_records_what_decides_validity():
    settings = BuildSettings(precision="fp16", profile=Profile(1, 4, 16))
    plan = plan_build("10.3.0", settings, FILES)
    entry = engine_entry("model.sm87.trt10.3.0.fp16.plan", 1234, "ab" * 32, settings, plan, DEVICE, "10.3.0",
                         "cd" * 32, {"passed": True})
    assert entry["compute_capability"] == "sm87" and entry["jetson"] is True and entry["cuda_runtime"] == "12.6"
    assert entry["profile"] == {"min": 1, "opt": 4, "max": 16} and entry["tf32"] is False
    assert entry["tensorrt"] == "10.3.0" and entry["onnx_sha256"] == "cd" * 32


def test_plans_for_another_gpu_or_version_are_refused_with_a_fix():
    entry = {"file": "model.sm86.trt10.3.0.fp16.plan", "compute_capability": "sm86", "gpu": "A10",
             "tensorrt": "10.3.0", "precision": "fp16"}
    assert "built for sm86 (A10), this GPU is sm87" in incompatibility(entry, DEVICE, "10.3.0")
    entry["compute_capability"] = "sm87"
    assert incompatibility(entry, DEVICE, "10.3.0") is None
    assert "built with TensorRT 10.3.0, this is TensorRT 10.7.0" in incompatibility(entry, DEVICE, "10.7.0")
    assert "edgediff export trt BUNDLE --precision fp16" in incompatibility(entry, DEVICE, "10.7.0")
    entry["version_compatible"] = True
    assert incompatibility(entry, DEVICE, "10.7.0") is None
    assert incompatibility(entry, DEVICE, "10.2.0") is not None


def test_no_cuda_device_answers_through_real_cuda_python():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    if trt_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match=r"CUDA cudaGetDeviceCount failed: cudaError\w+"):
        cuda.device_info()


def test_cli_without_tensorrt_is_one_line_exit_2(mlp_bundle):
    if trt_available():
        pytest.skip("TensorRT and a GPU are present")
    res = subprocess.run([sys.executable, "-m", "edgediff", "export", "trt", str(mlp_bundle), "--precision", "fp16"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == f"edgediff: error: {TRT_MISSING}\n"


def test_runtime_trt_backend_without_plans_or_tensorrt(tmp_path, mlp_bundle):
    from edgediff.runtime import load

    with pytest.raises(BundleError, match="has no TensorRT plan; build one with `edgediff export trt"):
        load(mlp_bundle, backend="trt")
    denoiser = load(mlp_bundle, backend="auto")
    assert denoiser.backend == "ort" and "no TensorRT plan in the bundle" in denoiser.reason


def sanitised_stubs(target: Path) -> Path:
    """Copy the installed TensorRT stubs where mypy can use them (they ship without py.typed) and
    repair their two generator slips that are Python syntax errors (a parameter named ``in``; a
    parameter without default after defaulted ones)."""
    dist = importlib.metadata.distribution("tensorrt-stubs")
    for file in dist.files or []:
        if file.suffix == ".pyi" and file.parts[0] in ("tensorrt", "tensorrt_bindings"):
            text = Path(dist.locate_file(file)).read_text()
            text = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", text).replace("channel_axis: int)", "channel_axis: int = ...)")
            out = target / file
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    return target


def shadow_package(target: Path, **replace: Path) -> Path:
    """edgediff laid out as its import names (setuptools maps folders; mypy does not follow that)."""
    pkg = target / "edgediff"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").symlink_to(REPO / "edgediff" / "__init__.py")
    for folder in ("runtime", "train", "export", "tools"):
        (pkg / folder).symlink_to(replace.get(folder, REPO / folder))
    return target


TYPED_MODULES = ["edgediff.runtime.backends.trt", "edgediff.runtime.backends.cuda", "edgediff.export.tensorrt_build"]


def run_mypy(tmp_path, modules, **replace):
    try:
        importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("tensorrt-stubs is not installed: `make test` installs it (pip install --no-deps tensorrt-stubs)")
    stubs = sanitised_stubs(tmp_path / "stubs")
    shadow = shadow_package(tmp_path / "src", **replace)
    env = {"MYPYPATH": f"{shadow}:{stubs}", "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--no-incremental",
            *[a for m in modules for a in ("-p", m)]]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_tensorrt_and_cuda_code_type_checks_against_the_published_api(tmp_path):
    res = run_mypy(tmp_path, TYPED_MODULES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout


@pytest.mark.slow
def test_mypy_catches_a_misspelt_tensorrt_method(tmp_path):
    """The check above can fail: a copy of the builder with one misspelt API call does not pass."""
    source = (REPO / "export" / "tensorrt_build.py").read_text()
    assert "config.set_memory_pool_limit(" in source
    broken_root = tmp_path / "broken"
    shutil.copytree(REPO / "export", broken_root / "export")
    (broken_root / "export" / "tensorrt_build.py").write_text(source.replace("set_memory_pool_limit(", "set_memory_pool_limt("))
    res = run_mypy(tmp_path, ["edgediff.export.tensorrt_build"], export=broken_root / "export")
    assert res.returncode == 1 and 'has no attribute "set_memory_pool_limt"' in res.stdout


# ---- real engines (skipped without TensorRT and a GPU) -----------------------------------------------

@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_validate_and_run_a_real_engine(tmp_path, unet_bundle, precision):
    from edgediff.export.tensorrt_build import add_engine
    from edgediff.runtime import load
    from edgediff.runtime.bundle import Bundle

    b = tmp_path / "b"
    shutil.copytree(unet_bundle, b)
    entry = add_engine(b, BuildSettings(precision=precision, profile=Profile(1, 4, 16), timing_cache=tmp_path / "cache"))
    assert entry["validation"]["passed"] and (b / entry["file"]).is_file() and (tmp_path / "cache").is_file()
    assert Bundle.open(b).engines[0]["file"] == entry["file"]
    denoiser = load(b, backend="auto")
    assert denoiser.backend == "trt"
    ref = Bundle.open(b).reference()
    eps = denoiser(ref["x_t"], ref["t"])
    tol = 1e-4 if precision == "fp32" else 1e-2
    assert np.linalg.norm(eps - ref["eps"]) / np.linalg.norm(ref["eps"]) < tol
