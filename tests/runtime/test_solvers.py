"""DPM-Solver++(2M) and UniPC: parity with diffusers (the oracle), and an exact Gaussian prior.

diffusers' schedulers cast their tables and samples to float32 (``torch.tensor(betas, float32)``,
``sample.to(torch.float32)``). To compare at float64 rounding, the test runs the scheduler module
with a ``torch`` whose ``float32`` is float64 and replaces its sigma table (built in numpy float32)
by the same formula in float64. The algorithm code is diffusers' own, untouched.
"""

import types

import numpy as np
import pytest

from edgediff.runtime import GaussianMixtureDenoiser, NoiseSchedule, sample, timesteps
from edgediff.runtime.analytic import GaussianDenoiser

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def float64_module(module):
    """A stand-in for ``torch`` inside one scheduler module: float32 means float64 there."""
    proxy = types.ModuleType("torch64")
    proxy.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    proxy.float32 = torch.float64
    return proxy


def oracle(kind: str, schedule: NoiseSchedule, ts: np.ndarray, x_T: np.ndarray, eps_fn, monkeypatch) -> np.ndarray:
    from diffusers.schedulers import scheduling_dpmsolver_multistep as dpm
    from diffusers.schedulers import scheduling_unipc_multistep as uni

    module = dpm if kind == "dpmpp2m" else uni
    monkeypatch.setattr(module, "torch", float64_module(module))
    common = dict(num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(), solver_order=2,
                  prediction_type="epsilon", lower_order_final=True, final_sigmas_type="zero")
    if kind == "dpmpp2m":
        sched = dpm.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)
    else:
        sched = uni.UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, timestep_spacing="trailing", **common)
    if kind == "dpmpp2m":
        sched.set_timesteps(timesteps=ts.tolist())
    else:  # UniPC takes no explicit timesteps: set its tables, then put the same steps in place
        sched.set_timesteps(len(ts))
        sched.timesteps = torch.from_numpy(ts.copy())
    abar = schedule.alphas_bar[ts]
    sched.sigmas = torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0))  # the float32 table, in float64
    x = torch.from_numpy(x_T.copy())
    for t in sched.timesteps:
        eps = torch.from_numpy(eps_fn(x.numpy(), int(t)))
        x = sched.step(eps, t, x).prev_sample
    return x.numpy()


@pytest.mark.parametrize("kind", ["dpmpp2m", "unipc"])
@pytest.mark.parametrize("schedule_kind, steps", [("linear", 10), ("cosine", 15), ("linear", 20), ("cosine", 5)])
def test_matches_diffusers_in_float64(kind, schedule_kind, steps, monkeypatch):
    schedule = NoiseSchedule.linear() if schedule_kind == "linear" else NoiseSchedule.cosine()
    gmm = GaussianMixtureDenoiser.from_spec(schedule)
    x_T = np.random.default_rng(0).standard_normal((64, 2))
    ts = timesteps(schedule.T, steps, "trailing")

    def eps_fn(x, t):  # the exact epsilon in float64
        return -np.sqrt(1 - schedule.alphas_bar[t]) * gmm.score(x, np.full(len(x), t))

    ours = sample(gmm, schedule, (64, 2), method=kind, steps=steps, rng=np.random.default_rng(0))
    assert ours.nfe == steps
    # drive our solver with float64 eps too (the public sample() casts to float32 at the engine boundary)
    from edgediff.runtime import solvers

    fn = solvers.dpmpp2m if kind == "dpmpp2m" else solvers.unipc
    mine = fn(eps_fn, schedule.alphas_bar, ts, x_T.copy())
    theirs = oracle(kind, schedule, ts, x_T, eps_fn, monkeypatch)
    rel = np.linalg.norm(mine - theirs) / np.linalg.norm(theirs)
    assert rel < 1e-10, rel
    # through the float32 engine boundary: close, not identical (the cosine schedule's first x0_hat
    # multiplies eps error by 1 / sqrt(abar_999) ~ 2e4, so judge the median and the worst separately)
    diff = np.abs(ours.x - mine)
    assert np.median(diff) < 1e-4 and diff.max() < 1e-2, (np.median(diff), diff.max())


