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
    plain = [(r, g) for r, g in zip(curve["rows"], grid) if not g[1].startswith("ddnm-")]
    assert [r["nfe"] for r, g in plain] == [g[2] * g[3] for r, g in plain]
    # the walked mean of 8 and its restarted rounds (at 60/50/40/30 of the tiny schedule's T = 100), as
    # `reconstruct --travel --restart` counts their calls
    from edgediff.runtime.backends import load
    from edgediff.runtime.inverse.methods import restart_calls

    walked, restarted = curve["rows"][-2:]
    sched = load(unet_bundle, backend="ort").schedule
    assert walked["travel"] == restarted["travel"] == [10, 4] and restarted["restart"] == [60, 50, 40, 30]
    assert walked["nfe"] == 8 * restart_calls(sched, 100, (10, 4)) == 8 * 460
    assert restarted["nfe"] == 8 * restart_calls(sched, 100, (10, 4), (60, 50, 40, 30))
    assert "walked 10x4, mean of 8, restart 60/50/40/30" in res.stdout
    assert all(np.isfinite(r["nmse_db"]) and r["ms_per_frame"] > 0 for r in curve["rows"])
    assert np.isfinite(curve["lmmse"]["nmse_db"]) and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "dB over LMMSE" in res.stdout


def test_imaging_cases_judge_every_method_by_the_detector(tmp_path, radar_bundle):
    # 10 maps through a bundle exported for batches of up to 8: the diffusion methods run in chunks
    out, png = tmp_path / "img.json", tmp_path / "img.png"
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(radar_bundle), "--frames", "10",
                          "--steps", "4", "--cases", "chirps50,chirpburst25", "--json", str(out), "--plot", str(png)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    cases = report["imaging"][str(radar_bundle)]
    assert set(cases) == {"chirps50", "chirpburst25"}
    lat = report["latency"][str(radar_bundle)]
    assert len(lat["ms_per_nfe"]) == 2 and all(v > 0 for v in lat["ms_per_nfe"].values()) and "2D/1D" in res.stdout
    from edgediff.runtime.inverse.baselines import least_squares
    from edgediff.tools.bench_imaging import ImagingSetup, problem_for

    setup = ImagingSetup(radar_bundle, 10)
    for name, case in cases.items():
        methods = case["methods"]
        assert {"truth", "zero-filled", "LMMSE", "DDNM+ (4 steps)", "DDNM+ (mean of 8 x 2)"} <= set(methods)
        assert case["lambda"] in case["lambda_grid"] and min(case["lambda_nmse_db"]) == case["lambda_nmse_db"][
            case["lambda_grid"].index(case["lambda"])]  # l1's weight: the best on the tuning maps
        background = 10 * 16 * 16
        for m in methods.values():  # each detector set to the stated false-alarm rate on its own background
            assert m["pfa_matched"] <= case["pfa"] + 1 / (background / 2)
            assert len(m["pd_matched"]) == 5 and 0 <= m["pd_matched_all"] <= 1
        # the zero-filled row, recomputed here from the same held-out maps and the same lost chirps
        rng = np.random.default_rng([sum(map(ord, "radar-rd")), sum(map(ord, name))])
        problem_for(name, setup.tuning, rng)  # the tuning maps' masks come first
        x = least_squares(problem_for(name, setup.truth, rng))
        nmse = 10 * np.log10(np.sum((x - setup.truth) ** 2) / np.sum(setup.truth**2))
        assert methods["zero-filled"]["nmse_db"] == pytest.approx(nmse, abs=1e-9)
        for m in methods.values():  # the error above the lost chirps' noise: what is left once it is taken off
            if "nmse_db" in m and 10 ** (m["nmse_db"] / 10) > 10 ** (case["lost_noise_floor_db"] / 10):
                assert 10 ** (m["above_floor_db"] / 10) == pytest.approx(
                    10 ** (m["nmse_db"] / 10) - 10 ** (case["lost_noise_floor_db"] / 10), rel=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NMSE over" in res.stdout and "fixed-CFAR" in res.stdout


def test_the_case_table_walked_rows_are_the_nfe_curves_from_one_run_a_frame(unet_bundle):
    """`--walked`: the walked mean of 8 and its restarted rounds join the case table from one reconstruct() a frame
    (its first round and its last), the same estimates and calls as the cost axis's two rows, and its walked mean that
    of a walked run without rounds (the cost axis's grid with the walked row alone)."""
    from edgediff.runtime.inverse.methods import restart_calls
    from edgediff.tools.bench_reconstruct import NFE_GRID, Setup, nfe_curve, run_case

    setup = Setup(unet_bundle, 2, exact_dps=False)
    methods = run_case(setup, "miss75", 100, walked=True)["methods"]
    walked, restarted = methods["DDNM+ walked 10x4 (mean of 8 x 100)"], methods["DDNM+ walked, restarted at 60/50/40/30"]
    assert walked["kind"] == restarted["kind"] == "diffusion" and walked["nmse_db"] != restarted["nmse_db"]
    sched = setup.denoiser.schedule
    assert walked["nfe"] == 8 * restart_calls(sched, 100, (10, 4))
    assert restarted["nfe"] == 8 * restart_calls(sched, 100, (10, 4), (60, 50, 40, 30))
    assert 0 < walked["ms_per_frame"] < restarted["ms_per_frame"]
    curve = nfe_curve(unet_bundle, 2, "miss75", grid=NFE_GRID[-2:])["rows"]
    for row, separate in zip((walked, restarted), curve):
        assert row["nmse_db"] == pytest.approx(separate["nmse_db"], abs=1e-9) and row["nfe"] == separate["nfe"]
        assert row.get("ser") == separate.get("ser")  # the tiny bundle's frames are too short for symbols
    alone = nfe_curve(unet_bundle, 2, "miss75", grid=NFE_GRID[-2:-1])["rows"][0]
    assert alone["nmse_db"] == pytest.approx(walked["nmse_db"], abs=1e-9) and alone["nfe"] == walked["nfe"]
    assert "restart" not in alone and alone["ms_per_frame"] > 0
    plain = run_case(setup, "miss75", 100)["methods"]
    assert set(methods) - set(plain) == {"DDNM+ walked 10x4 (mean of 8 x 100)", "DDNM+ walked, restarted at 60/50/40/30"}
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(unet_bundle), "--walked", "--nfe-curve"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "has them already" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [(["--cases", "miss50"], "chirps"), (["--nfe-curve"], "on their own"),
                                          (["--walked"], "on their own")])
def test_imaging_refusals(radar_bundle, unet_bundle, args, needle):
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(radar_bundle), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench-reconstruct", str(unet_bundle), "--cases", "chirps50"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "need a radar-rd bundle" in res.stderr


def test_snr_where_l1_detects_half_and_the_pd_there():
    from edgediff.tools.bench_imaging import pd_at, snr_at

    pd = [0.0, 0.25, 0.75, 1.0, 1.0]  # bin centres 7.5, 12.5, 17.5, 22.5, 30 dB
    assert snr_at(pd, 0.5) == pytest.approx(15.0)
    assert snr_at([0.6, 0.7, 0.8, 0.9, 1.0], 0.5) == pytest.approx(7.5) and snr_at([0.1] * 5, 0.5) is None
    assert pd_at(pd, 15.0) == pytest.approx(0.5) and pd_at(pd, 26.25) == pytest.approx(1.0)
