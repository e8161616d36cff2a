"""A tiny 2D U-Net on radar maps through the CLI: train, export, verify, sample, reconstruct; bad inputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.onnx


def edgediff(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_manifest_holds_the_map_shape_and_verify_passes(radar_bundle):
    manifest = json.loads((radar_bundle / "manifest.json").read_text())
    assert manifest["sample_shape"] == [2, 16, 16]
    res = edgediff("verify", radar_bundle, "--steps", "5", "--n", "2")
    assert res.returncode == 0, res.stderr


def test_sample_and_partial_fourier_reconstruction(tmp_path, radar_bundle):
    res = edgediff("sample", radar_bundle, "--n", "3", "--steps", "5", "--seed", "1", "--out", tmp_path / "maps.npy",
                   "--quiet")
    assert res.returncode == 0, res.stderr
    maps = np.load(tmp_path / "maps.npy")
    assert maps.shape == (3, 2, 16, 16) and np.isfinite(maps).all()
    mask = np.ones((16, 16), dtype=np.float32)
    mask[::2] = 0  # half of the chirps lost
    from edgediff.runtime.inverse.operators import PartialFourier

    op = PartialFourier(mask, (2, 16, 16))
    np.save(tmp_path / "y.npy", op.forward(maps.astype(np.float64)).astype(np.float32))
    np.save(tmp_path / "mask.npy", mask)
    res = edgediff("reconstruct", radar_bundle, "--y", tmp_path / "y.npy", "--operator", "partial-fourier",
                   "--mask", tmp_path / "mask.npy", "--sigma-y", "0", "--steps", "5", "--truth", tmp_path / "maps.npy",
                   "--out", tmp_path / "x.npy", "--quiet")
    assert res.returncode == 0, res.stderr
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (3, 2, 16, 16)
    # DDNM+ keeps what was observed: the kept chirps' data agree with the measurement
    np.testing.assert_allclose(op.forward(x.astype(np.float64)), np.load(tmp_path / "y.npy"), atol=1e-3)


def test_bad_imaging_inputs_get_one_line(tmp_path, radar_bundle, unet_bundle):
    np.save(tmp_path / "y.npy", np.zeros((1, 2, 16, 16), np.float32))
    np.save(tmp_path / "mask_wrong.npy", np.ones((8, 16), np.float32))
    np.save(tmp_path / "mask.npy", np.ones((16, 16), np.float32))
    np.save(tmp_path / "complex.npy", np.zeros((1, 16, 16), np.complex64))
    cases = [
        (radar_bundle, "y.npy", "mask_wrong.npy", "mask"),
        (unet_bundle, "y.npy", "mask.npy", "2D"),
        (radar_bundle, "complex.npy", "mask.npy", "(N, 2, H, W)"),
    ]
    for bundle, y, mask, needle in cases:
        res = edgediff("reconstruct", bundle, "--y", tmp_path / y, "--operator", "partial-fourier", "--sigma-y", "0", "--mask",
                       tmp_path / mask, "--out", tmp_path / "x.npy", "--quiet")
        assert res.returncode == 2, (needle, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "x.npy").exists()


def test_complex_maps_for_training_get_one_line(tmp_path):
    np.save(tmp_path / "maps.npy", np.zeros((16, 16, 16), np.complex64))
    res = edgediff("train", "--data", tmp_path / "maps.npy", "--model", "unet2d", "--steps", "1", "--out", tmp_path / "run")
    assert res.returncode == 2 and "(N, 2, H, W)" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "run").exists()
    np.save(tmp_path / "maps.npy", np.random.default_rng(0).standard_normal((16, 2, 8, 8)).astype(np.float32))
    res = edgediff("train", "--data", tmp_path / "maps.npy", "--steps", "1", "--out", tmp_path / "run")  # unet1d default
    assert res.returncode == 2 and "unet2d" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
