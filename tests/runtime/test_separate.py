"""Separation with two priors: the sum operator's closed forms, the Gaussian posterior mean, powers."""

import numpy as np
import pytest

from edgediff.runtime import NoiseSchedule
from edgediff.runtime.analytic import GaussianDenoiser
from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import travel_order
from edgediff.runtime.inverse.operators import Matrix
from edgediff.runtime.inverse.separate import (Amplitudes, SumOperator, lmmse_separation, restart_calls, separate,
                                               source_amplitudes)

L = 16
N = 2 * L


def toeplitz(c):
    i = np.arange(N)
    return c[np.abs(i[:, None] - i[None])]


def gaussian_pair(schedule, floor=1e-3):
    k = np.arange(N)
    cov_s = toeplitz(np.exp(-(k**2) / 8.0))
    cov_b = toeplitz(0.8 * np.cos(0.9 * k) * np.exp(-k / 6.0))
    w, v = np.linalg.eigh(cov_b)
    cov_b = (v * np.maximum(w, floor)) @ v.T
    w, v = np.linalg.eigh(cov_s)
    cov_s = (v * np.maximum(w, floor)) @ v.T
    return (GaussianDenoiser(schedule, np.zeros(N), cov_s, (2, L)), GaussianDenoiser(schedule, np.zeros(N), cov_b, (2, L)),
            cov_s, cov_b)


def test_sum_operator_against_its_matrix():
    op = SumOperator((2, L), 0.7, 1.9)
    A = np.concatenate([0.7 * np.eye(N), 1.9 * np.eye(N)], axis=1)  # acting on the flattened (s, b)
    dense = Matrix(A, (4, L))
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((3, 4, L)), rng.standard_normal((3, 2, L))
    np.testing.assert_allclose(op.forward(z).reshape(3, -1), dense.forward(z), atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y), dense.adjoint(y.reshape(3, -1)), atol=1e-12)
    np.testing.assert_allclose(op.pinv(y), dense.pinv(y.reshape(3, -1)), atol=1e-12)
    for c in (0.0, 0.3, 5.0):  # DiffPIR's data step: argmin ||y - A z||^2 + c ||z - z0||^2
        np.testing.assert_allclose(op.proximal(z, y, c), dense.proximal(z, y.reshape(3, -1), c), atol=1e-10)
    # the residual is split between the sources in proportion to their amplitudes
    split = op.pinv(y)
    np.testing.assert_allclose(split[:, :2] / 0.7, split[:, 2:] / 1.9, atol=1e-12)


def gaussian_mixtures(sigma=0.1):
    """Four mixtures of the Gaussian pair's draws and their exact posterior: (ds, db, cov_s, cov_b, y,
    E[s | y], its covariance)."""
    ds, db, cov_s, cov_b = gaussian_pair(NoiseSchedule.cosine(T=200))
    rng = np.random.default_rng(0)
    s = rng.multivariate_normal(np.zeros(N), cov_s, 4)
    b = rng.multivariate_normal(np.zeros(N), cov_b, 4)
    y = (s + b + sigma * rng.standard_normal(s.shape)).reshape(4, 2, L)
    gain = np.linalg.solve(cov_s + cov_b + sigma**2 * np.eye(N), cov_s).T
    return ds, db, cov_s, cov_b, y, (y.reshape(4, -1) @ gain.T).reshape(4, 2, L), cov_s - gain @ cov_s


def test_averaged_joint_separation_approaches_the_gaussian_posterior_mean():
    """With exact Gaussian priors, E[s | y] = S_s (S_s + S_b + sigma^2 I)^-1 y. The mean of K joint
    posterior samples differs from it by Monte Carlo error (K = 300 gives sqrt(tr C_post / K) / ||E||,
    about 0.02 here) plus the method's own bias (DDNM+/DiffPIR are approximate posterior samplers:
    measured 0.03 / 0.05 at 200 steps with 400 samples). Bound: 3 x MC + 0.06; y / 2 is at 0.56."""
    sigma = 0.1
    ds, db, cov_s, cov_b, y, posterior, post_cov = gaussian_mixtures(sigma)
    k = 300
    mc = np.sqrt(4 * np.trace(post_cov) / k) / np.linalg.norm(posterior)
    for method in ("joint-ddnm", "joint-diffpir"):
        res = separate(ds, db, y, sigma, Amplitudes(1.0, 1.0, "given"), method=method, steps=200, samples=k, seed=1)
        err = np.linalg.norm(res.soi - posterior) / np.linalg.norm(posterior)
        assert err < 3 * mc + 0.06, (method, err, mc)
        np.testing.assert_allclose(res.soi + res.interference, y, atol=0.5)  # the sources add up to the mixture
    # the LMMSE separation is exactly this posterior mean
    np.testing.assert_allclose(lmmse_separation(y, sigma, Amplitudes(1.0, 1.0, ""), (np.zeros(N), cov_s),
                                                (np.zeros(N), cov_b)), posterior, atol=1e-10)


def test_time_travel_brings_few_step_joint_samples_nearer_the_gaussian_posterior():
    """At 20 steps joint DDNM+'s samples are biased away from the exact posterior (the mean of 300 sits
    0.11 from E[s | y], relative; 0.03 at 200 steps): walking each block of 5 steps 3 more times halves
    that (measured 0.058, Monte Carlo error 0.04). The same seeds, so the gap is the method's."""
    sigma = 0.1
    ds, db, _, _, y, posterior, _ = gaussian_mixtures(sigma)
    err = {}
    for travel in ((0, 0), (5, 3)):
        res = separate(ds, db, y, sigma, Amplitudes(1.0, 1.0, "given"), method="joint-ddnm", steps=20, samples=300,
                       seed=1, travel=travel)
        err[travel] = np.linalg.norm(res.soi - posterior) / np.linalg.norm(posterior)
        assert res.nfe_per_source == 300 * len(travel_order(20, travel))
    assert err[(5, 3)] < 0.7 * err[(0, 0)], err
    with pytest.raises(InputError, match="--travel applies to joint-ddnm"):
        separate(ds, db, y, sigma, Amplitudes(1.0, 1.0, "given"), method="alpha-rgs", steps=2, travel=(5, 3))


