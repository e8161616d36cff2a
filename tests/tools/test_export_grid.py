"""`edgediff export grid`: a bundle's own DDIM grid, set and cleared through the CLI, used by `sample`
and `evaluate` by default and left by --spacing; bad grids are one line, and the manifest stays."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgediff.runtime import load  # noqa: E402
from edgediff.runtime.bundle import Bundle  # noqa: E402
from edgediff.runtime.errors import BundleError  # noqa: E402
from edgediff.runtime.sampling import sample  # noqa: E402

pytestmark = pytest.mark.onnx
SPEC = "99-60:4,60-0:6"


def edgediff(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def bundle(tmp_path, unet_bundle):
    copy = tmp_path / "b"
    shutil.copytree(unet_bundle, copy)
    return copy


def test_the_grid_is_set_used_by_default_left_by_spacing_and_cleared(tmp_path, bundle, unet_bundle):
    model_hash = Bundle.open(bundle).manifest["files"]["model.onnx"]["sha256"]
    res = edgediff("export", "grid", bundle, "--grid", SPEC, "--why", "a test")
    assert res.returncode == 0, res.stderr
    assert "DDIM-10 runs on t = 99, 89, 80, 70, 60, 50, 40, 30, 20, 10" in res.stdout
    m = Bundle.open(bundle).manifest  # still verifies: only the manifest changed
    assert m["sampling"]["timesteps"] == [99, 89, 80, 70, 60, 50, 40, 30, 20, 10] and m["sampling"]["why"] == "a test"
    assert m["files"]["model.onnx"]["sha256"] == model_hash

    own, uniform, before = tmp_path / "own.npy", tmp_path / "uniform.npy", tmp_path / "before.npy"
    assert edgediff("sample", bundle, "--n", "4", "--steps", "10", "--out", own, "--quiet").returncode == 0
    assert edgediff("sample", bundle, "--n", "4", "--steps", "10", "--spacing", "trailing", "--out", uniform,
                    "--quiet").returncode == 0
    assert edgediff("sample", unet_bundle, "--n", "4", "--steps", "10", "--out", before, "--quiet").returncode == 0
    np.testing.assert_array_equal(np.load(uniform), np.load(before))  # --spacing: the uniform grid, as before
    d = load(bundle, backend="ort")
    x = sample(d, d.schedule, (4, *d.sample_shape), method="ddim", steps=10, eta=1.0, grid=m["sampling"]["timesteps"],
               rng=np.random.default_rng([0, 0])).x
    np.testing.assert_allclose(np.load(own), d.normalisation.to_user(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.load(own), np.load(uniform))

    res = edgediff("evaluate", bundle, "--n", "16", "--steps", "10", "--no-evm", "--json", tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    assert "DDIM-10 on the bundle's own grid (99-60:4,60-0:6" in res.stdout
    assert json.loads((tmp_path / "e.json").read_text())["sampler"]["grid"] == "the bundle's own grid"

    assert edgediff("export", "grid", bundle, "--clear").returncode == 0
    assert "sampling" not in Bundle.open(bundle).manifest


@pytest.mark.parametrize("args, words", [
    (("--grid", "99-60:4,50-0:6"), "does not start where"),
    (("--grid", "120-0:5"), "out of range"),
    ((), "give either --grid SPEC or --clear"),
    (("--grid", SPEC, "--clear"), "give either --grid SPEC or --clear"),
])
def test_a_bad_grid_is_one_line_and_the_manifest_stays(bundle, args, words):
    before = (bundle / "manifest.json").read_bytes()
    res = edgediff("export", "grid", bundle, *args)
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (bundle / "manifest.json").read_bytes() == before


def test_a_manifest_with_a_broken_grid_is_refused_by_name(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["sampling"] = {"steps": 2, "timesteps": [10, 50]}
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="sampling .* expected steps and as many decreasing"):
        Bundle.open(bundle)
    res = edgediff("sample", bundle, "--n", "2", "--out", bundle.parent / "x.npy")
    assert res.returncode == 2 and "export grid" in res.stderr and not (bundle.parent / "x.npy").exists()


def test_a_grid_for_a_solver_makes_it_the_bundles_default_sampler(tmp_path, bundle):
    """`export grid --sampler sde-dpmpp2m`: `sample` and `evaluate` without --sampler run the SDE solver
    on the grid; --sampler ddim runs DDIM on its uniform steps, as on a bundle without a grid."""
    res = edgediff("export", "grid", bundle, "--grid", SPEC, "--sampler", "sde-dpmpp2m")
    assert res.returncode == 0, res.stderr
    assert "sde-dpmpp2m (the bundle's default sampler now)-10 runs on t = 99, 89" in res.stdout
    assert Bundle.open(bundle).manifest["sampling"]["method"] == "sde-dpmpp2m"
    res = edgediff("sample", bundle, "--n", 3, "--out", tmp_path / "s.npy", "--tweedie", tmp_path / "t.npz",
                   "--every", 1, "--quiet")
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "t.npz")["t"].tolist() == [99, 89, 80, 70, 60, 50, 40, 30, 20, 10]
    d = load(bundle, backend="ort")
    x = sample(d, d.schedule, (3, *d.sample_shape), method="sde-dpmpp2m", steps=10, grid=d.sampling["timesteps"],
               rng=np.random.default_rng([0, 0])).x
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), d.normalisation.to_user(x), rtol=1e-5, atol=1e-6)
    res = edgediff("sample", bundle, "--n", 3, "--format", "sigmf", "--out", tmp_path / "g", "--quiet")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "g.sigmf-meta").read_text())
    assert " sde-dpmpp2m-10 grid=bundle " in meta["annotations"][0]["core:generator"]

    res = edgediff("sample", bundle, "--n", 3, "--sampler", "ddim", "--tweedie", tmp_path / "d.npz", "--every", 1,
                   "--out", tmp_path / "d.npy", "--quiet")
    assert res.returncode == 0, res.stderr
    assert len(np.load(tmp_path / "d.npz")["t"]) == 50  # DDIM's default 50 steps, uniform: the grid is the solver's
    res = edgediff("evaluate", bundle, "--n", "16", "--no-evm", "--json", tmp_path / "e.json")
    assert res.returncode == 0, res.stderr
    assert "sde-dpmpp2m-10 on the bundle's own grid (99-60:4,60-0:6" in res.stdout
    report = json.loads((tmp_path / "e.json").read_text())["sampler"]
    assert report["method"] == "sde-dpmpp2m" and report["steps"] == 10 and report["grid"] == "the bundle's own grid"
