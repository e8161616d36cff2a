"""Attention at more U-Net levels (``attn_levels``): where it sits, that it starts as the identity, and
that a trained run or bundle grows into it, trains on and exports."""

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime import InputError, NoiseSchedule  # noqa: E402
from edgediff.runtime.errors import BundleError  # noqa: E402
from edgediff.train.config import RunConfig, TrainConfig  # noqa: E402
from edgediff.train.datasets import DataConfig  # noqa: E402
from edgediff.train.models import UNet1DConfig, build_model, config_from_dict, config_to_dict  # noqa: E402

pytestmark = pytest.mark.torch

TINY = UNet1DConfig(base_width=8, mults=(1, 2, 2), heads=2, norm_groups=4, emb_dim=16, length=32)


def perturbed(model):
    torch.manual_seed(1)
    for p in model.parameters():  # the U-Net zeroes its output layer (and the new projections): move them
        torch.nn.init.normal_(p, std=0.05)
    return model


def test_level_attention_follows_each_block_of_the_named_levels_and_starts_as_the_identity():
    base = perturbed(build_model(TINY))
    grown = build_model(replace(TINY, attn_levels=(0, 1)))
    # down: block L0, downsample, block L1, downsample, block L2; up: L2 x2, upsample, L1 x2, upsample, L0 x2
    assert sorted(grown.level_attn) == ["down0", "down2", "up3", "up4", "up6", "up7"]
    missing, unexpected = grown.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(name.startswith("level_attn.") for name in missing)
    x, t = torch.randn(3, 2, 32), torch.tensor([3.0, 40.0, 90.0])
    with torch.no_grad():
        assert torch.equal(grown(x, t), base(x, t))
        torch.nn.init.normal_(grown.level_attn["up6"].proj.weight, std=0.05)
        assert not torch.allclose(grown(x, t), base(x, t))


def test_a_level_the_network_lacks_is_a_clear_error_and_the_config_round_trips():
    with pytest.raises(InputError, match=r"levels are 0\.\.2"):
        build_model(replace(TINY, attn_levels=(3,)))
    grown = replace(TINY, attn_levels=(1, 2))
    assert config_from_dict(config_to_dict(grown)) == grown
    older = {k: v for k, v in config_to_dict(TINY).items() if k != "attn_levels"}  # a bundle from before the field
    assert config_from_dict(older) == TINY


def _run(steps, **train):
    return RunConfig(model=TINY, schedule=NoiseSchedule.cosine(T=100), data=DataConfig(dataset="rf-qpsk", n=128, length=32),
                     train=TrainConfig(steps=steps, batch=8, warmup=2, checkpoint_every=steps, log_every=5,
                                       prediction="v", **train))


def test_a_trained_run_and_its_bundle_grow_train_on_and_export(tmp_path):
    pytest.importorskip("onnxruntime")
    from safetensors.torch import load_file

    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle
    from edgediff.train.bundle_weights import weights_from_bundle
    from edgediff.train.loop import fit

    fit(_run(10), tmp_path / "base", device="cpu", progress=False)
    grown = replace(TINY, attn_levels=(1,))
    stage = _run(3, lr=1e-9, init_from=str(tmp_path / "base" / "weights.safetensors"))
    fit(replace(stage, model=grown), tmp_path / "grown", device="cpu", progress=False)
    a, b = load_file(str(tmp_path / "base" / "weights.safetensors")), load_file(str(tmp_path / "grown" / "weights.safetensors"))
    new = sorted(set(b) - set(a))
    assert new and all(name.startswith("level_attn.") for name in new)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # a vanishing rate keeps what it started from
    assert max(float(b[k].abs().max()) for k in new if ".proj." in k) < 1e-5  # still the identity

    manifest = export_bundle(tmp_path / "grown", tmp_path / "grown-bundle", OnnxExportOptions(max_batch=8))
    assert manifest["parity"]["passed"] and manifest["model"]["config"]["attn_levels"] == [1]
    read = weights_from_bundle(tmp_path / "grown-bundle", build_model(grown))
    assert all(np.allclose(read[k].numpy(), b[k].numpy(), atol=1e-7) for k in b)

    # a grown run trains on as itself; a base bundle grows like a base run; a different network is refused
    fit(replace(stage, model=grown, train=replace(stage.train, init_from=str(tmp_path / "grown" / "weights.safetensors"))),
        tmp_path / "on", device="cpu", progress=False)
    export_bundle(tmp_path / "base", tmp_path / "base-bundle", OnnxExportOptions(max_batch=8))
    fit(replace(stage, model=grown, train=replace(stage.train, init_from=str(tmp_path / "base-bundle"))),
        tmp_path / "from-bundle", device="cpu", progress=False)
    c = load_file(str(tmp_path / "from-bundle" / "weights.safetensors"))
    assert max(float((a[k] - c[k]).abs().max()) for k in a) < 1e-5
    with pytest.raises(InputError, match="attn-levels as the bundle's .*attention at levels 1"):  # no shrinking
        fit(replace(stage, train=replace(stage.train, init_from=str(tmp_path / "grown-bundle"))), tmp_path / "shrunk",
            device="cpu", progress=False)
    with pytest.raises((InputError, BundleError), match="init_from"):
        fit(replace(stage, model=replace(grown, base_width=16)), tmp_path / "wider", device="cpu", progress=False)


def test_the_cli_grows_a_shipped_prior(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    res = subprocess.run((sys.executable, "-m", "edgediff", "train", "--dataset", "rf-qpsk", "--n", "64", "--steps", "2", "--batch", "4",
                                      "--attn-levels", "2", "--init-from", "rf-qpsk", "--out", str(out), "--quiet",
                                      "--device", "cpu"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "config.json").read_text())["model"]["attn_levels"] == [2]
    assert json.loads((out / "summary.json").read_text())["final_loss"] < 0.1  # trained weights, not a random start
