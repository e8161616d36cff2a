"""Real torch training: tiny runs per model, resume after a kill, 2-process DDP, CLI errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from edgediff.runtime import NoiseSchedule  # noqa: E402
from edgediff.train.config import RunConfig, TrainConfig  # noqa: E402
from edgediff.train.datasets import DataConfig  # noqa: E402
from edgediff.train.loop import fit  # noqa: E402
from edgediff.train.models import MLPConfig, UNet1DConfig  # noqa: E402

pytestmark = pytest.mark.torch

TINY_UNET = UNet1DConfig(base_width=8, mults=(1, 2), heads=2, norm_groups=4, emb_dim=16)


def tiny_config(model, dataset, steps=60, batch=32, length=32, ckpt=20, lr=3e-3, schedule=None):
    return RunConfig(
        model=model, schedule=schedule or NoiseSchedule.linear(T=100),
        data=DataConfig(dataset=dataset, n=512, length=length, seed=0, normalise="rms" if dataset != "gmm2d" else "none"),
        train=TrainConfig(steps=steps, batch=batch, lr=lr, warmup=5, seed=0, checkpoint_every=ckpt, log_every=5),
    )


def losses(run):
    with open(run / "loss.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.parametrize("model, dataset", [(TINY_UNET, "rf-qpsk"), (MLPConfig(width=64, depth=2, emb_dim=16), "gmm2d")])
def test_tiny_run_writes_a_complete_run_and_learns(tmp_path, model, dataset):
    run = tmp_path / "run"
    summary = fit(tiny_config(model, dataset, steps=80), run, device="cpu", progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "loss.csv", "summary.json",
                                                    "weights.safetensors"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000060", "step_00000080"]
    assert sorted(p.name for p in (run / "checkpoints" / "step_00000080").iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]
    cfg = RunConfig.load(run)
    assert cfg.model.kind == model.kind and cfg.schedule == NoiseSchedule.linear(T=100)
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    loss = losses(run)
    assert len(loss) == 16 and np.mean(loss[-3:]) < 0.8 * np.mean(loss[:2])
    assert summary["final_loss"] < 1.0 and summary["samples_per_s"] > 0
    ema = load_file(str(run / "weights.safetensors"))
    raw = load_file(str(run / "checkpoints" / "step_00000080" / "model.safetensors"))
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)


def edgediff_cmd(*args):
    return [sys.executable, "-m", "edgediff", *args]


TRAIN_ARGS = ["train", "--dataset", "gmm2d", "--width", "64", "--T", "100", "--steps", "400", "--batch", "256",
              "--checkpoint-every", "20", "--quiet", "--device", "cpu"]


def test_resume_after_kill_reaches_the_uninterrupted_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert subprocess.run(edgediff_cmd(*TRAIN_ARGS, "--out", str(full)), capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(edgediff_cmd(*TRAIN_ARGS, "--out", str(killed)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000040").exists() and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists(), "the run finished before it could be interrupted"
    # a damaged newer checkpoint and a leftover temporary directory must not confuse the resume
    broken = killed / "checkpoints" / "step_00000399"
    broken.mkdir()
    (broken / "state.json").write_text("{truncated")
    (killed / "checkpoints" / ".tmp-step_00000398.abc").mkdir()
    res = subprocess.run(edgediff_cmd("train", "--out", str(killed), "--resume", "--quiet", "--device", "cpu"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((killed / "summary.json").read_text())
    assert 0 < summary["steps_this_session"] < 400
    a, b = load_file(str(full / "weights.safetensors")), load_file(str(killed / "weights.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7)
    assert losses(killed) == losses(full)


def test_two_process_ddp_keeps_ranks_identical_and_learns(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edgediff",
           *TRAIN_ARGS[:7], "--steps", "60", "--batch", "128", "--checkpoint-every", "30", "--quiet", "--device", "cpu",
           "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[:3000]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["ranks_identical"] is True
    loss = losses(run)
    assert np.mean(loss[-2:]) < 0.8 * loss[0]
    assert res.stdout.count("trained 60 steps") == 1  # only rank 0 reports


@pytest.mark.parametrize(
    "args, match",
    [
        (["--data", "{tmp}/missing.npy"], "no such file"),
        (["--data", "{tmp}/nan.npy"], "NaN or Inf"),
        (["--dataset", "rf-qpsk", "--sigmf-frame", "100", "--n", "16"], "L=100 is not divisible"),
        (["--dataset", "gmm2d", "--model", "unet1d", "--n", "16"], "use --model mlp"),
        (["--dataset", "gmm2d", "--data", "{tmp}/nan.npy"], "both given"),
        (["--dataset", "gmm2d", "--resume"], "holds no run"),
        (["--dataset", "gmm2d", "--batch", "0"], "Invalid value for '--batch'"),
        (["--dataset", "gmm2d", "--seed", "-1"], "Invalid value for '--seed'"),
        (["--dataset", "gmm2d", "--width", "0"], "Invalid value for '--width'"),
        (["--dataset", "gmm2d", "--attn-levels", "1"], "--attn-levels is for the U-Nets"),
        (["--dataset", "rf-qpsk", "--n", "16", "--attn-levels", "1,4"], "levels are 0..3"),
        (["--dataset", "rf-qpsk", "--n", "16", "--attn-levels", "1,1"], "repeats an element"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, match):
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]] * 4))
    out = tmp_path / "run"
    cmd = ["train", *[a.format(tmp=tmp_path) for a in args], "--out", str(out), "--steps", "2", "--quiet", "--device", "cpu"]
    res = subprocess.run(edgediff_cmd(*cmd), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("edgediff: error: ") and match in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_existing_run_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = subprocess.run(edgediff_cmd("train", "--dataset", "gmm2d", "--out", str(out), "--quiet"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "not empty" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_default_gmm2d_run_learns_the_exact_score(tmp_path):
    """The issue's target: default MLP on gmm2d learns the score within 10 % for abar in [0.1, 0.9]. Its time
    (44 s on 2 cores, README) is a benchmark's figure: a timed assertion fails on a busy machine."""
    res = subprocess.run(edgediff_cmd("train", "--dataset", "gmm2d", "--out", str(tmp_path / "gmm"), "--quiet",
                                      "--device", "cpu"), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "gmm" / "summary.json").read_text())
    print(res.stdout)
    assert all(err < 0.10 for err in summary["score_rel_l2"].values()), summary["score_rel_l2"]
