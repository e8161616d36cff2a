"""The numpy runtime against the independent torch reference, driven with identical noise."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime import (  # noqa: E402
    GaussianMixtureDenoiser,
    ddim_step,
    ddpm_step,
    eps_from_score,
    q_sample,
    sample,
    score_from_eps,
    timesteps,
    tweedie_x0,
)
from edgediff.train import reference as ref  # noqa: E402

pytestmark = pytest.mark.torch


def relative(a: np.ndarray, b) -> float:
    """max |a - b| / max |b|: a normwise relative error (elementwise ratios blow up near zero)."""
    b = b.numpy() if hasattr(b, "numpy") else b
    return float(np.abs(a - b).max() / np.abs(b).max())


def exact_eps(gmm, x, t):
    return eps_from_score(gmm.schedule, gmm.score(x, t), t)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_float64_ddpm_1000_steps_agree_every_step(schedule, variance):
    gmm = GaussianMixtureDenoiser.from_spec(schedule)
    sched = ref.schedule_tensors(schedule)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((32, 2))
    x_ref = torch.from_numpy(x.copy())
    worst = 0.0
    for t in range(schedule.T - 1, -1, -1):
        z = rng.standard_normal(x.shape) if t > 0 else None
        x_new, x0 = ddpm_step(schedule, x, exact_eps(gmm, x, t), t, noise=z, variance=variance)
        eps_ref = torch.from_numpy(exact_eps(gmm, x_ref.numpy(), t))
        t_b = torch.full((32,), t)
        x_ref, x0_ref = ref.ddpm_step(sched, x_ref, eps_ref, t_b, None if z is None else torch.from_numpy(z), variance)
        worst = max(worst, relative(x_new, x_ref), relative(x0, x0_ref))
        assert relative(x_new, x_ref) < 1e-10 and relative(x0, x0_ref) < 1e-10, (t, worst)
        x = x_new
    print(f"ddpm {schedule.kind}/{variance}: worst relative difference {worst:.2e}")


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_float64_ddim_50_steps_agree_every_step(schedule, eta):
    gmm = GaussianMixtureDenoiser.from_spec(schedule)
    sched = ref.schedule_tensors(schedule)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((32, 2))
    x_ref = torch.from_numpy(x.copy())
    ts = timesteps(schedule.T, 50, "trailing")
    assert ts.tolist() == ref.spaced_timesteps(schedule.T, 50, "trailing")
    for i, t in enumerate(ts.tolist()):
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        z = rng.standard_normal(x.shape) if eta > 0 and t_prev >= 0 else None
        x_new, x0 = ddim_step(schedule, x, exact_eps(gmm, x, t), t, t_prev, eta=eta, noise=z)
        eps_ref = torch.from_numpy(exact_eps(gmm, x_ref.numpy(), t))
        x_ref, x0_ref = ref.ddim_step(sched, x_ref, eps_ref, t, t_prev, eta, None if z is None else torch.from_numpy(z))
        assert relative(x_new, x_ref) < 1e-10 and relative(x0, x0_ref) < 1e-10, t
        x = x_new


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_reference_spacing_matches_runtime(spacing):
    for n in (1, 7, 50, 999, 1000):
        assert timesteps(1000, n, spacing).tolist() == ref.spaced_timesteps(1000, n, spacing)


def test_forward_tweedie_and_score_agree(schedule):
    rng = np.random.default_rng(13)
    x0, z = rng.standard_normal((5, 2, 16)), rng.standard_normal((5, 2, 16))
    t = np.array([0, 1, 500, 998, schedule.T - 1])
    sched, t_ref = ref.schedule_tensors(schedule), torch.from_numpy(t)
    x_t = q_sample(schedule, x0, t, z)
    x_t_ref = ref.q_sample(sched, torch.from_numpy(x0), t_ref, torch.from_numpy(z))
    assert relative(x_t, x_t_ref) < 1e-14
    eps = rng.standard_normal(x0.shape)
    assert relative(score_from_eps(schedule, eps, t), ref.score_from_eps(sched, torch.from_numpy(eps), t_ref)) < 1e-14
    # Tweedie in the score form, (x_t + (1 - abar) s) / sqrt(abar), against the eps form
    assert relative(tweedie_x0(schedule, x_t, eps, t), ref.tweedie_x0(sched, torch.from_numpy(x_t), torch.from_numpy(eps), t_ref)) < 1e-10


def test_float32_ddpm_final_sample_agrees():
    """The runtime loop (float64 inside, float32 at the denoiser) against the torch float32 loop."""
    from edgediff.runtime import GaussianDenoiser, NoiseSchedule

    schedule = NoiseSchedule.linear()
    # unit-scale data: a correlated Gaussian over 2 x 8 values with unit marginal variance
    idx = np.arange(16)
    cov = np.exp(-np.abs(idx[:, None] - idx[None, :]) / 3.0)
    prior = GaussianDenoiser(schedule, np.zeros(16), cov, shape=(2, 8))

    def torch_model(x, t_float):
        return torch.from_numpy(prior(x.numpy().astype(np.float32), t_float.long().numpy()))

    ours = sample(prior, schedule, (64, 2, 8), rng=np.random.default_rng(21)).x
    theirs = ref.sample(torch_model, schedule, (64, 2, 8), np.random.default_rng(21), dtype=torch.float32).numpy()
    diff = np.abs(ours - theirs)
    print(f"float32 DDPM-1000: max |diff| {diff.max():.2e}, median {np.median(diff):.2e}")
    assert diff.max() < 1e-4
