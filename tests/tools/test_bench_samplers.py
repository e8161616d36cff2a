"""`edgediff bench-samplers` on the shipped gmm2d prior, and the solvers through `edgediff sample`."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.onnx


def edgediff(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bench_samplers_gmm2d(tmp_path):
    res = edgediff("bench-samplers", "gmm2d", "--n", "1500", "--no-timing", "--json", tmp_path / "q.json",
                   "--plot", tmp_path / "q.png", "--also", "ddpm:200")
    assert res.returncode == 0, res.stderr
    rows = {(r["sampler"], r["nfe"]): r for r in json.loads((tmp_path / "q.json").read_text())["bundles"][0]["rows"]}
    assert set(rows) == {("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp2m", 5), ("dpmpp2m", 10), ("dpmpp2m", 20),
                         ("sde-dpmpp2m", 10), ("sde-dpmpp2m", 20), ("unipc", 5), ("unipc", 10), ("unipc", 20),
                         ("ddpm", 200)}  # the grid, and the row asked for beyond it
    # the issue's yardstick: DPM-Solver++ at 10 NFE within 0.02 of DDIM-50's mode shares
    assert rows[("dpmpp2m", 10)]["share_diff_vs_ddim50"] <= 0.02 + 3 * np.sqrt(0.25 / 1500)
    assert rows[("ddim", 50)]["max_share_error"] < 0.03
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert rows[("ddpm", 200)]["max_share_error"] < 0.03
    bad = edgediff("bench-samplers", "gmm2d", "--also", "ddim:many", "--json", tmp_path / "r.json")
    assert bad.returncode == 2 and "SAMPLER:NFE" in bad.stderr and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("sampler", ["dpmpp2m", "sde-dpmpp2m", "unipc"])
def test_sample_with_a_solver(tmp_path, sampler):
    res = edgediff("sample", "gmm2d", "--n", "8", "--sampler", sampler, "--steps", "6", "--out", tmp_path / "x.npy", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "6 NFE each" in res.stdout and np.isfinite(np.load(tmp_path / "x.npy")).all()
    bad = edgediff("sample", "gmm2d", "--n", "8", "--sampler", "heun", "--out", tmp_path / "y.npy")
    assert bad.returncode == 2 and "heun" in bad.stderr and not (tmp_path / "y.npy").exists()


def test_a_bundle_with_its_own_grid_is_measured_on_it_and_on_the_uniform_one_beside_it(tmp_path, monkeypatch):
    import shutil

    from edgediff.export.manifest import set_sampling
    from edgediff.runtime import grids, load
    from edgediff.runtime.bundle import SHIPPED_DIR
    from edgediff.tools.bench_samplers import describe, quality

    copy = tmp_path / "gmm2d"
    shutil.copytree(SHIPPED_DIR / "gmm2d", copy)
    set_sampling(copy, grids.record("999-500:2,500-0:8", 1000))
    report = quality(load(copy, backend="ort"), 400, grid=(("ddim", 10), ("dpmpp2m", 5)), timing=False)
    rows = [(r["sampler"], r["nfe"], r.get("grid")) for r in report["rows"]]
    assert rows == [("ddim", 10, "own"), ("ddim", 10, "trailing"), ("dpmpp2m", 5, None)]
    own, uniform = report["rows"][0]["mode_shares"], report["rows"][1]["mode_shares"]
    assert own != uniform  # two grids, two sets of samples from the same draws
    lines = describe(report)
    assert "ddim-10  (own grid)" in lines[1] and "ddim-10  (trailing)" in lines[2]

    # the picture: the sampler's line runs on the uniform grid, the own grid is a point of its own
    from edgediff.tools import plot_curves

    drawn = {}
    real_save = plot_curves.save

    def keep_and_save(fig, out):
        drawn["fig"] = fig
        return real_save(fig, out)

    monkeypatch.setattr(plot_curves, "save", keep_and_save)
    png = plot_curves.quality_vs_nfe([report], tmp_path / "q.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    by_label = {line.get_label(): line for line in drawn["fig"].axes[0].lines}
    uniform_share_error = report["rows"][1]["max_share_error"]
    assert list(by_label["ddim"].get_ydata()) == [uniform_share_error]
    assert by_label["ddim, its own grid"].get_marker() == "D"
    assert list(by_label["ddim, its own grid"].get_ydata()) == [report["rows"][0]["max_share_error"]]


def test_a_bundle_whose_grid_names_a_solver_is_measured_with_it_first(tmp_path):
    import shutil

    from edgediff.export.manifest import set_sampling
    from edgediff.runtime import grids, load
    from edgediff.runtime.bundle import SHIPPED_DIR
    from edgediff.tools.bench_samplers import describe, quality

    copy = tmp_path / "gmm2d"
    shutil.copytree(SHIPPED_DIR / "gmm2d", copy)
    set_sampling(copy, grids.record("999-500:2,500-0:6", 1000, "", "sde-dpmpp2m"))
    report = quality(load(copy, backend="ort"), 400, grid=(("ddim", 10), ("sde-dpmpp2m", 5)), timing=False)
    rows = [(r["sampler"], r["nfe"], r.get("grid")) for r in report["rows"]]
    assert rows == [("sde-dpmpp2m", 8, "own"), ("ddim", 10, None), ("sde-dpmpp2m", 5, "trailing")]
    assert "sde-dpmpp2m-8   (own grid)" in describe(report)[1]
    report = quality(load(copy, backend="ort"), 400, grid=(("ddim", 10), ("sde-dpmpp2m", 8)), timing=False)
    rows = [(r["sampler"], r["nfe"], r.get("grid")) for r in report["rows"]]  # asked for: the grid, then uniform
    assert rows == [("ddim", 10, None), ("sde-dpmpp2m", 8, "own"), ("sde-dpmpp2m", 8, "trailing")]
    assert report["rows"][1]["mode_shares"] != report["rows"][2]["mode_shares"]
