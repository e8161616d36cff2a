import json
import math

import numpy as np
import pytest

from edgediff.runtime import InputError, NoiseSchedule


def test_linear_values_match_definition():
    s = NoiseSchedule.linear(T=1000, beta_start=1e-4, beta_end=0.02)
    assert s.T == 1000 and s.betas.dtype == np.float64 and s.betas.shape == (1000,)
    assert s.betas[0] == pytest.approx(1e-4, rel=1e-15) and s.betas[-1] == pytest.approx(0.02, rel=1e-15)
    np.testing.assert_allclose(s.alphas, 1 - s.betas, rtol=0, atol=0)
    np.testing.assert_allclose(s.alphas_bar, np.cumprod(1 - s.betas), rtol=1e-15)
    # the last abar of the standard linear schedule, quoted in the field notes (about 4e-5)
    assert 3e-5 < s.alphas_bar[-1] < 5e-5


def test_cosine_matches_nichol_dhariwal_formula():
    T, off = 1000, 0.008
    s = NoiseSchedule.cosine(T=T, s=off, max_beta=0.999)

    def f(t):
        return math.cos(((t / T + off) / (1 + off)) * math.pi / 2) ** 2

    for t in (1, 2, 500, 999):
        expected = min(1 - (f(t) / f(0)) / (f(t - 1) / f(0)), 0.999)
        assert s.betas[t - 1] == pytest.approx(expected, rel=1e-12)
    # unclipped steps reproduce abar(t) = f(t)/f(0) exactly
    assert s.alphas_bar[499] == pytest.approx(f(500) / f(0), rel=1e-12)
    assert s.betas.max() == pytest.approx(0.999)
    assert 1e-9 < s.alphas_bar[-1] < 5e-9  # about 2.4e-9, per the field notes


def test_arrays_are_read_only():
    s = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError):
        s.betas[0] = 0.5


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dict_round_trip_through_json(kind):
    s = NoiseSchedule.linear(T=200, beta_start=2e-4) if kind == "linear" else NoiseSchedule.cosine(T=300, s=0.01)
    d = json.loads(json.dumps(s.to_dict()))
    back = NoiseSchedule.from_dict(d)
    assert back == s and back.fingerprint() == s.fingerprint() and back.kind == kind
    np.testing.assert_array_equal(back.alphas_bar, s.alphas_bar)


def test_fingerprint_is_stable_and_value_sensitive():
    a = NoiseSchedule.linear()
    assert a.fingerprint() == NoiseSchedule.linear().fingerprint()
    assert len(a.fingerprint()) == 64
    assert a.fingerprint() != NoiseSchedule.linear(beta_end=0.0200001).fingerprint()
    assert a.fingerprint() != NoiseSchedule.cosine().fingerprint()


def test_from_dict_refuses_edited_record():
    d = NoiseSchedule.linear().to_dict()
    d["beta_end"] = 0.03
    with pytest.raises(InputError, match="fingerprint"):
        NoiseSchedule.from_dict(d)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: NoiseSchedule.linear(T=0), "T=0"),
        (lambda: NoiseSchedule.linear(T=2.5), "T=2.5"),
        (lambda: NoiseSchedule.linear(beta_start=0.0), "beta_start"),
        (lambda: NoiseSchedule.linear(beta_end=1.0), "beta_end"),
        (lambda: NoiseSchedule.linear(beta_start=0.02, beta_end=0.01), "below beta_start"),
        (lambda: NoiseSchedule.cosine(max_beta=1.5), "max_beta"),
        (lambda: NoiseSchedule.cosine(s=-1), "s=-1"),
        (lambda: NoiseSchedule.from_dict({"kind": "sigmoid"}), "unknown"),
        (lambda: NoiseSchedule.from_dict({"kind": "linear", "gamma": 1}), "do not fit"),
    ],
)
def test_invalid_parameters_raise_clear_errors(build, match):
    with pytest.raises(InputError, match=match):
        build()


def test_derived_quantities():
    s = NoiseSchedule.linear(T=50)
    assert s.alphas_bar_prev[0] == 1.0
    np.testing.assert_allclose(s.alphas_bar_prev[1:], s.alphas_bar[:-1])
    np.testing.assert_allclose(s.posterior_variance[0], 0.0, atol=0)
    np.testing.assert_allclose(s.snr, s.alphas_bar / (1 - s.alphas_bar))
