"""The GPU training path, run where the suite runs: the graph's program eagerly on the CPU, its resume,
generated frames, and training on from a bundle's weights (a shipped prior)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from safetensors.torch import load_file  # noqa: E402

from edgediff.runtime import NoiseSchedule  # noqa: E402
from edgediff.runtime.bundle import Bundle  # noqa: E402
from edgediff.runtime.errors import BundleError, InputError  # noqa: E402
from edgediff.train.bundle_weights import weights_from_bundle  # noqa: E402
from edgediff.train.config import RunConfig, TrainConfig  # noqa: E402
from edgediff.train.datasets import DataConfig  # noqa: E402
from edgediff.train.loop import fit  # noqa: E402
from edgediff.train.models import UNet1DConfig, build_model, config_from_dict  # noqa: E402

pytestmark = pytest.mark.torch
TINY = UNet1DConfig(base_width=8, mults=(1, 2), heads=2, norm_groups=4, emb_dim=16)


def config(steps=24, **train):
    return RunConfig(model=TINY, schedule=NoiseSchedule.cosine(T=100),
                     data=DataConfig(dataset="rf-qpsk", n=256, length=32, seed=0),
                     train=TrainConfig(steps=steps, batch=16, lr=3e-3, warmup=4, seed=0, checkpoint_every=12, log_every=4,
                                       prediction="v", loss_weight="min-snr", augment="phase", **train))


def weights(run):
    return load_file(str(run / "weights.safetensors"))


def test_the_graph_program_resumes_exactly_and_matches_the_eager_fused_step(tmp_path):
    fast = {"frames": "generated", "graphs": True, "fused": True}
    full, cut, eager = tmp_path / "full", tmp_path / "cut", tmp_path / "eager"
    fit(config(**fast), full, device="cpu", progress=False)
    recorded = RunConfig.load(full).train
    assert (recorded.frames, recorded.graphs, recorded.fused, recorded.amp) == ("generated", True, True, False)
    # the same run interrupted after its first checkpoint: drop what came after, resume
    fit(config(**fast), cut, device="cpu", progress=False)
    shutil.rmtree(cut / "checkpoints" / "step_00000024")
    (cut / "weights.safetensors").unlink()
    summary = fit(None, cut, resume=True, device="cpu", progress=False)
    assert summary["steps_this_session"] == 12
    a, b = weights(full), weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed run must reach the uninterrupted weights bitwise"
    fit(config(frames="generated", graphs=False, fused=True), eager, device="cpu", progress=False)
    c = weights(eager)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) < 1e-4  # same draws, same maths, other kernels
    assert any(not torch.equal(a[k], c[k]) for k in a)  # ... but really the other program


def test_the_cpu_default_stays_the_resident_eager_step(tmp_path):
    fit(config(steps=4), tmp_path / "run", device="cpu", progress=False)
    t = RunConfig.load(tmp_path / "run").train
    assert (t.frames, t.graphs, t.fused, t.amp, t.compile) == ("resident", False, False, False, False)


def test_bf16_autocast_asked_for_on_the_cpu_runs_there_and_resumes_exactly(tmp_path):
    """--amp on the CPU is bf16 arithmetic there (AMX-BF16's matrix units pay for it, README), not a
    setting recorded and ignored as before: other weights than float32's, close to them, and a resume
    that reaches the uninterrupted run's weights bitwise."""
    full, cut, fp32 = tmp_path / "full", tmp_path / "cut", tmp_path / "fp32"
    fit(config(amp=True), full, device="cpu", progress=False)
    assert RunConfig.load(full).train.amp is True
    fit(config(amp=True), cut, device="cpu", progress=False)
    shutil.rmtree(cut / "checkpoints" / "step_00000024")
    (cut / "weights.safetensors").unlink()
    assert fit(None, cut, resume=True, device="cpu", progress=False)["steps_this_session"] == 12
    a, b = weights(full), weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a), "a resumed bf16 run must reach the uninterrupted weights bitwise"
    fit(config(amp=False), fp32, device="cpu", progress=False)
    c = weights(fp32)
    gap = max(float((a[k] - c[k]).abs().max()) for k in a)
    assert 1e-5 < gap < 5e-2, gap  # bf16's 8-bit mantissa moved the weights, and only by rounding


def test_generated_frames_need_a_builtin_dataset(tmp_path):
    np.save(tmp_path / "frames.npy", np.random.default_rng(0).standard_normal((32, 2, 32)).astype(np.float32))
    cfg = replace(config(frames="generated"), data=DataConfig(dataset=None, path=str(tmp_path / "frames.npy"), length=32))
    with pytest.raises(InputError, match="needs a built-in dataset"):
        fit(cfg, tmp_path / "run", device="cpu", progress=False)


@pytest.mark.parametrize("name", ["rf-qpsk", "gmm2d"])
def test_a_bundles_weights_are_read_back_and_proved_on_its_reference(name):
    bundle = Bundle.open(name)
    model = build_model(config_from_dict(bundle.manifest["model"]["config"]))
    state = weights_from_bundle(name, model)
    assert state.keys() == model.state_dict().keys()
    assert any("norm" in k for k in state) or name == "gmm2d"  # GroupNorm's scale and bias come from the graph


def test_weights_that_do_not_reproduce_the_reference_are_refused(tmp_path, unet_bundle):
    bundle = tmp_path / "bundle"
    shutil.copytree(unet_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = build_model(config_from_dict(manifest["model"]["config"]))
    weights_from_bundle(bundle, model)  # the tiny bundle as exported: accepted
    ref = dict(np.load(bundle / "reference.npz"))
    ref["eps"] = ref["eps"] * 1.01
    np.savez(bundle / "reference.npz", **ref)
    from edgediff.runtime.bundle import sha256_file

    manifest["files"]["reference.npz"]["sha256"] = sha256_file(bundle / "reference.npz")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="do not reproduce reference.npz"):
        weights_from_bundle(bundle, model)


