"""Sequential Monte Carlo: exact as particles grow where the posterior is known in closed form,
weights and resampling checked on cases small enough to enumerate, bad requests refused."""

import numpy as np
import pytest

from edgediff.runtime import GMM2D, GaussianMixtureDenoiser, NoiseSchedule
from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import Problem, ddnm, dps
from edgediff.runtime.inverse.operators import Mask, Matrix, Operator
from edgediff.runtime.inverse.smc import SMCResult, _resample, smc

SCHED = NoiseSchedule.linear()
DEN = GaussianMixtureDenoiser.from_spec(SCHED, GMM2D)
W, MU, SD = np.array(GMM2D.weights), np.array(GMM2D.means), np.array(GMM2D.stds)
V = float(np.mean(np.sum(W[:, None] * (MU**2 + SD[:, None] ** 2), axis=0)))  # the mixture's variance per entry


def posterior(A, y, s):
    """The exact posterior of the mixture given y = A x + n: its mean and component weights."""
    means, logw = [], []
    for k in range(len(W)):
        S = SD[k] ** 2 * np.eye(2)
        M = A @ S @ A.T + s**2 * np.eye(len(A))
        r = y - A @ MU[k]
        logw.append(np.log(W[k]) - 0.5 * r @ np.linalg.solve(M, r) - 0.5 * np.linalg.slogdet(M)[1])
        means.append(MU[k] + S @ A.T @ np.linalg.solve(M, r))
    w = np.exp(np.array(logw) - max(logw))
    w /= w.sum()
    return (w[:, None] * np.array(means)).sum(0), w


def component_shares(x, weights):
    """The weighted share of particles nearest each component mean (posterior modes are well apart)."""
    nearest = np.argmin(((x[:, :, None, :] - MU[None, None]) ** 2).sum(-1), axis=-1)  # (B, P)
    return np.stack([[weights[b][nearest[b] == k].sum() for k in range(len(W))] for b in range(len(x))])


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    A, s = np.array([[1.0, 0.3]]), 0.1
    x, _ = GMM2D.sample(32, rng)
    y = x @ A.T + s * rng.standard_normal((32, 1))
    exact = [posterior(A, yi, s) for yi in y]
    return Problem(Matrix(A, (2,)), y, s), np.array([e[0] for e in exact]), np.array([e[1] for e in exact])


def run(problem, particles, draws=0, seed=1):
    return smc(DEN, SCHED, problem, particles=particles, steps=100, rng=np.random.default_rng(seed), draws=draws,
               prior_variance=V, model_variance=1e-4)


def test_smc_approaches_the_closed_form_posterior_as_particles_grow(case):
    problem, mean, weights = case
    err = {P: float(np.sqrt(np.mean((run(problem, P).x - mean) ** 2))) for P in (4, 256)}
    assert err[256] < 0.5 * err[4] and err[256] < 0.08, err
    draws = run(problem, 256, draws=256).x  # (B, 256, 2): unweighted draws from the final weighted particles
    shares = component_shares(draws, np.full((len(draws), 256), 1 / 256))
    assert np.mean(np.abs(shares - weights).sum(axis=1)) < 0.15  # the posterior's mode weights
    # the approximations keep their bias at any budget: the mean of 64 runs stays far off
    biased = {"ddnm": np.mean([ddnm(DEN, SCHED, problem, steps=100, eta=0.85, rng=np.random.default_rng(k)).x
                               for k in range(64)], axis=0),
              "dps": np.mean([dps(DEN, SCHED, problem, steps=100, zeta=0.3, exact=False, rng=np.random.default_rng(k)).x
                              for k in range(64)], axis=0)}
    for name, x in biased.items():
        assert np.sqrt(np.mean((x - mean) ** 2)) > 4 * err[256], name


def test_smc_on_a_mask_keeps_the_observed_coordinate_and_reports_its_cost(case):
    y = np.concatenate([case[0].y, np.zeros_like(case[0].y)], axis=1)  # the first coordinate observed
    problem = Problem(Mask(np.array([1.0, 0.0]), (2,)), y, 0.05)
    res = run(problem, 64)
    np.testing.assert_allclose(res.x[:, 0], y[:, 0], atol=0.1)
    assert res.nfe == 64 * 100 and 0 < res.ess_min <= 1 and len(res.ess_log) == 99


def test_resampling_copies_by_weight_and_leaves_healthy_frames_alone():
    logw = np.log(np.array([[0.5, 0.25, 0.25, 1e-300], [1.0, 1.0, 1.0, 1.0]]))
    result = SMCResult(np.zeros(0), 0, 0.0, ess_min=1.0)
    new, order = _resample(logw.copy(), 0.9, np.random.default_rng(0), result)
    assert result.resamplings == 1 and result.ess_min == pytest.approx(1 / (0.25 + 0.0625 * 2) / 4)
    counts = np.bincount(order[:4], minlength=4)
    assert counts[3] == 0 and counts[0] == 2 and counts[1] == counts[2] == 1  # systematic: P w rounded
    assert np.array_equal(order[4:], np.arange(4, 8)) and np.all(new[0] == 0) and np.allclose(new[1], logw[1])


def test_bad_requests_are_refused(case):
    problem = case[0]
    for particles in (0, 2.5, True):
        with pytest.raises(InputError, match="--particles"):
            smc(DEN, SCHED, problem, particles=particles, rng=np.random.default_rng(0))

    class Blurry(Operator):
        name = "blurry"

        def forward(self, x):
            return x

    with pytest.raises(InputError, match="blurry operator has none"):
        smc(DEN, SCHED, Problem(Blurry((2,)), problem.y.repeat(2, axis=1), 0.1), particles=4, rng=np.random.default_rng(0))
