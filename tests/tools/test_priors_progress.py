"""`edgediff priors progress`: the ledger's stages as score against frames seen, the trend per doubling
and its projection, on a ledger whose answers are known, then on the repository's own ledger."""

import json
import math

import pytest
from click.testing import CliRunner

from edgediff.runtime.errors import InputError
from edgediff.tools import priors_progress as pg
from edgediff.tools.cli import cli
from edgediff.tools.priors_continue import read_ledger


def _ledger(scores, frames=1_000_000, slope_device="2 CPU cores (one thread)"):
    """rf-qpsk-fast stages that each double the frames seen, scored ``scores``; the first on a GPU."""
    stages, seen = [], 0
    for i, score in enumerate(scores):
        add = frames if i == 0 else seen  # each stage doubles what was seen
        seen += add
        stages.append({"run": f"rf-qpsk-fast-s{i + 1}", "frames": add, "score": score,
                       "seconds": 100.0 if i == 0 else 3600.0,
                       "device": "H200 (beside rf-qpsk, from the GPU's stage)" if i == 0 else slope_device})
    return {"rf-qpsk-fast": {"frames_seen": seen, "stages": stages}}


def test_a_steady_fall_per_doubling_is_fitted_and_projected(tmp_path):
    found = pg.progress(_ledger([-10.0, -11.0, -12.0, -13.0]), bench=tmp_path)  # no figure: the ledger's last score
    (p,) = found
    assert p.frames_seen == 8_000_000 and [q["frames_seen"] for q in p.points] == [1e6, 2e6, 4e6, 8e6]
    # within two doublings of 8 M: the stages at 2, 4 and 8 M, one dB a doubling
    assert (p.fit_from, p.fit_points) == (2_000_000, 3) and p.slope == pytest.approx(-1.0) and p.now == -13.0
    assert p.intercept + p.slope * math.log2(8e6) == pytest.approx(-13.0)
    # -22 is 9 dB and so 9 doublings on; the GPU hours at the only GPU stage's rate (1 M frames in 100 s)
    assert p.projection["status"] == "open" and p.projection["doublings"] == pytest.approx(9.0)
    assert p.projection["frames"] == pytest.approx(8e6 * 2**9, rel=1e-3)
    assert p.gpu_rate == pytest.approx(1e4)
    assert p.projection["gpu_hours"] == pytest.approx((8e6 * 2**9 - 8e6) / 1e4 / 3600, rel=1e-3)
    # the device is read before the bracket: "from the GPU's stage" does not make a CPU stage a GPU one
    assert p.seconds == {"GPU": 100.0, "CPU": 3 * 3600.0} and [q["device"] for q in p.points] == ["GPU", "CPU", "CPU", "CPU"]


def test_declined_stages_count_in_the_time_spent_and_not_in_the_trend(tmp_path):
    """A declined stage's training time was spent (the issue asks for the GPU minutes spent); its score is
    not the prior's, so it stays out of the points and the fit."""
    ledger = _ledger([-10.0, -11.0, -12.0, -13.0])
    ledger["rf-qpsk-fast"]["declined"] = [
        {"run": "rf-qpsk-fast-s5", "score": -12.9, "shipped_score": -13.0, "device": "H200 (120 s from s4)", "seconds": 120.0},
        {"run": "rf-qpsk-fast-s6", "score": -12.8, "shipped_score": -13.0, "device": "cpu (one thread)"}]  # no seconds
    (p,) = pg.progress(ledger, bench=tmp_path)
    assert p.seconds == {"GPU": 220.0, "CPU": 3 * 3600.0} and p.unrecorded == {"CPU": 1} and p.declined == 2
    assert [q["run"] for q in p.points] == [f"rf-qpsk-fast-s{i}" for i in range(1, 5)] and p.slope == pytest.approx(-1.0)


