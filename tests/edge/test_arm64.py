"""The lean runtime on ARM64 (a Jetson's CPU architecture) under qemu user-mode emulation.

The same bundle and seed are sampled on x86 (here) and on emulated ARM64 (numpy 1.26, onnxruntime
1.27, Python 3.11 from Debian bookworm); `verify` must pass there too. Skipped only where the
emulation tools cannot be installed (`make test` installs them on Debian machines).
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgediff.tools import arm64  # noqa: E402

pytestmark = [pytest.mark.edge, pytest.mark.slow]

missing = arm64.tools_missing()
needs_tools = pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed: {arm64.TOOLS_HINT}")


@pytest.fixture(scope="module")
def arm_env():
    return arm64.build()


def sample_on_both(tmp_path, arm_env, args):
    """The same `edgediff sample` here (x86) and in the ARM64 environment: (x86 frames, ARM64 frames)."""
    x86 = subprocess.run([sys.executable, "-m", "edgediff", *args, "--out", str(tmp_path / "x86.npy")],
                         capture_output=True, text=True, timeout=300)
    assert x86.returncode == 0, x86.stderr
    arm = arm64.run(arm_env, [*args, "--out", str(tmp_path / "arm.npy")])
    assert arm.returncode == 0, arm.stderr
    return np.load(tmp_path / "x86.npy"), np.load(tmp_path / "arm.npy")


@needs_tools
def test_arm64_samples_match_x86_and_verify_passes(tmp_path, arm_env, unet_bundle):
    args = ["sample", str(unet_bundle), "--n", "4", "--steps", "20", "--eta", "0.5", "--seed", "3", "--quiet"]
    a, b = sample_on_both(tmp_path, arm_env, args)
    assert a.shape == b.shape == (4, 2, 32)
    diff = np.abs(a - b)
    print(f"x86 vs ARM64: median |dx| {np.median(diff):.2e}, max |dx| {diff.max():.2e} (signal RMS {np.sqrt(np.mean(a**2)):.3f})")
    assert np.median(diff) <= 1e-4
    check = arm64.run(arm_env, ["verify", str(unet_bundle)])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   reference.npz" in check.stdout and "passed" in check.stdout
    # shipped priors, by name: linear and cosine schedules' fingerprints on ARM's libm; rf-chirp's reference is
    # the one ARM's fp32 kernels come closest to a 1e-5 bound with (1.48e-5, SNR 120 dB: metrics.FP32_PARITY)
    for name in ("gmm2d", "rf-chirp"):
        shipped = arm64.run(arm_env, ["verify", name])
        assert shipped.returncode == 0 and "passed" in shipped.stdout, shipped.stdout + shipped.stderr
    machine = arm64.run(arm_env, ["doctor"])
    assert machine.returncode == 0 and "on aarch64" in machine.stdout and "numpy       1.26" in machine.stdout


@needs_tools
def test_arm64_samples_a_2d_radar_bundle(tmp_path, arm_env, radar_bundle):
    """The 2D U-Net's maps: the same loops, shape-agnostic, on ARM64's numpy and ONNX Runtime."""
    args = ["sample", str(radar_bundle), "--n", "2", "--steps", "10", "--seed", "5", "--quiet"]
    a, b = sample_on_both(tmp_path, arm_env, args)
    assert a.shape == b.shape == (2, 2, 16, 16) and np.median(np.abs(a - b)) <= 1e-4
    check = arm64.run(arm_env, ["verify", str(radar_bundle), "--steps", "5", "--n", "2"])
    assert check.returncode == 0 and "passed" in check.stdout, check.stdout + check.stderr


@needs_tools
def test_arm64_streams_a_recording(tmp_path, arm_env, unet_bundle):
    """The recording path (framing, overlap-add, chunked I/O) with the runtime alone on ARM64."""
    z = (np.random.default_rng(0).standard_normal(1024) * (1 + 1j) * 0.3).astype(np.complex64)
    np.save(tmp_path / "rec.npy", z)
    res = arm64.run(arm_env, ["denoise", str(unet_bundle), "--y", str(tmp_path / "rec.npy"), "--sigma-y", "0.1",
                              "--steps", "2", "--out", str(tmp_path / "out.npy"), "--quiet"])
    assert res.returncode == 0, res.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (1024,) and out.dtype == np.complex64 and np.isfinite(out).all()


@needs_tools
def test_arm64_cli_errors_keep_the_convention(tmp_path, arm_env):
    res = arm64.run(arm_env, ["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "s.npy")])
    assert res.returncode == 2 and "edgediff: error:" in res.stderr and "Traceback" not in res.stderr


@needs_tools
def test_builds_at_once_take_turns_and_build_the_checkout_once(tmp_path, arm_env):
    """Two processes building one cache at once (two test workers, two shells) both succeed: one builds the
    checkout's wheel, the other waits on the cache's lock and finds it built, stamped with the checkout's digest."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, key in (("root", "root"), ("site-deps", "deps")):  # the slow parts, shared with the module's environment
        (cache / name).symlink_to(arm_env[key])
    argv = [sys.executable, "-m", "edgediff.tools.arm64", "--cache", str(cache), "build"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert (cache / "site-edgediff" / ".checkout-sha256").read_text().strip() == arm64.checkout_digest()
    assert (cache / "site-edgediff" / "edgediff" / "__main__.py").is_file()


def test_checkout_digest_follows_the_code_not_the_bytecode(tmp_path, monkeypatch):
    for name in arm64.CHECKOUT:
        path = tmp_path / name
        if "." in name:
            path.write_text(name)
        else:
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "m.py").write_text("x = 1\n")
    monkeypatch.setattr(arm64, "REPO", tmp_path)
    first = arm64.checkout_digest()
    (tmp_path / "runtime" / "sub" / "__pycache__").mkdir()
    (tmp_path / "runtime" / "sub" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert arm64.checkout_digest() == first
    (tmp_path / "runtime" / "sub" / "m.py").write_text("x = 2\n")
    assert arm64.checkout_digest() != first


def test_cache_location_is_ignored_by_git():
    proc = subprocess.run(["git", "check-ignore", "-q", str(arm64.DEFAULT_CACHE)], cwd=arm64.REPO)
    assert proc.returncode == 0 or shutil.which("git") is None


@needs_tools
def test_arm64_samples_an_int8_bundle(tmp_path, arm_env, unet_bundle):
    """The QDQ int8 model on ARM64's ONNX Runtime (correctness here; speed needs the board)."""
    from click.testing import CliRunner

    from edgediff.tools.cli import cli

    bundle = tmp_path / "b"
    shutil.copytree(unet_bundle, bundle)
    res = CliRunner().invoke(cli, ["export", "int8", str(bundle), "--calibration", "32", "--gate-frames", "32"])
    assert res.exit_code == 0, res.output
    arm = arm64.run(arm_env, ["sample", str(bundle), "--precision", "int8", "--n", "2", "--steps", "5", "--quiet",
                              "--out", str(tmp_path / "arm.npy")])
    assert arm.returncode == 0, arm.stderr
    assert np.isfinite(np.load(tmp_path / "arm.npy")).all()
