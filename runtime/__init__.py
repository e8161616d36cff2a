"""edgediff.runtime: the numpy-only diffusion runtime (schedules, reverse steps, samplers, engines).

Imports numpy and nothing else at import time; an engine package (onnxruntime or tensorrt) is
imported only when a backend of that kind is loaded. Never imports torch or onnx.
"""

from edgediff.runtime.backends import BACKENDS, BundleDenoiser, load
from edgediff.runtime.analytic import GMM2D, GaussianDenoiser, GaussianMixtureDenoiser, MixtureSpec
from edgediff.runtime.errors import (
    BackendUnavailableError,
    BundleError,
    DataError,
    EdgediffError,
    InputError,
)
from edgediff.runtime.sampling import METHODS, SPACINGS, SampleResult, sample, timesteps
from edgediff.runtime.schedule import SCHEDULE_KINDS, NoiseSchedule
from edgediff.runtime.steps import (
    ddim_step,
    ddpm_step,
    eps_from_score,
    q_sample,
    score_from_eps,
    tweedie_x0,
)

__all__ = [
    "BACKENDS",
    "BundleDenoiser",
    "load",
    "GMM2D",
    "METHODS",
    "SCHEDULE_KINDS",
    "SPACINGS",
    "BackendUnavailableError",
    "BundleError",
    "DataError",
    "EdgediffError",
    "GaussianDenoiser",
    "GaussianMixtureDenoiser",
    "InputError",
    "MixtureSpec",
    "NoiseSchedule",
    "SampleResult",
    "ddim_step",
    "ddpm_step",
    "eps_from_score",
    "q_sample",
    "sample",
    "score_from_eps",
    "timesteps",
    "tweedie_x0",
]
