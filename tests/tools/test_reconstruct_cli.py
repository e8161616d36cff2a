"""`edgediff reconstruct` end to end on a real bundle, and its bad inputs."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgediff.runtime.bundle import Bundle  # noqa: E402


def edgediff(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def measured(tmp_path, unet_bundle):
    rng = np.random.default_rng(0)
    scale = Bundle.open(unet_bundle).normalisation.scale
    truth = (rng.standard_normal((3, 2, 32)) * scale).astype(np.float32)
    mask = (rng.random(32) < 0.5).astype(np.float32)
    np.save(tmp_path / "truth.npy", truth)
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "y.npy", (truth * mask).astype(np.float32))
    return tmp_path


def test_reconstruct_mask_keeps_observed_samples(measured, unet_bundle):
    out = measured / "x.npy"
    res = edgediff("reconstruct", unet_bundle, "--y", measured / "y.npy", "--operator", "mask", "--mask",
                   measured / "mask.npy", "--sigma-y", "0", "--steps", "20", "--out", out, "--truth",
                   measured / "truth.npy", "--plot", measured / "fig.png")
    assert res.returncode == 0, res.stderr
    assert "3 frames, 20 NFE each" in res.stdout and "NMSE" in res.stdout and "ms/frame" in res.stdout
    x = np.load(out)
    y = np.load(measured / "y.npy")
    mask = np.load(measured / "mask.npy")
    assert x.shape == (3, 2, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x * mask, y, atol=1e-5 * np.abs(y).max())  # sigma_y = 0: observed samples kept
    assert (measured / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_reconstruct_decimate_and_dps(measured, unet_bundle):
    truth = np.load(measured / "truth.npy")
    from edgediff.runtime.inverse.operators import Decimate

    np.save(measured / "yd.npy", Decimate(2, (2, 32)).forward(truth.astype(np.float64)).astype(np.float32))
    for extra in (["--method", "ddnm"], ["--method", "dps", "--dps-approx"], ["--method", "dps", "--backend", "torch"]):
        res = edgediff("reconstruct", unet_bundle, "--y", measured / "yd.npy", "--operator", "decimate", "--factor", "2",
                       "--sigma-y", "0.01", "--steps", "10", "--out", measured / "xd.npy", "--quiet", *extra)
        if "torch" in extra and "needs torch" in res.stderr:
            continue
        assert res.returncode == 0, (extra, res.stderr)
        assert np.load(measured / "xd.npy").shape == (3, 2, 32)
    assert "20 NFE-equivalents" in res.stdout  # exact DPS: a backward pass per step


@pytest.mark.parametrize(
    "args, match",
    [
        (["--operator", "mask", "--mask", "{d}/zeros.npy"], "observes no sample"),
        (["--operator", "mask", "--mask", "{d}/mask.npy", "--sigma-y", "-1"], "--sigma-y -1"),
        (["--operator", "mask", "--mask", "{d}/short.npy"], "mask has shape"),
        (["--operator", "decimate", "--factor", "2"], "expects (2, 16)"),
        (["--operator", "identity", "--y", "{d}/nan.npy"], "NaN or Inf"),
        (["--operator", "matrix", "--matrix", "{d}/mat.npy"], "expected (M, 64)"),
        (["--operator", "mask"], "needs --mask"),
        (["--operator", "mask", "--mask", "{d}/missing.npy"], "no such file"),
        (["--operator", "identity", "--out", "{d}/nope/x.npy"], "does not exist"),
    ],
)
def test_bad_inputs_one_line_exit_2_nothing_written(measured, unet_bundle, args, match):
    d = measured
    np.save(d / "zeros.npy", np.zeros(32))
    np.save(d / "short.npy", np.ones(8))
    np.save(d / "nan.npy", np.full((1, 2, 32), np.nan, np.float32))
    np.save(d / "mat.npy", np.ones((5, 7)))
    argv = [a.format(d=d) for a in args]
    if "--y" not in argv:
        argv += ["--y", str(d / "y.npy")]
    if "--sigma-y" not in argv:
        argv += ["--sigma-y", "0.1"]
    if "--out" not in argv:
        argv += ["--out", str(d / "x.npy")]
    res = edgediff("reconstruct", unet_bundle, *argv, "--steps", "5")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and match in res.stderr and "Traceback" not in res.stderr
    assert not (d / "x.npy").exists()
