"""`edgediff bench` measures every backend in one run and writes its figures as JSON."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.mark.slow
def test_bench_reports_every_section(tmp_path, mlp_bundle):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench", str(mlp_bundle), "--batch", "1,8", "--repeats",
                          "5", "--quality-samples", "200", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert set(report["backends"]) == {"ort", "torch"}
    for entry in report["backends"].values():
        assert set(entry["nfe"]) == {"1", "8"}
        for s in entry["nfe"].values():
            assert 0 < s["min"] <= s["median"] <= s["max"] and s["n"] == 5
        assert set(entry["loop_overhead"]) == {"ddim", "ddpm-posterior"}
        assert all(0 < o["overhead_fraction"] < 1 for o in entry["loop_overhead"].values())
        assert set(entry["end_to_end"]) == {"ddpm-100", "ddim-50", "ddim-20"}
    assert report["ratios"]["nfe torch/ort"]["1"] > 0 and "ort ddpm/ddim-50 end to end" in report["ratios"]
    lean = report["lean_process"]
    assert lean["torch_imported"] is False and 0 < lean["peak_rss_mb"] < report["torch_process"]["peak_rss_mb"]
    q = report["gmm2d_quality"]
    assert len(q["ddpm"]) == len(q["ddim50"]) == 6 and abs(sum(q["ddpm"]) - 1) < 1e-9
    assert "NFE latency" in res.stdout and "ratios (same run)" in res.stdout and "gmm2d mode shares" in res.stdout


def test_bench_bad_arguments(tmp_path, mlp_bundle):
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench", str(mlp_bundle), "--backends", "tflite"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "'tflite' is not one of 'ort', 'torch', 'trt'" in res.stderr
    assert res.stderr.count("\n") == 1
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench", str(mlp_bundle), "--batch", "0,x"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "element 1 of '0,x'" in res.stderr  # the list type names the element
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench", str(mlp_bundle), "--batch", "1,1000", "--backends",
                          "ort"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--batch 1000: outside 1..16 (the batch range of the ort engine)" in res.stderr  # beyond the engine: never silently skipped


def test_research_baseline_script_compares_in_one_run(mlp_bundle):
    res = subprocess.run([sys.executable, "-m", "edgediff.tools.research_baseline", str(mlp_bundle), "--repeats", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "research loop" in ln]
    assert len(lines) == 2 and lines[0].startswith("ddpm-100") and lines[1].startswith("ddim-50")
    assert all("x faster" in ln for ln in lines)


def test_bench_of_a_shipped_prior_times_torch_on_its_own_weights(tmp_path, monkeypatch):
    """A shipped prior's exporting run is never here: the torch rows read its weights back from model.onnx and
    say so, where bench refused the defaults outright; a board without torch benches ONNX Runtime alone."""
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "edgediff", "bench", "gmm2d", "--batch", "1", "--repeats", "2", "--warmup",
                          "1", "--no-ddpm", "--quality-samples", "16", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "its weights read back from" in res.stdout and "model.onnx" in res.stdout
    report = json.loads(out.read_text())
    assert set(report["backends"]) == {"ort", "torch"} and "error" not in report["torch_process"]
    assert report["research_loop"]["ddim-50"]["median"] > 0

    import importlib.util

    from edgediff.tools.cli import bench

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert bench.default_backends() == ["ort"]