def test_a_transfer_starts_a_lineage_whose_own_frames_and_trend_count(tmp_path):
    """Stages after one that started from another prior's weights count their own frames from zero, and
    the trend is theirs alone: the earlier lineage's stages stay on the record, out of the fit."""
    ledger = _ledger([-10.0, -11.0, -12.0, -13.0])  # 8 M frames, one dB a doubling
    entry = ledger["rf-qpsk-fast"]
    entry["stages"] += [{"run": "rf-qpsk-fast-s5", "frames": 500_000, "score": -14.0, "device": "cpu",
                         "from_prior": "rf-qpsk"},
                        {"run": "rf-qpsk-fast-s6", "frames": 500_000, "score": -16.0, "device": "cpu"}]
    entry["frames_seen"] = 1_000_000
    found = pg.progress(ledger, bench=tmp_path)
    (p,) = found
    assert p.frames_seen == 1_000_000
    assert [q["frames_seen"] for q in p.points][-2:] == [500_000, 1_000_000]
    assert [q["lineage"] for q in p.points] == [0, 0, 0, 0, 1, 1]
    assert p.fit_points == 2 and p.slope == pytest.approx(-2.0)  # the new lineage's two stages, not the old four
    pytest.importorskip("matplotlib")
    from edgediff.tools.plot_curves import progress_curves

    assert progress_curves(found, tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"  # both lineages drawn


def test_today_s_figure_sets_where_the_prior_stands(tmp_path):
    report = {"dataset": "rf-qpsk-fast", "generated": {"evm": {"median_db": -23.0}}}
    (tmp_path / pg.TARGETS["rf-qpsk-fast"].figure).write_text(json.dumps(report))
    (p,) = pg.progress(_ledger([-10.0, -11.0, -12.0, -13.0]), bench=tmp_path)
    assert p.current == -23.0 and p.projection == {"status": "met"}


@pytest.mark.parametrize("text", ["{not json", json.dumps({"generated": {"evm": "x"}}), json.dumps([1])])
def test_a_broken_figure_is_one_line_naming_it(tmp_path, text):
    (tmp_path / pg.TARGETS["rf-qpsk-fast"].figure).write_text(text)
    with pytest.raises(InputError, match="evaluate-rf-qpsk-fast.json: not an evaluate report"):
        pg.progress(_ledger([-10.0, -11.0]), bench=tmp_path)


def test_a_flat_or_rising_record_says_frames_alone_will_not_reach_it(tmp_path):
    (p,) = pg.progress(_ledger([-10.0, -10.5, -10.0, -9.5]), bench=tmp_path)
    assert p.slope > 0 and "frames alone will not reach it" in p.projection["status"]
    (one,) = pg.progress(_ledger([-10.0]), bench=tmp_path)
    assert one.slope is None and one.projection["status"].startswith("no trend")


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d["rf-qpsk-fast"].update(frames_seen=5), "add up to"),
    (lambda d: d["rf-qpsk-fast"]["stages"][1].pop("frames"), "no frame count"),
    (lambda d: d["rf-qpsk-fast"].update(stages={"a": 1}), "not a list"),
    (lambda d: d["rf-qpsk-fast"]["stages"][2].update(score=float("nan")), "not a number"),
    (lambda d: d.update({"rf-other": d.pop("rf-qpsk-fast")}), "names none of"),
])
def test_a_broken_ledger_is_one_line_and_exit_2(tmp_path, mutate, says):
    ledger = _ledger([-10.0, -11.0, -12.0])
    mutate(ledger)
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(ledger))
    res = CliRunner().invoke(cli, ["priors", "progress", "--ledger", str(path), "--json", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and says in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_the_repository_s_ledger_draws_and_adds_up(tmp_path):
    png, out = tmp_path / "progress.png", tmp_path / "progress.json"
    res = CliRunner().invoke(cli, ["priors", "progress", "--plot", str(png), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    report, ledger = json.loads(out.read_text())["priors"], read_ledger()
    assert set(report) == set(pg.TARGETS)
    for name, p in report.items():
        assert p["frames_seen"] == ledger[name]["frames_seen"] and p["points"]
        assert p["current"] is not None  # each target's README figure is there
    assert report["rf-qpsk"]["slope"] < 0 and "rf-qpsk-fast" in res.output
    # an existing file is kept without --force
    before = png.read_bytes()
    res = CliRunner().invoke(cli, ["priors", "progress", "--plot", str(png)])
    assert res.exit_code == 2 and "--force" in res.output and png.read_bytes() == before
