"""The priors' recipes: stage chains, and a real (tiny) build that trains two stages and exports."""

from dataclasses import replace

import pytest

from edgediff.runtime.bundle import Bundle
from edgediff.tools import priors as p

pytestmark = pytest.mark.torch


def test_rf_qpsk_is_four_stages_of_the_best_study_variant():
    assert p.chain(p.SHIPPED["rf-qpsk"]) == ["qpsk-v-minsnr-cosine", "qpsk-stage2", "qpsk-stage3", "qpsk-stage4"]
    assert p.recipe("qpsk-v-minsnr-cosine") == p.STUDY["qpsk-v-minsnr-cosine"]
    assert all(p.recipe(n).dataset == "rf-qpsk" for n in p.chain("qpsk-stage4"))
    assert all(teacher in p.SHIPPED for teacher, _ in p.DISTILLED.values())
    assert p.chain(p.SHIPPED["rf-mix"]) == ["rf-mix", "mix-stage2"]  # its CPU stage continues the GPU run


def test_build_trains_missing_stages_then_exports(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    tiny = p.PriorRecipe("gmm2d", prediction="v", loss_weight="min-snr", schedule="linear", width=32, batch=64,
                         warmup=5, steps=20, n_frames=256, augment="none")
    monkeypatch.setattr(p, "STAGES", {"s1": tiny, "s2": replace(tiny, init="s1", steps=10)})
    monkeypatch.setattr(p, "ALL", {**p.ALL, "s1": tiny, "s2": replace(tiny, init="s1", steps=10)})
    monkeypatch.setattr(p, "SHIPPED", {"toy": "s2"})
    monkeypatch.setattr(p, "GRIDS", {"toy": p.OwnGrid("999-500:3,500-0:5", "its own grid", "sde-dpmpp2m")})
    lines: list[str] = []
    written = p.build(["toy"], tmp_path / "runs", tmp_path / "out", device="cpu", progress=False, log=lines.append)
    assert written == [tmp_path / "out" / "toy"] and (tmp_path / "out" / "toy" / "manifest.json").is_file()
    sampling = Bundle.open(tmp_path / "out" / "toy").manifest["sampling"]  # the recipe's grid, and it verifies
    assert sampling["timesteps"] == [999, 833, 666, 500, 400, 300, 200, 100] and sampling["why"] == "its own grid"
    assert sampling["method"] == "sde-dpmpp2m"  # the recipe's default sampler on it
    assert [line.split(":")[0] for line in lines] == ["s1", "s2", "toy"]
    lines.clear()
    p.build(["toy"], tmp_path / "runs", tmp_path / "out", device="cpu", progress=False, log=lines.append)
    assert lines[0] == "s1: trained (20 steps), kept" and lines[1] == "s2: trained (10 steps), kept"


def test_build_distils_a_missing_student_from_its_teacher(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    tiny = p.PriorRecipe("gmm2d", prediction="eps", loss_weight="none", schedule="linear", width=32, batch=64,
                         warmup=5, steps=20, n_frames=256, augment="none")
    monkeypatch.setattr(p, "ALL", {**p.ALL, "t1": tiny})
    monkeypatch.setattr(p, "SHIPPED", {"toy": "t1"})
    monkeypatch.setattr(p, "DISTILLED", {"toy-d4": ("toy", {"nfe": 4, "start_steps": 16, "steps_per_stage": 5, "batch": 16})})
    lines: list[str] = []
    p.build(["toy-d4"], tmp_path / "runs", tmp_path / "out", device="cpu", progress=False, log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["t1", "toy-d4", "toy-d4"]
    import json
    manifest = json.loads((tmp_path / "out" / "toy-d4" / "manifest.json").read_text())
    assert manifest["distilled"]["nfe"] == 4


def test_radar_recipe_is_what_train_builds_for_radar_maps():
    from edgediff.tools.cli.train import build_config

    r = p.recipe(p.SHIPPED["radar-rd"])
    assert p.chain(p.SHIPPED["radar-rd"]) == ["radar-rd", "radar-rd-stage2"]
    ours = p.run_config(r)
    cli = build_config("radar-rd", None, None, None, r.n_frames, None, None, None, 1000, r.steps, r.batch, r.lr,
                       r.ema, None, r.seed, 1000)
    assert ours.model == cli.model and type(ours.model).__name__ == "UNet2DConfig"
    assert ours.data.length == cli.data.length == 32 and ours.data.normalise == "rms"
    assert ours.train.augment == cli.train.augment == "none"
    assert ours.train.init_from.endswith("radar-rd/weights.safetensors")
