"""Shared fixtures. Every random draw in the suite comes from a seeded Generator."""

from __future__ import annotations

import numpy as np
import pytest

from edgediff.runtime import GMM2D, GaussianMixtureDenoiser, NoiseSchedule


@pytest.fixture(params=["linear", "cosine"])
def schedule(request: pytest.FixtureRequest) -> NoiseSchedule:
    return NoiseSchedule.linear() if request.param == "linear" else NoiseSchedule.cosine()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def gmm_linear() -> GaussianMixtureDenoiser:
    return GaussianMixtureDenoiser.from_spec(NoiseSchedule.linear(), GMM2D)
