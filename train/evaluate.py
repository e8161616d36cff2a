"""How good is the learned score? Compared with the exact score where the data law is known (gmm2d)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgediff.runtime.analytic import GMM2D, GaussianMixtureDenoiser
from edgediff.runtime.steps import q_sample
from edgediff.train.config import RunConfig
from edgediff.train.run import model_with_weights

#: Noise levels (abar_t) at which the learned score is judged.
ABAR_LEVELS = (0.9, 0.7, 0.5, 0.3, 0.1)


@torch.no_grad()
def gmm_score_errors(model: nn.Module, weights: dict[str, torch.Tensor], config: RunConfig, device: torch.device,
                     n: int = 8192, seed: int = 0) -> dict[str, float]:
    """Relative L2 error ||s_theta - s|| / ||s|| of the EMA network's score at several abar levels.

    Inputs are x_t ~ p_t (clean mixture samples pushed through the forward process), in the
    network's units: the mixture is scaled by the run's normalisation.
    """
    scale = config.normalisation.scale
    spec = replace(GMM2D, means=tuple(tuple(m / scale for m in mu) for mu in GMM2D.means),
                   stds=tuple(s / scale for s in GMM2D.stds))
    schedule = config.schedule
    exact = GaussianMixtureDenoiser.from_spec(schedule, spec)
    net = model_with_weights(config, weights, device)
    rng = np.random.default_rng(seed)
    errors: dict[str, float] = {}
    for level in ABAR_LEVELS:
        t = int(np.argmin(np.abs(schedule.alphas_bar - level)))
        x0, _ = spec.sample(n, rng)
        x_t = q_sample(schedule, x0, t, rng.standard_normal(x0.shape))
        s_true = exact.score(x_t, t)
        t_in = torch.full((n,), float(t), device=device)
        eps = net(torch.from_numpy(x_t.astype(np.float32)).to(device), t_in).double().cpu().numpy()
        s_net = -eps / np.sqrt(1 - schedule.alphas_bar[t])
        errors[f"{level:.1f}"] = float(np.linalg.norm(s_net - s_true) / np.linalg.norm(s_true))
    return errors


def describe_errors(errors: dict[str, Any]) -> str:
    return ", ".join(f"abar {k}: {100 * v:.1f}%" for k, v in errors.items())
