"""`edgediff evaluate` and `edgediff plot constellation` on the shipped priors, and their bad inputs."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.onnx


def edgediff(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_evaluate_reports_evm_for_qpsk(tmp_path):
    out = tmp_path / "r.json"
    res = edgediff("evaluate", "rf-qpsk", "--n", "32", "--steps", "20", "--json", out, "--quiet")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["frames"] == {"generated": 32, "held_out": 32} and report["sampler"]["steps"] == 20
    held, gen = report["held_out"]["evm"], report["generated"]["evm"]
    assert held["median_db"] < -30 and held["share_below_15db"] > 0.9  # the data itself
    assert gen["median_db"] < -10  # a prior that knows the symbols (white noise gives about -5 dB)
    assert "blind EVM median" in res.stdout and np.isfinite(report["psd_lsd_db"])
    assert report["bundle"] == "rf-qpsk"  # a shipped prior by its name, not this checkout's path


def test_evaluate_places_the_solvers_steps_on_a_given_grid(tmp_path):
    out = tmp_path / "r.json"
    spec = "999-400:3,400-100:3,100-0:3"
    res = edgediff("evaluate", "rf-qpsk", "--n", "16", "--sampler", "sde-dpmpp2m", "--grid", spec, "--json", out, "--quiet")
    assert res.returncode == 0, res.stderr
    sampler = json.loads(out.read_text())["sampler"]
    assert sampler["method"] == "sde-dpmpp2m" and sampler["steps"] == 9 and sampler["grid"] == spec
    assert f"sde-dpmpp2m-9 on the given grid ({spec})" in res.stdout


def test_the_denoise_curve_and_the_error_split(tmp_path):
    out = tmp_path / "r.json"
    res = edgediff("evaluate", "rf-qpsk", "--n", "32", "--steps", "4", "--denoise-curve", "--json", out, "--quiet")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = report["denoise_curve"]
    assert [r["t"] for r in rows] == [10, 50, 100, 200, 300, 400, 500, 600]
    noisy = [r["input_evm_db"] for r in rows]
    assert noisy == sorted(noisy) and noisy[0] < -30 and noisy[-1] > -10  # more noise, worse input
    # the shipped prior restores held-out frames near the data's EVM up to about 10 dB SNR
    assert all(r["denoised_evm_db"] < -28 and r["denoised_evm_db"] < r["input_evm_db"] for r in rows if 100 <= r["t"] <= 200)
    by_t = {r["t"]: r["resampled_evm_db"] for r in rows}  # sampled down from each level
    assert by_t[10] < -30 and by_t[100] < -28 and by_t[600] > by_t[100] + 3  # the higher the start, the more lost
    held = report["held_out"]["evm"]["split"]
    assert abs(10 * np.log10(10 ** (held["phase_db"] / 10) + 10 ** (held["amplitude_db"] / 10))
               - report["held_out"]["evm"]["median_db"]) < 3  # the parts add up to about the EVM
    assert "resampled EVM" in res.stdout and "phase wander" in res.stdout


@pytest.mark.slow
def test_the_chirp_flow_of_the_mixed_prior(tmp_path):
    out = tmp_path / "r.json"
    # two of the seven default levels (--flow-t): the flow's rows are most of this test's time
    res = edgediff("evaluate", "rf-mix", "--n", "48", "--steps", "4", "--denoise-curve", "--flow-t", "999",
                   "--flow-t", "500", "--json", out, "--quiet")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = {r["t"]: r for r in report["chirp_flow"]}
    assert list(rows) == [500, 999]
    held = report["held_out"]["chirp_share"]
    assert 0.3 < held < 0.7  # half chirps, half QPSK
    # from 0 dB SNR the shipped prior keeps the frames' kind; from pure noise (SNR -86 dB) nothing of a frame is
    # left, so a chirp and a QPSK frame become chirps alike: whatever the share, which is the network's (0.2
    # against the data's 0.5 with stage 3: a figure for evaluate, not a bound here, or a better stage fails it)
    assert rows[500]["chirps_kept"] > 0.9 and rows[500]["others_to_chirps"] < 0.1 and abs(rows[500]["chirp_share"] - held) < 0.1
    assert abs(rows[999]["chirps_kept"] - rows[999]["others_to_chirps"]) < 0.4  # about 3 sd of 48 frames' difference
    assert rows[500]["chirps_kept"] - rows[500]["others_to_chirps"] > rows[999]["chirps_kept"] - rows[999]["others_to_chirps"] + 0.4
    assert all(0 <= r["chirp_share"] <= 1 for r in rows.values()) and "QPSK -> chirp" in res.stdout


@pytest.mark.slow
def test_the_pulses_of_the_chirp_prior_and_the_floor(tmp_path):
    out = tmp_path / "r.json"
    res = edgediff("evaluate", "rf-chirp", "--n", "32", "--steps", "4", "--denoise-curve", "--flow-t", "500",
                   "--flow-t", "999", "--json", out, "--quiet")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    held = report["held_out"]["pulse_duty_median"]
    assert 0.6 < held < 0.9  # pulses of 50 to 100 % of the frame
    assert 0 < report["generated"]["pulse_duty_median"] <= 1 and "pulse on for" in res.stdout
    # 32 more held-out frames against the 32: the data's own distances, which move with the draw (the held-out
    # frames follow the bundle's seed: envelope W1 0.051 at stage 4's, under 0.05 at stage 3's), and stay well
    # under the distance of the prior's short pulses
    floor = report["floor"]
    assert floor["frames"] == 32 and floor["envelope_w1"] < 0.1 and np.isfinite(floor["psd_lsd_db"])
    assert floor["envelope_w1"] < report["envelope_w1"] / 2
    rows = {r["t"]: r for r in report["duty_flow"]}
    assert list(rows) == [500, 999]
    # from 0 dB SNR the shipped prior keeps each pulse's length; from pure noise (SNR -86 dB) nothing of a frame
    # is left, so its new length owes nothing to its own, whatever the prior (the shipped one makes them short:
    # a figure for evaluate, not a bound here, or a better stage fails it)
    assert abs(rows[500]["duty_change_mean"]) < 0.03 and abs(rows[500]["pulse_duty_median"] - held) < 0.05
    assert rows[500]["duty_correlation"] > 0.8 and abs(rows[999]["duty_correlation"]) < 0.5  # about 2.8 sd of 32 frames
    assert rows[500]["duty_correlation"] > rows[999]["duty_correlation"] + 0.4
    assert "mean change per frame" in res.stdout and "correlation with its own" in res.stdout


def test_a_stage_is_judged_on_the_held_out_frames_of_the_prior_it_would_replace(tmp_path):
    """--held-out-seed draws the held-out frames at another data seed (the shipped prior's, for a stage that
    trained at its own): the bundle's own seed gives the default's frames, another seed other frames."""
    from edgediff.runtime.bundle import SHIPPED_DIR

    own = json.loads((SHIPPED_DIR / "rf-qpsk" / "manifest.json").read_text())["data"]["seed"]
    reports = {}
    for tag, extra in (("default", ()), ("own", ("--held-out-seed", own)), ("other", ("--held-out-seed", own + 7))):
        out = tmp_path / f"{tag}.json"
        res = edgediff("evaluate", "rf-qpsk", "--n", "16", "--steps", "4", "--json", out, "--quiet", *extra)
        assert res.returncode == 0, res.stderr
        reports[tag] = json.loads(out.read_text())
    assert reports["own"]["held_out"] == reports["default"]["held_out"]
    assert reports["own"]["generated"] == reports["default"]["generated"]  # the sampler's draws do not move
    assert reports["other"]["held_out"] != reports["default"]["held_out"]
    assert reports["other"]["generated"] == reports["default"]["generated"]
    assert reports["other"]["held_out_seed"] == own + 7 and "held_out_seed" not in reports["default"]


def test_evaluate_bad_inputs_are_one_line(tmp_path):
    res = edgediff("evaluate", "rf-chirp", "--n", "16", "--evm")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a PSK dataset" in res.stderr
    res = edgediff("evaluate", "rf-chirp", "--n", "16", "--denoise-curve", "--flow-t", "1000")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--flow-t 1000: expected a timestep in 1..999" in res.stderr
    res = edgediff("evaluate", "rf-qpsk", "--n", "16", "--denoise-curve", "--flow-t", "500")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "chirp flow (rf-mix)" in res.stderr
    from edgediff.runtime.bundle import SHIPPED_DIR

    user = tmp_path / "user"
    shutil.copytree(SHIPPED_DIR / "rf-chirp", user)
    manifest = json.loads((user / "manifest.json").read_text())
    manifest["data"]["dataset"] = None
    (user / "manifest.json").write_text(json.dumps(manifest))
    res = edgediff("evaluate", user, "--n", "16")
    assert res.returncode == 2 and "pass --data FILE.npy" in res.stderr and res.stderr.count("\n") == 1
    np.save(tmp_path / "bad.npy", np.zeros((4, 3, 256), np.float32))
    res = edgediff("evaluate", user, "--n", "16", "--data", tmp_path / "bad.npy")
    assert res.returncode == 2 and "expected finite frames" in res.stderr
    np.save(tmp_path / "good.npy", np.ones((16, 2, 256), np.float32))
    res = edgediff("evaluate", user, "--n", "16", "--data", tmp_path / "good.npy", "--denoise-curve")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--denoise-curve" in res.stderr
    res = edgediff("evaluate", user, "--n", "16", "--data", tmp_path / "good.npy", "--held-out-seed", "3")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--held-out-seed" in res.stderr


def test_constellation_plot(tmp_path):
    res = edgediff("plot", "constellation", "rf-qpsk", "--n", "4", "--out", tmp_path / "c.png")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    res = edgediff("plot", "constellation", "rf-chirp", "--n", "4", "--out", tmp_path / "d.png")
    assert res.returncode == 2 and "not PSK" in res.stderr and not (tmp_path / "d.png").exists()
