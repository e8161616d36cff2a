"""Closed-form checks of the forward process, Tweedie, score and the reverse steps."""

import numpy as np
import pytest

from edgediff.runtime import (
    GaussianDenoiser,
    InputError,
    NoiseSchedule,
    ddim_step,
    ddpm_step,
    eps_from_score,
    q_sample,
    score_from_eps,
    tweedie_x0,
)


def test_tweedie_on_standard_gaussian_is_sqrt_abar_x(schedule, rng):
    # x0 ~ N(0, 1) => x_t ~ N(0, 1) and E[x0 | x_t] = sqrt(abar_t) x_t
    prior = GaussianDenoiser(schedule, mean=[0.0], cov=[[1.0]])
    x_t = rng.standard_normal((257, 1))
    for t in range(0, schedule.T, 37):
        ab = schedule.alphas_bar[t]
        eps = eps_from_score(schedule, prior.score(x_t, t), t)
        # x_t - sqrt(1-abar) eps cancels to sqrt(abar) x_t: float64 rounding of |x_t| (~1e-16) is
        # divided by sqrt(abar) (2e4 at the cosine schedule's last step), hence the atol
        atol = 1e-15 * np.abs(x_t).max() / np.sqrt(ab)
        np.testing.assert_allclose(tweedie_x0(schedule, x_t, eps, t), np.sqrt(ab) * x_t, rtol=1e-9, atol=atol)


def test_tweedie_on_shifted_gaussian_matches_posterior_mean(schedule, rng):
    m, var = 0.7, 0.3**2
    prior = GaussianDenoiser(schedule, mean=[m], cov=[[var]])
    x_t = rng.standard_normal((64, 1)) * 2
    for t in (0, 10, 300, 999):
        ab = schedule.alphas_bar[t]
        expected = m + var * np.sqrt(ab) / (ab * var + 1 - ab) * (x_t - np.sqrt(ab) * m)
        eps = eps_from_score(schedule, prior.score(x_t, t), t)
        atol = 1e-15 * np.abs(x_t).max() / np.sqrt(ab)  # cancellation, as above
        np.testing.assert_allclose(tweedie_x0(schedule, x_t, eps, t), expected, rtol=1e-9, atol=atol)


def test_tweedie_without_noise_returns_x_t(rng):
    s = NoiseSchedule.linear(T=10, beta_start=1e-20, beta_end=1e-20)
    assert s.alphas_bar[0] == 1.0
    x = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(tweedie_x0(s, x, rng.standard_normal((5, 3)), 0), x)


def test_score_sign_and_scale(schedule, rng):
    eps = rng.standard_normal((4, 2, 8))
    t = np.array([0, 5, 500, schedule.T - 1])
    s = score_from_eps(schedule, eps, t)
    expected = -eps / np.sqrt(1 - schedule.alphas_bar[t])[:, None, None]
    np.testing.assert_allclose(s, expected, rtol=1e-15)
    np.testing.assert_allclose(eps_from_score(schedule, s, t), eps, rtol=1e-13)


def test_q_sample_moments(schedule):
    rng = np.random.default_rng(7)
    n = 200_000
    x0 = np.full((n, 1), 1.5)
    for t in (50, 400, 900):
        x_t = q_sample(schedule, x0, t, rng.standard_normal((n, 1)))
        ab = schedule.alphas_bar[t]
        std = np.sqrt(1 - ab)
        # sampling error of the mean is std/sqrt(n); allow 5 standard errors
        assert abs(x_t.mean() - np.sqrt(ab) * 1.5) < 5 * std / np.sqrt(n)
        # var of the sample variance is 2 sigma^4 / n
        assert abs(x_t.var() - (1 - ab)) < 5 * np.sqrt(2 / n) * (1 - ab)


def test_q_sample_batch_of_timesteps_equals_per_row(schedule, rng):
    x0, z = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    t = np.array([0, 17, schedule.T - 1])
    batched = q_sample(schedule, x0, t, z)
    for i in range(3):
        np.testing.assert_allclose(batched[i:i + 1], q_sample(schedule, x0[i:i + 1], int(t[i]), z[i:i + 1]))


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_mean_equals_seed_formula(schedule, rng, variance):
    x_t, eps = rng.standard_normal((6, 2, 16)), rng.standard_normal((6, 2, 16))
    t = np.array([1, 2, 100, 500, 998, schedule.T - 1])
    zero = np.zeros_like(x_t)
    mean, _ = ddpm_step(schedule, x_t, eps, t, noise=zero, variance=variance)
    b = schedule.betas[t][:, None, None]
    ab = schedule.alphas_bar[t][:, None, None]
    a = schedule.alphas[t][:, None, None]
    np.testing.assert_allclose(mean, (x_t - b / np.sqrt(1 - ab) * eps) / np.sqrt(a), rtol=1e-11, atol=1e-11)


