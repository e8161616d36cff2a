"""Shared fixtures. Every random draw in the suite comes from a seeded Generator."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.runtime import GMM2D, GaussianMixtureDenoiser, NoiseSchedule


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files holding a test marked slow run first (`make test` hands out whole files, in this order,
    to its workers): the longest work starts early and the short files fill in at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: collection order within each part


@pytest.fixture(params=["linear", "cosine"])
def schedule(request: pytest.FixtureRequest) -> NoiseSchedule:
    return NoiseSchedule.linear() if request.param == "linear" else NoiseSchedule.cosine()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gmm_linear() -> GaussianMixtureDenoiser:
    return GaussianMixtureDenoiser.from_spec(NoiseSchedule.linear(), GMM2D)


# ---- tiny real runs and bundles, trained once per session --------------------------------------------

def _train(tmp_path_factory, name, model, dataset, steps, schedule=None, length=32):
    pytest.importorskip("torch")
    from edgediff.train.config import RunConfig, TrainConfig
    from edgediff.train.datasets import DataConfig
    from edgediff.train.loop import fit

    run = tmp_path_factory.mktemp("runs") / name
    config = RunConfig(
        model=model, schedule=schedule or NoiseSchedule.linear(T=100),
        data=DataConfig(dataset=dataset, n=1024, length=length, seed=0, normalise="none" if dataset == "gmm2d" else "rms"),
        train=TrainConfig(steps=steps, batch=64, lr=3e-3, warmup=10, seed=0, checkpoint_every=steps, log_every=10),
    )
    fit(config, run, device="cpu", progress=False)
    return run


@pytest.fixture(scope="session")
def unet_run(tmp_path_factory):
    from edgediff.train.models import UNet1DConfig

    model = UNet1DConfig(base_width=8, mults=(1, 2), heads=2, norm_groups=4, emb_dim=16)
    return _train(tmp_path_factory, "unet", model, "rf-qpsk", 60)


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    from edgediff.train.models import MLPConfig

    return _train(tmp_path_factory, "mlp", MLPConfig(width=64, depth=2, emb_dim=16), "gmm2d", 300)


def _export(tmp_path_factory, run, name, **kw):
    pytest.importorskip("onnx")
    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundles") / name
    export_bundle(run, out, OnnxExportOptions(max_batch=16, **kw))
    return out


@pytest.fixture(scope="session")
def unet_bundle(tmp_path_factory, unet_run):
    return _export(tmp_path_factory, unet_run, "unet", fp16=True)


@pytest.fixture(scope="session")
def mlp_bundle(tmp_path_factory, mlp_run):
    return _export(tmp_path_factory, mlp_run, "mlp")


@pytest.fixture(scope="session")
def radar_bundle(tmp_path_factory):
    """A tiny 2D U-Net on 16 x 16 radar maps, trained and exported through the CLI."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("radar")

    def edgediff(*args):
        res = subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr

    edgediff("train", "--dataset", "radar-rd", "--n", "64", "--sigmf-frame", "16", "--width", "8", "--T", "100",
             "--steps", "20", "--batch", "8", "--checkpoint-every", "20", "--device", "cpu", "--quiet", "--out", root / "run")
    edgediff("export", "onnx", root / "run", "--out", root / "bundle", "--max-batch", "8")
    return root / "bundle"
