"""`edgediff doctor` on this machine: facts, bundles, reasons, and exit code 0 without any GPU."""

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

from edgediff.runtime.bundle import sha256_file  # noqa: E402


def doctor(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", "doctor", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_doctor_reports_the_machine():
    res = doctor()
    assert res.returncode == 0, res.stderr
    for key in ("python", "jetson", "cpu", "numpy", "onnxruntime", "tensorrt", "cuda"):
        assert any(line.startswith(key) for line in res.stdout.splitlines()), key
    assert "CPUExecutionProvider" in res.stdout


X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile amx_bf16\n\nprocessor\t: 1\nflags\t\t: x\n"


@pytest.mark.parametrize("cpuinfo, machine, features, says", [
    (X86, "x86_64", ["AVX2", "AVX-512", "AVX512-VNNI", "AMX-BF16"], ["8-bit weights keep", "train --amp"]),
    (X86.replace(" avx512_vnni", "").replace(" amx_bf16", ""), "x86_64", ["AVX2", "AVX-512"], ["may saturate"]),
    ("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm bf16\n", "aarch64", ["NEON dot product", "I8MM"], []),
    ("", "x86_64", [], []),  # not known (no /proc/cpuinfo): nothing said
])
def test_the_cpu_s_features_say_what_int8_and_training_get_here(cpuinfo, machine, features, says):
    from edgediff.tools.doctor import cpu_advice, cpu_features

    assert cpu_features(cpuinfo) == features  # the first processor's flags, in the table's order
    advice = cpu_advice(features, machine)
    assert len(advice) == len(says) and all(s in line for s, line in zip(says, advice))


def test_doctor_explains_each_bundle(tmp_path, mlp_bundle):
    folder = tmp_path / "bundles"
    folder.mkdir()
    shutil.copytree(mlp_bundle, folder / "plain")
    with_plan = folder / "with-plan"
    shutil.copytree(mlp_bundle, with_plan)
    (with_plan / "model.sm87.trt10.3.0.fp16.plan").write_bytes(b"not really a plan")
    m = json.loads((with_plan / "manifest.json").read_text())
    m["files"]["model.sm87.trt10.3.0.fp16.plan"] = {"sha256": sha256_file(with_plan / "model.sm87.trt10.3.0.fp16.plan")}
    m["engines"] = [{"file": "model.sm87.trt10.3.0.fp16.plan", "compute_capability": "sm87", "tensorrt": "10.3.0",
                     "precision": "fp16", "gpu": "Orin", "profile": {"min": 1, "opt": 1, "max": 16}}]
    (with_plan / "manifest.json").write_text(json.dumps(m))
    broken = folder / "broken"
    shutil.copytree(mlp_bundle, broken)
    (broken / "reference.npz").write_bytes(b"tampered")
    res = doctor(folder)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"bundle {folder / 'plain'}" in out and "ok  onnxruntime CPU" in out
    assert "no  TensorRT: no plan in the bundle" in out
    assert "no  TensorRT model.sm87.trt10.3.0.fp16.plan: TensorRT is not installed" in out
    assert f"bundle {broken}: unusable: " in out and "reference.npz: sha256" in out


def test_doctor_takes_a_shipped_prior_by_its_short_name():
    res = doctor("rf-qpsk")
    assert res.returncode == 0, res.stderr
    assert "bundle " in res.stdout and "priors/rf-qpsk (" in res.stdout and "ok  onnxruntime CPU" in res.stdout
    res = doctor("no-such-prior")
    assert res.returncode == 0, res.stderr
    assert "no bundle: no-such-prior: no such bundle directory and no shipped prior of that name" in res.stdout