def test_ddpm_variance_choices(schedule, rng):
    x_t, eps, z = (rng.standard_normal((2, 3)) for _ in range(3))
    t = 400
    mean, _ = ddpm_step(schedule, x_t, eps, t, noise=np.zeros_like(z))
    small, _ = ddpm_step(schedule, x_t, eps, t, noise=z, variance="small")
    large, _ = ddpm_step(schedule, x_t, eps, t, noise=z, variance="large")
    post = (1 - schedule.alphas_bar[t - 1]) / (1 - schedule.alphas_bar[t]) * schedule.betas[t]
    np.testing.assert_allclose(small - mean, np.sqrt(post) * z, rtol=1e-12)
    np.testing.assert_allclose(large - mean, np.sqrt(schedule.betas[t]) * z, rtol=1e-12)


def test_ddpm_adds_no_noise_at_t0(schedule, rng):
    x_t, eps = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    gen = np.random.default_rng(3)
    state = gen.bit_generator.state
    x_prev, x0_hat = ddpm_step(schedule, x_t, eps, 0, rng=gen)
    assert gen.bit_generator.state == state  # nothing was drawn
    np.testing.assert_allclose(x_prev, x0_hat, rtol=1e-12)  # abar_{-1} = 1: the mean is x0_hat
    # a batch mixing t = 0 and t > 0 adds noise to the t > 0 rows only
    z = rng.standard_normal((4, 2))
    mixed, _ = ddpm_step(schedule, x_t, eps, np.array([0, 0, 5, 5]), noise=z)
    quiet, _ = ddpm_step(schedule, x_t, eps, np.array([0, 0, 5, 5]), noise=np.zeros_like(z))
    np.testing.assert_array_equal(mixed[:2], quiet[:2])
    assert np.all(mixed[2:] != quiet[2:])


def test_ddpm_clip_bounds_x0_hat(schedule, rng):
    x_t, eps = 5 * rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    _, x0_hat = ddpm_step(schedule, x_t, eps, 900, noise=np.zeros((8, 2)), clip=(-1, 1))
    assert x0_hat.min() >= -1 and x0_hat.max() <= 1


def test_ddim_eta1_single_step_is_ddpm_posterior(schedule, rng):
    x_t, eps, z = (rng.standard_normal((5, 2, 8)) for _ in range(3))
    for t in (1, 250, schedule.T - 1):
        a, _ = ddim_step(schedule, x_t, eps, t, t - 1, eta=1.0, noise=z)
        b, _ = ddpm_step(schedule, x_t, eps, t, noise=z, variance="small")
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_ddim_final_step_returns_x0_hat(schedule, rng):
    x_t, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x_prev, x0_hat = ddim_step(schedule, x_t, eps, 20, -1, eta=1.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(x_prev, x0_hat, rtol=1e-13)


def test_ddim_eta0_is_deterministic_and_eq12(schedule, rng):
    x_t, eps = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    t, tp = 600, 580
    x_prev, x0_hat = ddim_step(schedule, x_t, eps, t, tp)
    ab, abp = schedule.alphas_bar[t], schedule.alphas_bar[tp]
    pred = (x_t - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    np.testing.assert_allclose(x0_hat, pred, rtol=1e-12)
    np.testing.assert_allclose(x_prev, np.sqrt(abp) * pred + np.sqrt(1 - abp) * eps, rtol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, x: ddpm_step(s, x, x[:, :1], 3, rng=np.random.default_rng(0)), "shape"),
        (lambda s, x: ddpm_step(s, x, x, 1000, rng=np.random.default_rng(0)), "outside"),
        (lambda s, x: ddpm_step(s, x, x, -1, rng=np.random.default_rng(0)), "outside"),
        (lambda s, x: ddpm_step(s, x, x, np.array([1, 2, 3]), rng=np.random.default_rng(0)), r"expected \(4,\)"),
        (lambda s, x: ddpm_step(s, x, x, 2.0, rng=np.random.default_rng(0)), "integer"),
        (lambda s, x: ddpm_step(s, x * np.nan, x, 3, rng=np.random.default_rng(0)), "x_t contains NaN"),
        (lambda s, x: ddpm_step(s, x, x * np.inf, 3, rng=np.random.default_rng(0)), "eps contains Inf"),
        (lambda s, x: ddpm_step(s, x, x, 3, noise=x, rng=np.random.default_rng(0)), "both noise and rng"),
        (lambda s, x: ddpm_step(s, x, x, 3), "neither noise nor rng"),
        (lambda s, x: ddpm_step(s, x, x, 3, noise=x[:2]), "noise has shape"),
        (lambda s, x: ddpm_step(s, x, x, 3, noise=x, variance="huge"), "variance"),
        (lambda s, x: ddim_step(s, x, x, 3, 3), "t_prev"),
        (lambda s, x: ddim_step(s, x, x, 3, -2), "outside"),
        (lambda s, x: ddim_step(s, x, x, 3, 1, eta=-0.1), "eta"),
        (lambda s, x: q_sample(s, x, 3, x.astype(np.int64)), "dtype"),
        (lambda s, x: tweedie_x0(s, x, x, 1000), "outside"),
    ],
)
def test_bad_inputs_raise_project_errors(call, match, rng):
    s = NoiseSchedule.linear()
    with pytest.raises(InputError, match=match):
        call(s, rng.standard_normal((4, 2)))