def test_restarts_from_the_mean_bring_few_step_joint_samples_nearer_the_gaussian_posterior():
    """For Gaussian priors E[s | y] is a fixed point of a round restarted from the mean (the restarted
    samples' mean is linear in the point they restart from, and q(x_T | E[x | y]) has the mean of
    p(x_T | y)), so rounds contract what the 20-step samples' mean got wrong: 0.113 from E[s | y] (relative)
    after 300 samples, 0.062 after three rounds of 300 restarted at t = 100 of 200 (measured; Monte Carlo
    error 0.04). A round restarted from the estimate the first K samples gave is the same round: the bench
    reuses that estimate."""
    sigma = 0.1
    ds, db, _, _, y, posterior, _ = gaussian_mixtures(sigma)
    amp = Amplitudes(1.0, 1.0, "given")
    plain = separate(ds, db, y, sigma, amp, method="joint-ddnm", steps=20, samples=300, seed=1)
    again = separate(ds, db, y, sigma, amp, method="joint-ddnm", steps=20, samples=300, seed=1, restart=(100,) * 3)
    err = [np.linalg.norm(r.soi - posterior) / np.linalg.norm(posterior) for r in (plain, again)]
    assert err[1] < 0.7 * err[0], err
    assert again.nfe_per_source == 300 * (20 + 3 * 10) == 300 * restart_calls(ds.schedule, 20, (0, 0), (100, 100, 100))
    np.testing.assert_allclose(again.soi + again.interference, y, atol=0.5)
    few = separate(ds, db, y, sigma, amp, method="joint-ddnm", steps=20, samples=3, seed=1, restart=(150, 100))
    reused = separate(ds, db, y, sigma, amp, method="joint-ddnm", steps=20, samples=3, seed=1, restart=(150, 100),
                      init=separate(ds, db, y, sigma, amp, method="joint-ddnm", steps=20, samples=3, seed=1).soi)
    np.testing.assert_allclose(reused.soi, few.soi, atol=1e-9)
    assert reused.nfe_per_source == 3 * (15 + 10)
    for kwargs, match in ((dict(method="alpha-rgs", restart=(100,)), "--restart applies to joint-ddnm"),
                          (dict(restart=(100, 0)), "--restart 0: expected a timestep in 1..199"),
                          (dict(restart=(200,)), "timestep in 1..199"),
                          (dict(init=y[:, :2] * 0.5), "applies to alpha-rgs, or to joint-ddnm's restarts"),
                          (dict(restart=(100,), init=y[:2, :2]), "starting estimate has shape")):
        with pytest.raises(InputError, match=match):
            separate(ds, db, y, sigma, amp, **{"method": "joint-ddnm", "steps": 2, **kwargs})


def test_alpha_rgs_moves_from_its_start_towards_the_posterior_mean():
    schedule = NoiseSchedule.cosine(T=200)
    ds, db, cov_s, cov_b = gaussian_pair(schedule, floor=0.05)
    rng = np.random.default_rng(3)
    s = rng.multivariate_normal(np.zeros(N), cov_s, 8)
    b = rng.multivariate_normal(np.zeros(N), cov_b, 8)
    y = (s + b).reshape(8, 2, L)
    posterior = lmmse_separation(y, 1e-3, Amplitudes(1.0, 1.0, ""), (np.zeros(N), cov_s), (np.zeros(N), cov_b))
    start = y / 2
    # a step size within the smoothed priors' curvature (eigenvalues >= 0.05 here), smoothing up to 0.3 T
    res = separate(ds, db, y, 1e-3, Amplitudes(1.0, 1.0, "given"), method="alpha-rgs", steps=400, init=start,
                   lr=(0.01, 1e-4), t_range=(0.05, 0.3), seed=0)
    before = np.linalg.norm(start - posterior)
    after = np.linalg.norm(res.soi - posterior)
    assert np.isfinite(res.soi).all() and after < 0.5 * before, (before, after)
    np.testing.assert_allclose(res.soi + res.interference, y, atol=1e-12)


def test_source_powers_given_missing_or_wrong():
    y = np.random.default_rng(0).standard_normal((4, 2, 64)) * np.sqrt(0.5 * (1.0 + 4.0) / 2 * 2 / 2)
    p_y = 2 * np.mean(y**2)
    a = source_amplitudes(y, 0.0, 1.0, 1.0, soi_power=1.0, interference_power=4.0)
    assert (a.a_s, a.a_b, a.source) == (np.sqrt(0.5), np.sqrt(2.0), "given")
    a = source_amplitudes(y, 0.0, 1.0, 1.0, soi_power=0.5 * p_y)
    assert a.a_b == pytest.approx(np.sqrt(0.25 * p_y)) and "from the mixture" in a.source
    with pytest.raises(InputError, match="leaves nothing"):
        source_amplitudes(y, 0.0, 1.0, 1.0, soi_power=2 * p_y)
    with pytest.raises(InputError, match="dB off the priors' training powers"):
        source_amplitudes(100 * y, 0.0, 0.1, 0.1)
    with pytest.raises(InputError, match="finite power"):
        source_amplitudes(y, 0.0, 1.0, 1.0, soi_power=float("nan"), interference_power=1.0)
