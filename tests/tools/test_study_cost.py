"""The study's cost side (real bundles of each U-Net variant, timed by ONNX Runtime) and the
quality-against-latency figure that joins it with the study runs' curves."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgediff.tools import study_cost as sc  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.onnx, pytest.mark.slow]


def edgediff(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgediff", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def cost(tmp_path_factory):
    path = tmp_path_factory.mktemp("cost") / "cost.json"
    res = edgediff("priors", "cost", "qpsk-w40", "--json", str(path), "--rounds", "1", "--repeats", "2")
    assert res.returncode == 0, res.stderr
    return json.loads(path.read_text())


def test_each_variant_is_costed_as_a_real_bundle_beside_the_default(cost):
    rows = cost["variants"]
    assert list(rows) == ["qpsk-w32", "qpsk-w40"]  # the baseline is always measured with the others
    base, wide = rows["qpsk-w32"], rows["qpsk-w40"]
    assert 1.2e6 < base["parameters"] < 1.3e6  # the README's 1.23 M
    assert wide["parameters"] > 1.4 * base["parameters"]  # channels x1.25: weights grow with its square
    assert base["gflop_forward"] == pytest.approx(0.123, abs=0.002)  # the README's count for the default
    assert wide["gflop_forward"] > 1.4 * base["gflop_forward"]
    for row in rows.values():
        mb = row["megabytes"]
        assert mb["model.onnx"] == pytest.approx(4e-6 * row["parameters"], rel=0.05)  # fp32 weights, little else
        assert mb["model.int8.onnx"] < 0.5 * mb["model.onnx"]
        assert row["bundle_mb"] == pytest.approx(sum(mb.values()))
        assert set(row["latency_ms"]) == {"1", "16"} and all(v > 0 for v in row["latency_ms"].values())
        assert row["within_limits"] == (max(row["latency_ratio"].values()) <= 2.0 and row["bundle_mb"] <= 12.0)
    assert base["latency_ratio"] == {"1": 1.0, "16": 1.0}


def _study_run(runs, name, step, batch, evm_db):
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"batch": batch}}))
    rows = [{"step": s, "sample_steps": 50, "generated": {"evm": {"median_db": e, "share_below_15db": 0.5}}}
            for s, e in ((step // 2, evm_db + 3), (step, evm_db))]
    (run / "curve.json").write_text(json.dumps(rows))


def test_the_figure_joins_each_study_run_with_its_cost(cost, tmp_path):
    cost_path = tmp_path / "cost.json"
    cost_path.write_text(json.dumps(cost))
    runs = tmp_path / "runs"
    _study_run(runs, "qpsk-w32", 4000, 4096, -21.0)
    _study_run(runs, "qpsk-w40", 3000, 4096, -22.5)
    rows = sc.quality_rows(cost, runs)
    assert [(r["name"], r["frames_seen"], r["evm_median_db"]) for r in rows] == [
        ("qpsk-w32", 4000 * 4096, -21.0), ("qpsk-w40", 3000 * 4096, -22.5)]  # the last point of each curve
    res = edgediff("priors", "cost-plot", "--cost", str(cost_path), "--runs", str(runs), "--out", str(tmp_path / "q.png"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "qpsk-w40: EVM -22.5 dB after 12.3 M frames" in res.stdout


def test_missing_runs_and_foreign_files_get_one_line(cost, tmp_path):
    cost_path = tmp_path / "cost.json"
    cost_path.write_text(json.dumps(cost))
    res = edgediff("priors", "cost-plot", "--cost", str(cost_path), "--runs", str(tmp_path / "none"), "--out",
                   str(tmp_path / "q.png"))
    assert res.returncode == 2 and "no study run with an EVM curve" in res.stderr and len(res.stderr.splitlines()) == 1
    (tmp_path / "runs" / "qpsk-w32").mkdir(parents=True)
    (tmp_path / "runs" / "qpsk-w32" / "curve.json").write_text("{not json")
    res = edgediff("priors", "cost-plot", "--cost", str(cost_path), "--runs", str(tmp_path / "runs"), "--out",
                   str(tmp_path / "q.png"))
    assert res.returncode == 2 and "unreadable study run" in res.stderr and len(res.stderr.splitlines()) == 1
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    res = edgediff("priors", "cost-plot", "--cost", str(tmp_path / "other.json"), "--out", str(tmp_path / "q.png"))
    assert res.returncode == 2 and "not the JSON of `edgediff priors cost`" in res.stderr
    res = edgediff("priors", "cost", "qpsk-w99", "--json", str(tmp_path / "c.json"))
    assert res.returncode == 2 and "qpsk-w99" in res.stderr and "qpsk-w40" in res.stderr
    assert not (tmp_path / "q.png").exists() and not (tmp_path / "c.json").exists()
