"""edgediff bench-train on the CPU at a tiny size: its counts (frames, FLOPs, fractions), not its speed."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime.errors import InputError  # noqa: E402
from edgediff.tools import bench_train as bt  # noqa: E402

pytestmark = pytest.mark.torch


def test_flops_per_frame_are_counted_from_the_model():
    from edgediff.train.models import UNet1DConfig

    f = bt.flops_per_frame(UNet1DConfig(), (2, 256))
    assert 0.10e9 < f["forward"] < 0.15e9  # the default U-Net: about 0.12 GFLOP per frame
    assert 2.5 < f["train"] / f["forward"] < 3.5  # the backward pass costs about two forwards
    g = bt.flops_per_frame(UNet1DConfig(base_width=64), (2, 256))
    assert 3.5 < g["forward"] / f["forward"] < 4.5  # twice the width, four times the arithmetic


def test_bench_train_compares_variants_in_one_run_and_counts_their_frames(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "edgediff", "bench-train", "--width", "8", "--variant", "today:batch=8",
           "--variant", "mine:batch=4,frames=generated,graphs=on,fused=on", "--seconds", "0.5", "--warmup", "4",
           "--n", "64", "--device", "cpu", "--threads", "1", "--peak-tflops", "1", "--bandwidth-tbs", "0.05",
           "--profile", "2", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    today, mine = report["rows"]
    assert today["variant"]["name"] == "today" and mine["variant"]["batch"] == 4 and mine["frames"] == "generated"
    for row in (today, mine):
        assert "error" not in row and row["loss_finite"]
        assert row["steps"] % 10 == 0 and row["frames_per_s"] == pytest.approx(row["steps"] * row["variant"]["batch"] / row["seconds"])
        assert row["tflops"] == pytest.approx(row["frames_per_s"] * report["flops_per_frame"]["train"] / 1e12)
        assert row["fraction_of_peak"] == pytest.approx(row["tflops"] / 1.0)
        # set against the model's roofline at the row's own batch (float32 on the CPU) ...
        bound = row["roofline"]
        assert bound["batch"] == row["variant"]["batch"] and bound["element_bytes"] == 4 and bound["bandwidth_tbs"] == 0.05
        assert row["of_eager_roofline"] == pytest.approx(row["frames_per_s"] / bound["eager"]["frames_per_s"])
        # ... and two more steps profiled afterwards: the U-Net's convolutions among their operators
        assert row["profile"]["steps"] == 2 and "convolution" in row["profile"]["groups"]
    assert mine["options"] == "graphs+fused" and today["options"] == "eager"
    assert "frames/s" in res.stdout and "x1.00" in res.stdout and today["copies"] == mine["copies"] == 1
    assert res.stdout.count("roofline at batch") == 2 and res.stdout.count("profile: ") == 2


def test_copies_train_several_models_at_once_and_count_all_their_frames():
    """Four models of the stages' step at once (streams on a GPU; in turn here): every copy trains, on
    its own draws, and frames/s counts all four."""
    from edgediff.tools import priors

    config = priors.run_config(priors.replace_width(priors.PriorRecipe("rf-qpsk"), 8))
    v = bt.parse_variant("fast-compile-x4:batch=4,compile=off", cuda=False)
    assert (v.copies, v.batch, v.graphs, v.compile) == (4, 4, True, False)
    row = bt.measure(v, config, torch.device("cpu"), seconds=0.2, warmup=2, n_resident=64, chunk=2)
    assert row["copies"] == 4 and row["loss_finite"]
    assert len(set(row["copy_losses"])) == 4  # four models, four seeds, four sets of draws
    assert row["frames_per_s"] == pytest.approx(row["steps"] * 4 * 4 / row["seconds"])


def test_the_channels_last_variant_trains_its_convolutions_in_that_layout():
    from edgediff.tools import priors

    config = priors.run_config(priors.replace_width(priors.PriorRecipe("rf-qpsk"), 8))
    v = bt.parse_variant("fast-compile-cl:batch=4,compile=off", cuda=False)
    assert (v.channels_last, v.batch, v.graphs, v.compile) == (True, 4, True, False)
    assert not bt.parse_variant("fast-compile-cl:channels_last=off", cuda=False).channels_last
    row = bt.measure(v, config, torch.device("cpu"), seconds=0.2, warmup=2, n_resident=64, chunk=2)
    assert row["options"] == "graphs+fused+cl" and row["loss_finite"]


@pytest.mark.parametrize("text, match", [("nosuch", "unknown"), ("today:batch=0", "batch"), ("today:frames=disk", "frames"),
                                         ("today:copies=0", "copies"), ("today:copies=65", "copies"),
                                         ("today:graphs=yes", "on or off"), ("today:speed=9", "key 'speed'")])
def test_bad_variants_are_named(text, match):
    with pytest.raises(InputError, match=match):
        bt.parse_variant(text, cuda=False)


def test_peaks_are_known_for_common_gpus_and_absent_for_cpus():
    cpu = torch.device("cpu")
    assert bt.peak_tflops(cpu, True, None) is None and bt.peak_tflops(cpu, True, 2.0) == 2.0
    assert bt.PEAKS["H200"][0] > 900 and list(bt.PEAKS).index("H100 PCIe") < list(bt.PEAKS).index("H100")
