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
                       "--sigma-y", "0.01", "--steps", "10", "--out", measured / "xd.npy", "--quiet", "--force", *extra)
        if "torch" in extra and "needs torch" in res.stderr:
            continue
        assert res.returncode == 0, (extra, res.stderr)
        assert np.load(measured / "xd.npy").shape == (3, 2, 32)
    assert "20 NFE-equivalents" in res.stdout  # exact DPS: a backward pass per step


@pytest.mark.parametrize(
    "args, match",
    [
        (["--operator", "mask", "--mask", "{d}/zeros.npy"], "observes no sample"),
        (["--operator", "mask", "--mask", "{d}/mask.npy", "--sigma-y", "-1"], "Invalid value for '--sigma-y'"),
        (["--operator", "mask", "--mask", "{d}/short.npy"], "mask has shape"),
        (["--operator", "decimate", "--factor", "2"], "expects (2, 16)"),
        (["--operator", "identity", "--y", "{d}/nan.npy"], "NaN or Inf"),
        (["--operator", "matrix", "--matrix", "{d}/mat.npy"], "expected (M, 64)"),
        (["--operator", "mask"], "needs --mask"),
        (["--operator", "mask", "--mask", "{d}/missing.npy"], "no such file"),
        (["--operator", "identity", "--out", "{d}/nope/x.npy"], "does not exist"),
        (["--operator", "identity", "--method", "diffpir", "--restart", "50"], "--travel and --restart apply to --method ddnm"),
        (["--operator", "identity", "--init", "lmmse"], "--init lmmse is where --restart's rounds begin"),
        (["--operator", "identity", "--restart", "50,100"], "--restart 100: expected a timestep in 1..99"),
        (["--operator", "identity", "--travel", "4:1", "--restart", "60"], "no more than --travel's blocks of 4"),
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


def test_samples_k_is_the_mean_of_k_seeded_runs_and_masks_may_differ_per_frame(measured, unet_bundle):
    rng = np.random.default_rng(1)
    truth = np.load(measured / "truth.npy")
    masks = (rng.random((3, 2, 32)) < 0.5).astype(np.float32)
    masks[:, 1] = masks[:, 0]
    np.save(measured / "masks.npy", masks)
    np.save(measured / "yk.npy", truth * masks)
    common = ["--y", measured / "yk.npy", "--operator", "mask", "--mask", measured / "masks.npy", "--sigma-y", "0",
              "--steps", "8", "--quiet"]
    res = edgediff("reconstruct", unet_bundle, *common, "--samples", "3", "--seed", "5", "--out", measured / "mean.npy")
    assert res.returncode == 0, res.stderr
    assert "mean of 3 posterior samples, 24 NFE each" in res.stdout
    singles = []
    for seed in (5, 6, 7):
        assert edgediff("reconstruct", unet_bundle, *common, "--seed", seed, "--out", measured / f"s{seed}.npy").returncode == 0
        singles.append(np.load(measured / f"s{seed}.npy").astype(np.float64))
        np.testing.assert_allclose(singles[-1] * masks, truth * masks, atol=1e-5 * np.abs(truth).max())  # per-frame masks kept
    np.testing.assert_allclose(np.load(measured / "mean.npy"), np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    np.save(measured / "y2.npy", np.load(measured / "yk.npy")[:2])
    res = edgediff("reconstruct", unet_bundle, "--operator", "mask", "--mask", measured / "masks.npy", "--sigma-y", "0.01",
                   "--y", measured / "y2.npy", "--out", measured / "bad.npy")
    assert res.returncode == 2 and "3 per-frame masks for 2 measured frames" in res.stderr
    assert not (measured / "bad.npy").exists()


def test_time_travel_and_restarts_counted_and_the_observed_samples_kept(measured, unet_bundle):
    """--travel walks DDNM+'s steps again, --restart adds a round per timestep begun from the mean so far, and
    --init lmmse begins the rounds at LMMSE (the bundle's stats.npz) with no first passes: each in the line and
    its NFE, and with sigma_y = 0 every estimate keeps the observed samples."""
    y, mask = np.load(measured / "y.npy"), np.load(measured / "mask.npy")
    common = ["--y", measured / "y.npy", "--operator", "mask", "--mask", measured / "mask.npy", "--sigma-y", "0",
              "--steps", "8", "--samples", "2", "--quiet"]
    for i, (extra, said) in enumerate(((["--travel", "2:1", "--restart", "70,50"], "walked 2:1, restarted at 70/50, 58 NFE each"),
                        (["--restart", "50", "--init", "lmmse"], "restarted at 50 from LMMSE, 8 NFE each"))):
        out = measured / f"r{i}.npy"
        res = edgediff("reconstruct", unet_bundle, *common, *extra, "--out", out)
        assert res.returncode == 0, res.stderr
        # T = 100, 8 steps at t = 99, 87, ..., 11: 2 x (14 walked + 9 below 70 + 6 below 50); 2 x 4 below 50
        assert f"3 frames, mean of 2 posterior samples, {said}" in res.stdout
        np.testing.assert_allclose(np.load(out) * mask, y, atol=1e-5 * np.abs(y).max())


def test_per_frame_masks_in_the_library(unet_bundle):
    from edgediff.runtime import load
    from edgediff.runtime.inverse import reconstruct
    from edgediff.runtime.inverse.operators import Mask

    d = load(unet_bundle, backend="ort")
    rng = np.random.default_rng(2)
    masks = (rng.random((20, 2, 32)) < 0.5).astype(float)  # more frames than the engine's batch of 16
    x = rng.standard_normal((20, 2, 32))
    est, res = reconstruct(d, x * masks, Mask(masks, (2, 32)), 0.0, steps=4)
    np.testing.assert_allclose(est * masks, x * masks, atol=1e-5)
    assert res.nfe == 4


def test_side_outputs_come_first_and_the_reconstruction_is_written_once(tmp_path, unet_bundle, monkeypatch):
    """The plot, then the reconstruction, each once; a failing plot leaves no reconstruction behind."""
    from click.testing import CliRunner

    from edgediff.runtime import atomic
    from edgediff.tools import plots
    from edgediff.tools.cli import cli

    y = np.random.default_rng(0).standard_normal((2, 2, 32)).astype(np.float32)
    np.save(tmp_path / "y.npy", y)
    calls = []
    real_save, real_plot = atomic.save_npy, plots.reconstruction_figure
    monkeypatch.setattr(atomic, "save_npy", lambda path, a: calls.append(("save", path.name)) or real_save(path, a))
    monkeypatch.setattr(plots, "reconstruction_figure", lambda *a, **k: calls.append(("plot", a[3].name)) or real_plot(*a, **k))
    args = ["reconstruct", str(unet_bundle), "--y", str(tmp_path / "y.npy"), "--operator", "identity", "--sigma-y", "0.1",
            "--steps", "2", "--out", str(tmp_path / "x.npy"), "--plot", str(tmp_path / "x.png"), "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert calls == [("plot", "x.png"), ("save", "x.npy")]

    def broken(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "y.png"))

    monkeypatch.setattr(plots, "reconstruction_figure", broken)
    res = CliRunner().invoke(cli, [*args[:-5], "--out", str(tmp_path / "y2.npy"), "--plot", str(tmp_path / "y.png"), "--quiet"])
    assert res.exit_code == 2 and not (tmp_path / "y2.npy").exists()
