"""Training targets and weights: v <-> eps algebra, min-SNR weights, the eps view in ONNX."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime import NoiseSchedule  # noqa: E402
from edgediff.train import objective  # noqa: E402
from edgediff.train.config import RunConfig, TrainConfig  # noqa: E402
from edgediff.train.datasets import DataConfig  # noqa: E402
from edgediff.train.loop import fit  # noqa: E402
from edgediff.train.models import UNet1DConfig  # noqa: E402
from edgediff.train.run import load_run  # noqa: E402

pytestmark = pytest.mark.torch
TINY = UNet1DConfig(base_width=8, mults=(1, 2), heads=2, norm_groups=4, emb_dim=16, stem_kernel=9)


def test_v_target_turns_back_into_the_noise_exactly():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 2, 32, generator=g, dtype=torch.float64), torch.randn(16, 2, 32, generator=g, dtype=torch.float64)
    abar = torch.rand(16, generator=g, dtype=torch.float64) * 0.98 + 0.01
    a = abar[:, None, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = objective.target("v", x0, noise, abar)
    torch.testing.assert_close(objective.eps_from_output("v", v, x_t, abar), noise, rtol=0, atol=1e-12)
    assert objective.target("eps", x0, noise, abar) is noise


def test_min_snr_weights_put_every_target_on_the_x0_scale():
    abar = torch.tensor([0.999, 0.9, 0.5, 0.01], dtype=torch.float64)
    snr = abar / (1 - abar)
    w_eps = objective.loss_weights("min-snr", "eps", abar, 5.0)
    w_v = objective.loss_weights("min-snr", "v", abar, 5.0)
    # ||eps err||^2 = snr ||x0 err||^2 and ||v err||^2 = (snr + 1) ||x0 err||^2: both give min(snr, 5) ||x0 err||^2
    torch.testing.assert_close(w_eps * snr, torch.clamp(snr, max=5.0))
    torch.testing.assert_close(w_v * (snr + 1), torch.clamp(snr, max=5.0))
    assert torch.equal(objective.loss_weights("none", "v", abar, 5.0), torch.ones(4, dtype=torch.float64))


def test_v_run_loads_as_an_eps_network(tmp_path):
    schedule = NoiseSchedule.cosine(T=100)
    config = RunConfig(model=TINY, schedule=schedule, data=DataConfig(dataset="rf-qpsk", n=256, length=32),
                       train=TrainConfig(steps=30, batch=16, warmup=5, checkpoint_every=30, log_every=5,
                                         prediction="v", loss_weight="min-snr", augment="phase"))
    fit(config, tmp_path / "run", device="cpu", progress=False)
    _, model = load_run(tmp_path / "run")
    assert isinstance(model, objective.EpsilonView)
    x, t = torch.randn(4, 2, 32), torch.tensor([0.0, 17.0, 60.0, 99.0])
    with torch.no_grad():
        v = model.net(x, t)
        abar = torch.tensor(schedule.alphas_bar[[0, 17, 60, 99]], dtype=torch.float32)[:, None, None]
        torch.testing.assert_close(model(x, t), abar.sqrt() * v + (1 - abar).sqrt() * x)


def test_init_from_starts_at_the_given_weights_and_time_budget_fixes_the_steps(tmp_path, monkeypatch):
    base = RunConfig(model=TINY, schedule=NoiseSchedule.linear(T=100), data=DataConfig(dataset="rf-qpsk", n=256, length=32),
                     train=TrainConfig(steps=20, batch=8, warmup=5, checkpoint_every=20, log_every=5))
    fit(base, tmp_path / "a", device="cpu", progress=False)
    from dataclasses import replace

    from safetensors.torch import load_file

    import types

    from edgediff.train import loop

    # the loop's clock ticks 20 ms each time it is read, whatever the machine's speed: a busy machine
    # cannot turn the 3 s budget into fewer steps than the plan needs (a race with the real clock)
    ticks = iter(range(10**9))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: 0.02 * next(ticks)))
    stage = replace(base, train=replace(base.train, steps=10_000, warmup=60, lr=1e-9, max_seconds=3.0,
                                        init_from=str(tmp_path / "a" / "weights.safetensors")))
    summary = fit(stage, tmp_path / "b", device="cpu", progress=False)
    planned = RunConfig.load(tmp_path / "b").train.steps
    assert 60 < planned < 10_000 and summary["steps"] == planned, (planned, summary["steps"])
    a, b = load_file(str(tmp_path / "a" / "weights.safetensors")), load_file(str(tmp_path / "b" / "weights.safetensors"))
    # at a vanishing learning rate the stage keeps the weights it started from
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_a_time_budget_without_steps_trains_past_the_default_step_count(tmp_path, monkeypatch, caplog):
    import re
    import types

    from click.testing import CliRunner

    from edgediff.tools.cli import cli
    from edgediff.train import loop

    # 1 ms a clock read, about one read a step, up to the plan at step 50: a 6 s budget plans some 6000
    # steps, past the default 4000; then the clock jumps past the budget and the run stops (no need to run them)
    reads = iter(range(10**9))
    clock = lambda: (lambda n: 0.001 * n if n < 150 else 1e6)(next(reads))  # noqa: E731
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=clock))
    res = CliRunner().invoke(cli, ["train", "--dataset", "gmm2d", "--width", "8", "--batch", "8", "--max-seconds", "6",
                                   "--device", "cpu", "--quiet", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    planned = [int(m.group(1)) for m in re.finditer(r"stopped at step \d+ of (\d+)", caplog.text)]
    assert len(planned) == 1 and 4000 < planned[0] < 7000, caplog.text


def test_v_network_exports_as_eps_and_runs_on_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle
    from edgediff.runtime.backends import load

    schedule = NoiseSchedule.cosine(T=100)
    config = RunConfig(model=TINY, schedule=schedule, data=DataConfig(dataset="rf-qpsk", n=256, length=32),
                       train=TrainConfig(steps=10, batch=8, warmup=2, checkpoint_every=10, log_every=5, prediction="v"))
    fit(config, tmp_path / "run", device="cpu", progress=False)
    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", OnnxExportOptions(max_batch=8))
    assert manifest["parity"]["passed"]
    denoiser = load(tmp_path / "bundle", backend="ort")
    _, model = load_run(tmp_path / "run")
    x = np.random.default_rng(0).standard_normal((5, 2, 32)).astype(np.float32)
    t = np.array([0, 1, 50, 98, 99])
    with torch.no_grad():
        v = model.net(torch.from_numpy(x), torch.from_numpy(t.astype(np.float32))).numpy()
    abar = schedule.alphas_bar[t][:, None, None]
    np.testing.assert_allclose(denoiser(x, t), np.sqrt(abar) * v + np.sqrt(1 - abar) * x, rtol=1e-4, atol=2e-5)
