"""A finished (or interrupted) run directory, read back: config plus the EMA weights in its model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgediff.runtime.errors import BundleError
from edgediff.train.checkpoint import load_weights
from edgediff.train.config import RunConfig
from edgediff.train.models import build_model
from edgediff.train.objective import EpsilonView


def model_with_weights(config: RunConfig, weights: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> nn.Module:
    """The run's network holding ``weights``, as an epsilon network whatever its training target."""
    model = build_model(config.model)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"weights do not fit the {config.model.kind} in config.json ({first}); re-train or fix the run") from None
    if config.train.prediction != "eps":
        model = EpsilonView(model, config.schedule, config.train.prediction)
    return model.to(device).eval()


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[RunConfig, nn.Module]:
    """The run's config and its model holding the EMA weights (``weights.safetensors``), in eval mode."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BundleError(f"{run_dir}: no such run directory")
    config = RunConfig.load(run_dir)
    return config, model_with_weights(config, load_weights(run_dir / "weights.safetensors"), device)
