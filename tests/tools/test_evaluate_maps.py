"""Generated radar maps judged like held-out maps: targets per map, sidelobes, noise floor, clutter."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgediff.tools.evaluate_maps import clusters, evaluate_maps
from edgediff.train.datasets import builtin


def test_two_held_out_sets_match_and_noise_does_not():
    a, b = builtin("radar-rd", 256, 32, seed=1), builtin("radar-rd", 256, 32, seed=2)
    same = evaluate_maps(a, b)
    assert all(same["within"].values()), same
    assert 1.5 < same["held_out"]["targets_per_map"] < 3.5  # 1 to 4 targets, the weakest missed
    assert 0.35 < same["held_out"]["ridge_share"] < 0.65  # clutter in half of the maps
    noise = np.random.default_rng(0).standard_normal(a.shape).astype(np.float32)
    other = evaluate_maps(noise, b)
    assert not other["within"]["targets_per_map"] and not other["within"]["ridge_share"]
    assert other["generated"]["targets_per_map"] < 0.2


def test_adjacent_detections_count_once_across_the_edge():
    det = np.zeros((1, 8, 8), bool)
    det[0, 0, 0] = det[0, 7, 0] = det[0, 0, 7] = True  # one cluster through the circular edges
    det[0, 4, 4] = True
    assert sorted(len(g) for g in clusters(det)[0]) == [1, 3]


def test_evaluate_cli_on_a_radar_bundle(tmp_path, radar_bundle):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "e.json"
    res = subprocess.run([sys.executable, "-m", "edgediff", "evaluate", str(radar_bundle), "--n", "16", "--steps", "3",
                          "--json", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["frames"] == {"generated": 16, "held_out": 16} and set(report["within"]) == set(report["tolerances"])
    assert "targets per map" in res.stdout and "sidelobe" in res.stdout