@pytest.mark.parametrize("kind, tol", [("dpmpp2m", 0.08), ("unipc", 0.03)])
def test_exact_gaussian_prior_mean_and_variance_at_10_nfe(kind, tol):
    """x0 ~ N(mu, diag(s^2)) with the exact eps. An exact ODE solve to the last visited step t_n
    followed by the final jump to sigma = 0 (x0_hat = E[x0 | x_tn]) gives mean mu and std
    s^2 / sqrt(s^2 + sigma_n^2) with sigma_n^2 = (1 - abar_tn) / abar_tn; what remains is the
    solver's discretisation error at 10 NFE, bounded by ``tol`` (measured: UniPC <= 0.01, DPM-Solver++
    <= 0.07 on the wide coordinate with the cosine schedule)."""
    schedule = NoiseSchedule.cosine()
    mu, std = np.array([1.5, -0.7]), np.array([0.3, 2.0])
    g = GaussianDenoiser(schedule, mu, np.diag(std**2))
    n = 20000
    res = sample(g, schedule, (n, 2), method=kind, steps=10, rng=np.random.default_rng(1))
    t_last = timesteps(schedule.T, 10, "trailing")[-1]
    sigma2 = (1 - schedule.alphas_bar[t_last]) / schedule.alphas_bar[t_last]
    predicted = std / np.sqrt(std**2 + sigma2)
    assert np.all(np.abs(res.x.mean(axis=0) - mu) < 5 * std / np.sqrt(n) + 0.01 * std)
    assert np.all(np.abs(res.x.std(axis=0) / std - predicted) < tol), (res.x.std(axis=0) / std, predicted)
    finer = sample(g, schedule, (n, 2), method=kind, steps=40, rng=np.random.default_rng(1))
    predicted40 = std / np.sqrt(std**2 + (1 - schedule.alphas_bar[24]) / schedule.alphas_bar[24])
    assert np.all(np.abs(finer.x.std(axis=0) / std - predicted40) < 0.03)  # the error shrinks with steps


@pytest.mark.parametrize("schedule_kind, steps", [("linear", 10), ("cosine", 20), ("cosine", 5)])
def test_sde_dpmpp2m_matches_diffusers_step_for_step_given_the_same_noise(schedule_kind, steps, monkeypatch):
    """diffusers' DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++") with the noise injected
    (its ``variance_noise``), in float64 as above: the same states after every step."""
    from diffusers.schedulers import scheduling_dpmsolver_multistep as dpm

    from edgediff.runtime import solvers

    schedule = NoiseSchedule.linear() if schedule_kind == "linear" else NoiseSchedule.cosine()
    gmm = GaussianMixtureDenoiser.from_spec(schedule)
    rng = np.random.default_rng(3)
    x_T = rng.standard_normal((32, 2))
    zs = [rng.standard_normal((32, 2)) for _ in range(steps)]
    ts = timesteps(schedule.T, steps, "trailing")

    def eps_fn(x, t):
        return -np.sqrt(1 - schedule.alphas_bar[t]) * gmm.score(x, np.full(len(x), t))

    mine_states = []
    draws = iter(zs)
    mine = solvers.sde_dpmpp2m(eps_fn, schedule.alphas_bar, ts, x_T.copy(), lambda shape: next(draws),
                               callback=lambda i, t, x, x0: mine_states.append(x.copy()))
    monkeypatch.setattr(dpm, "torch", float64_module(dpm))
    sched = dpm.DPMSolverMultistepScheduler(num_train_timesteps=schedule.T, trained_betas=schedule.betas.tolist(),
                                            solver_order=2, prediction_type="epsilon", algorithm_type="sde-dpmsolver++",
                                            solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(timesteps=ts.tolist())
    abar = schedule.alphas_bar[ts]
    sched.sigmas = torch.from_numpy(np.append(np.sqrt((1 - abar) / abar), 0.0))
    x = torch.from_numpy(x_T.copy())
    for i, t in enumerate(sched.timesteps):
        np.testing.assert_allclose(x.numpy(), mine_states[i], rtol=1e-10, atol=1e-12)  # step for step
        eps = torch.from_numpy(eps_fn(x.numpy(), int(t)))
        x = sched.step(eps, t, x, variance_noise=torch.from_numpy(zs[i])).prev_sample
    rel = np.linalg.norm(mine - x.numpy()) / np.linalg.norm(x.numpy())
    assert rel < 1e-10, rel


def test_sde_dpmpp2m_samples_an_exact_gaussian_prior():
    from edgediff.runtime.analytic import GaussianDenoiser

    schedule = NoiseSchedule.cosine()
    d = GaussianDenoiser(schedule, mean=[1.0, -2.0], cov=np.diag([0.25, 4.0]))
    x = sample(d, schedule, (20000, 2), method="sde-dpmpp2m", steps=20, rng=np.random.default_rng(0)).x
    np.testing.assert_allclose(x.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(x.std(axis=0), [0.5, 2.0], rtol=0.05)
