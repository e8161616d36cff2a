"""The run-directory schema: structurally invalid configs are one line before any model is built."""

import json
import shutil

import pytest

pytest.importorskip("torch")

from edgediff.runtime.errors import BundleError  # noqa: E402
from edgediff.train.config import RunConfig  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["model"].update(mults=[]), "model.mults is []"),  # once an IndexError inside the constructor
    (lambda d: d["model"].update(base_width=10), "model.norm_groups"),
    (lambda d: d["model"].update(heads=3), "model.heads"),
    (lambda d: d["model"].update(length=33), "model.length"),
    (lambda d: d["model"].update(attention="yes"), "model.attention is 'yes'"),
    (lambda d: d["model"].update(extra=1), "model.extra"),
    (lambda d: d["model"].update(attn_levels=[1, 1]), "model.attn_levels is [1, 1]"),
    (lambda d: d["model"].update(attn_levels=[9]), "model.attn_levels is [9]"),
    (lambda d: d["model"].update(attn_levels=[len(d["model"]["mults"])]), "levels in 0.."),
    (lambda d: d["train"].update(batch=0), "train.batch is 0"),
    (lambda d: d["train"].update(lr=-1.0), "train.lr is -1.0"),
    (lambda d: d["train"].update(frames="disk"), "train.frames is 'disk'"),
    (lambda d: d["train"].update(steps=True), "train.steps is True"),
    (lambda d: d["data"].update(normalise="max"), "data.normalise"),
    (lambda d: d.update(normalisation={"kind": "rms", "scale": -1}), "normalisation"),
    (lambda d: d["schedule"].update(T=0), "schedule record unusable"),
    (lambda d: d.update(format=2), "format is 2"),
])
def test_bad_configs_are_named(tmp_path, unet_run, edit, match):
    run = tmp_path / "run"
    shutil.copytree(unet_run, run)
    d = json.loads((run / "config.json").read_text())
    edit(d)
    (run / "config.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=match.replace("[", r"\[").replace("]", r"\]")):
        RunConfig.load(run)


def test_oversized_and_deep_configs_are_refused(tmp_path, unet_run):
    run = tmp_path / "run"
    shutil.copytree(unet_run, run)
    (run / "config.json").write_text("[" * 100 + "]" * 100)
    with pytest.raises(BundleError, match="nested more than"):
        RunConfig.load(run)
    (run / "config.json").write_text(" " * (2 << 20))
    with pytest.raises(BundleError, match="more than the"):
        RunConfig.load(run)


def test_resume_skips_a_checkpoint_whose_state_is_invalid(tmp_path, unet_run):
    from edgediff.train.checkpoint import intact, list_checkpoints

    run = tmp_path / "run"
    shutil.copytree(unet_run, run)
    newest = list_checkpoints(run / "checkpoints")[-1]
    state = json.loads((newest / "state.json").read_text())
    state["optimizer"]["param_groups"] = [{"params": "all"}]
    (newest / "state.json").write_text(json.dumps(state))
    assert newest not in [c["path"] for c in intact(run / "checkpoints")]
