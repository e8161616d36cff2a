"""Where a run's starting weights come from (``init_from``): a run's safetensors or a bundle's model.onnx,
checked against the run's network, schedule and target, grown where the run adds level attention, and
the units (normalisation) the run's frames take from them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from torch import nn

from edgediff.runtime.bundle import Bundle
from edgediff.runtime.errors import InputError
from edgediff.train import checkpoint
from edgediff.train.bundle_weights import is_bundle, learnt_from, weights_from_bundle
from edgediff.train.config import RunConfig
from edgediff.train.models import build_model, config_from_dict, config_to_dict

log = logging.getLogger(__name__)


def load_init(model: nn.Module, path: str, config: RunConfig) -> RunConfig:
    """Load the starting weights: a safetensors file (a run's), or a bundle (its model.onnx, proved on
    its reference). Where they learnt this run's data set (a later stage of the same prior), the
    normalisation they learnt is kept, whatever a new draw of the data would give; where they learnt
    another (a shipped prior fine-tuned on your recordings, one prior started from another), the frames
    keep this run's own normalisation, unit RMS as the weights learnt theirs, whatever units the new data
    come in. A U-Net with ``attn_levels`` may start from the same network without them: it is grown (the
    new attention starts as the identity, so the grown network computes what the weights computed)."""
    if _grows(path, config):
        return _grow(model, path, config)
    if is_bundle(path):
        _check_bundle_fits(path, config)
        weights = weights_from_bundle(path, model)
    else:
        weights = checkpoint.load_weights(Path(path))
    theirs = learnt_from(path)  # (normalisation, data) the weights learnt, where known
    if theirs is not None and theirs[0] != config.normalisation:
        if _same_data(theirs[1], config):
            log.info("init_from %s: keeping the normalisation its weights learnt %s", path, theirs[0])
            config = replace(config, normalisation=theirs[0])
        else:
            log.info("init_from %s: its weights learnt %s, this run trains on %s: keeping this run's own "
                     "normalisation %s", path, _data_name(theirs[1]), _data_name(config.data.to_dict()),
                     config.normalisation)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"init_from {path}: weights do not fit this model ({first}); use a run with the same model") from None
    return config


def _data_name(data: dict | None) -> str:
    if not data:
        return "data it does not record"
    return str(data.get("path") or data.get("dataset"))


def _same_data(theirs: dict | None, config: RunConfig) -> bool:
    """Whether weights that learnt ``theirs`` (a manifest's or run's data record) learnt this run's data
    set: the same built-in, or the same file. A record that does not say counts as the same (bundles
    from before the record kept their units)."""
    if not theirs:
        return True
    ours = config.data
    if ours.path or theirs.get("path"):
        return bool(ours.path and theirs.get("path")) and Path(ours.path).resolve() == Path(theirs["path"]).resolve()
    return theirs.get("dataset") == ours.dataset


def _grows(path: str, config: RunConfig) -> bool:
    """Whether ``path`` holds this U-Net without its level attention (to be grown), not the U-Net itself."""
    if not getattr(config.model, "attn_levels", ()):
        return False
    if is_bundle(path):
        return not Bundle.open(path).manifest["model"]["config"].get("attn_levels")
    return not any(name.startswith("level_attn.") for name in checkpoint.weight_names(Path(path)))


def _grow(model: nn.Module, path: str, config: RunConfig) -> RunConfig:
    base_config = replace(config, model=replace(config.model, attn_levels=()))
    base = build_model(base_config.model)
    base_config = load_init(base, path, base_config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("level_attn.") for name in missing), (missing, unexpected)
    log.info("init_from %s: grown by attention at levels %s (%d new parameters, starting as the identity)",
             path, list(config.model.attn_levels), sum(model.state_dict()[name].numel() for name in missing))
    return replace(config, normalisation=base_config.normalisation)


def _check_bundle_fits(path: str, config: RunConfig) -> None:
    """A bundle to train on must share the run's network, schedule and target: say which option differs."""
    manifest = Bundle.open(path).manifest
    # through the config class: fields newer than the bundle read as their defaults
    theirs = {"model": config_to_dict(config_from_dict(manifest["model"]["config"])),
              "schedule": manifest["schedule"]["fingerprint"],
              "prediction": manifest["model"].get("trained_prediction", "eps")}
    ours = {"model": config_to_dict(config.model), "schedule": config.schedule.fingerprint(),
            "prediction": config.train.prediction}
    network, levels = theirs["model"], theirs["model"].get("attn_levels")
    described = f"{network.get('kind')}, width {network.get('base_width', network.get('width'))}"
    if levels:
        described += f", attention at levels {','.join(map(str, levels))}"
    hints = {"model": f"--model/--width{'/--attn-levels' if levels else ''} as the bundle's ({described})",
             "schedule": f"--schedule {manifest['schedule'].get('kind')} --T {manifest['schedule'].get('T')}",
             "prediction": f"--prediction {theirs['prediction']}"}
    for key in ("model", "schedule", "prediction"):
        if theirs[key] != ours[key]:
            raise InputError(f"init_from {path}: the bundle's {key} differs from this run's; pass {hints[key]}")