def test_training_on_from_a_shipped_prior_keeps_its_units_and_starts_trained(tmp_path):
    cfg = RunConfig(model=UNet1DConfig(), schedule=NoiseSchedule.cosine(T=1000),
                    data=DataConfig(dataset="rf-qpsk", n=64, length=256, seed=0),
                    train=TrainConfig(steps=2, batch=4, lr=1e-5, warmup=1, seed=0, checkpoint_every=2, log_every=1,
                                      prediction="v", loss_weight="min-snr", augment="phase", init_from="rf-qpsk"))
    # a short name is the CLI's business; the library takes the bundle's path
    cfg = replace(cfg, train=replace(cfg.train, init_from=str(Bundle.open("rf-qpsk").root)))
    summary = fit(cfg, tmp_path / "run", device="cpu", progress=False)
    assert RunConfig.load(tmp_path / "run").normalisation == Bundle.open("rf-qpsk").normalisation
    assert summary["final_loss"] < 0.1  # a random network starts near 1


def _from_shipped_qpsk(tmp_path, data, steps=2):
    cfg = RunConfig(model=UNet1DConfig(), schedule=NoiseSchedule.cosine(T=1000), data=data,
                    train=TrainConfig(steps=steps, batch=4, lr=1e-5, warmup=1, seed=0, checkpoint_every=steps,
                                      log_every=1, prediction="v", loss_weight="min-snr", augment="phase",
                                      init_from=str(Bundle.open("rf-qpsk").root)))
    summary = fit(cfg, tmp_path / "run", device="cpu", progress=False)
    return RunConfig.load(tmp_path / "run").normalisation, summary


def test_a_shipped_prior_fine_tuned_on_a_recording_takes_the_recording_to_unit_rms(tmp_path):
    """Your recording comes in its own units (here QPSK at amplitude 10): the frames keep their own
    normalisation, unit RMS as the prior learnt its own. With the prior's units, as before the fix, the
    recording trained at RMS 40 and the first losses read about 100 where predicting zero reads 1."""
    rng = np.random.default_rng(0)
    symbols = (rng.choice([-1, 1], (64, 32)) + 1j * rng.choice([-1, 1], (64, 32))) / np.sqrt(2)
    np.save(tmp_path / "capture.npy", (10 * np.repeat(symbols, 8, axis=1)).astype(np.complex64))
    norm, summary = _from_shipped_qpsk(tmp_path, DataConfig(dataset=None, path=str(tmp_path / "capture.npy"),
                                                            length=256, seed=0))
    assert norm.scale == pytest.approx(10 / np.sqrt(2), rel=1e-3)  # its own: RMS per I/Q component
    assert summary["final_loss"] < 1.0


def test_one_prior_started_from_another_keeps_its_own_data_units(tmp_path):
    """rf-qpsk-fast started from rf-qpsk's weights (a transfer, not a later stage): its own unit RMS."""
    norm, _ = _from_shipped_qpsk(tmp_path, DataConfig(dataset="rf-qpsk-fast", n=64, length=256, seed=0))
    assert norm != Bundle.open("rf-qpsk").normalisation
    assert norm.scale == pytest.approx(Bundle.open("rf-qpsk-fast").normalisation.scale, rel=0.05)


def test_a_bundle_of_another_schedule_is_refused_with_the_option_to_pass(tmp_path):
    cfg = RunConfig(model=UNet1DConfig(), schedule=NoiseSchedule.linear(T=1000),
                    data=DataConfig(dataset="rf-qpsk", n=64, length=256, seed=0),
                    train=TrainConfig(steps=2, batch=4, prediction="v", init_from=str(Bundle.open("rf-qpsk").root)))
    with pytest.raises(InputError, match="--schedule cosine --T 1000"):
        fit(cfg, tmp_path / "run", device="cpu", progress=False)


def test_channels_last_convolutions_compute_the_same_network_and_train_it(tmp_path):
    from edgediff.train.layers import use_channels_last

    torch.manual_seed(0)
    model = build_model(TINY)
    x, t = torch.randn(3, 2, TINY.length), torch.tensor([5.0, 40.0, 90.0])
    seen = []
    model.stem.register_forward_hook(lambda mod, inp, out: seen.append(out.stride()))
    before = model(x, t)
    before.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    assert use_channels_last(model) == sum(isinstance(m, torch.nn.Conv1d) for m in model.modules()) > 10
    after = model(x, t)
    after.square().sum().backward()
    assert seen[0][1] != 1 and seen[1][1] == 1  # the stem's output: channels fastest only in the new layout
    assert torch.allclose(before, after, atol=1e-5)
    assert all(torch.allclose(grads[k], p.grad, atol=1e-4, rtol=1e-4) for k, p in model.named_parameters())
    # a run trained with it: recorded, and the same training to rounding
    plain, cl = tmp_path / "plain", tmp_path / "cl"
    fit(config(steps=8, frames="generated", graphs=True, fused=True), plain, device="cpu", progress=False)
    fit(config(steps=8, frames="generated", graphs=True, fused=True, channels_last=True), cl, device="cpu", progress=False)
    assert RunConfig.load(cl).train.channels_last and not RunConfig.load(plain).train.channels_last
    a, b = weights(plain), weights(cl)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4  # same draws, same maths, other kernels
    assert any(not torch.equal(a[k], b[k]) for k in a)  # ... but really the other program
