"""Every `edgediff plot` subcommand writes a real, non-empty PNG."""

import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")
import matplotlib.image  # noqa: E402


def edgediff(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_png(path, min_width=300):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    image = matplotlib.image.imread(str(path))
    assert image.shape[1] >= min_width and image.std() > 0.01  # not blank


@pytest.mark.parametrize("args", [["schedule"], ["forward", "--t", "0,100,500,999"],
                                  ["score-field", "--sigma", "0.3", "--sigma", "3"]])
def test_plots_without_a_model(tmp_path, args):
    out = tmp_path / "fig.png"
    res = edgediff("plot", *args, "--out", out)
    assert res.returncode == 0, res.stderr
    assert_png(out)


def test_plots_with_real_bundles_and_runs(tmp_path, unet_bundle, mlp_bundle, unet_run):
    cases = {
        "score.png": ["score-field", "--bundle", mlp_bundle],
        "samples.png": ["samples", "--bundle", unet_bundle, "--n", "8", "--steps", "5"],
        "points.png": ["samples", "--bundle", mlp_bundle, "--n", "200", "--steps", "5"],
        "traj.png": ["trajectory", "--bundle", unet_bundle, "--steps", "20", "--every", "5"],
        "loss.png": ["loss", unet_run],
    }
    for name, args in cases.items():
        res = edgediff("plot", *args, "--out", tmp_path / name)
        assert res.returncode == 0, (name, res.stderr)
        assert_png(tmp_path / name)


def test_plot_from_files(tmp_path, unet_bundle):
    res = edgediff("sample", unet_bundle, "--n", "4", "--steps", "10", "--out", tmp_path / "s.npy",
                   "--tweedie", tmp_path / "t.npz", "--every", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert edgediff("plot", "samples", "--samples", tmp_path / "s.npy", "--dataset", "rf-qpsk",
                    "--out", tmp_path / "a.png").returncode == 0
    assert edgediff("plot", "trajectory", "--tweedie", tmp_path / "t.npz", "--out", tmp_path / "b.png").returncode == 0
    assert_png(tmp_path / "a.png")
    assert_png(tmp_path / "b.png")


def test_plot_errors(tmp_path):
    res = edgediff("plot", "samples", "--out", tmp_path / "x.png")
    assert res.returncode == 2 and "give --samples" in res.stderr
    res = edgediff("plot", "loss", tmp_path, "--out", tmp_path / "x.png")
    assert res.returncode == 2 and "loss.csv: missing" in res.stderr
    res = edgediff("plot", "schedule", "--out", tmp_path / "no" / "x.png")
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not list(tmp_path.glob("*.png"))


def test_the_receivers_view_carries_the_evm_of_the_frames_shown():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgediff.runtime.receivers import blind_receive
    from edgediff.tools.plots import receiver_panel
    from edgediff.train import rf

    z, _ = rf.qpsk_frames_with_truth(64, 256, np.random.default_rng(3), snr_db=(10.0, 10.0))
    want = np.median(blind_receive(z, rf.psk_format(rf.QPSK)).evm_db)
    assert -20.0 < want < -18.0  # 10 dB sample SNR: about -19 dB (8 samples per symbol)
    fig, axes = plt.subplots(1, 3)
    receiver_panel(axes[0], z, "rf-qpsk", "generated")
    assert f"EVM median {want:.1f} dB" in axes[0].get_title() and "(64 QPSK frames)" in axes[0].get_title()
    receiver_panel(axes[1], rf.chirp_frames(8, 256, np.random.default_rng(4)), "rf-chirp", "generated")
    assert "instantaneous frequency" in axes[1].get_title()
    receiver_panel(axes[2], z[:, :32], "rf-qpsk", "generated")  # too short for a receiver: the raw samples, said so
    assert "raw I/Q samples" in axes[2].get_title()
    plt.close(fig)
