"""`edgediff bench-reconstruct` runs every method and baseline on held-out frames and reports NMSE."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_bench_reconstruct_small_run(tmp_path, unet_bundle):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(unet_bundle), "--frames", "2",
                          "--steps", "8", "--cases", "miss50,burst25,denoise10,decimate2", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    cases = report["datasets"]["rf-qpsk"]
    assert set(cases) == {"miss50", "burst25", "denoise10", "decimate2"}
    for case in cases.values():
        methods = case["methods"]
        assert {"DDNM+ (8 steps)", "DiffPIR (8 steps)", "LMMSE / Wiener", "least squares A^+ y"} <= set(methods)
        assert all(m["nfe"] <= (4 * 8 if "mean of 4" in name else 8) for name, m in methods.items())
        assert methods["DDNM+ (mean of 4 x 8)"]["nfe"] == 32  # the posterior mean: 4 samples of 8 steps
        assert case["best_classical_db"] <= case["best_listed_db"]
        assert case["gain_vs_all_classical_db"] == pytest.approx(case["best_classical_db"] - case["best_diffusion_db"])
    assert "linear interpolation" in cases["miss50"]["methods"] and "linear interpolation" not in cases["denoise10"]["methods"]
    assert cases["denoise10"]["methods"]["LMMSE / Wiener"]["kind"] == "listed"
    assert "gain" in res.stdout and "NFE" in res.stdout


def test_bench_reconstruct_refuses_other_bundles(mlp_bundle):
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(mlp_bundle)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "built-in RF dataset" in res.stderr


def test_the_nfe_curve_has_every_budget_and_lmmse(tmp_path, unet_bundle):
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(unet_bundle), "--nfe-curve", "--frames",
                          "1", "--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    curve = json.loads((tmp_path / "c.json").read_text())["curves"][0]
    from edgediff.tools.bench_reconstruct import NFE_GRID

    grid = [g for g in NFE_GRID if g[2] <= 100]  # the tiny bundle's schedule has T = 100
    assert curve["case"].startswith("75 %") and len(curve["rows"]) == len(grid) and curve["skipped_beyond_T"]
    assert [r["nfe"] for r in curve["rows"]] == [steps * k for _, _, steps, k in grid]
    assert all(np.isfinite(r["nmse_db"]) and r["ms_per_frame"] > 0 for r in curve["rows"])
    assert np.isfinite(curve["lmmse"]["nmse_db"]) and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "dB over LMMSE" in res.stdout
