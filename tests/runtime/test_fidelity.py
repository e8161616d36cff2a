"""Distribution measures of RF frames, against an independent W1 and on laws that differ."""

import numpy as np
import pytest

from edgediff.runtime.errors import InputError
from edgediff.runtime.fidelity import (chirp_linearity, envelope_w1, evm_split, evm_summary, log_spectral_distance_db,
                                       pulse_duty, wasserstein_1d)
from edgediff.train import rf


def test_w1_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.rayleigh(1.0, 20000), rng.rayleigh(1.3, 30000)
    assert abs(wasserstein_1d(a, b) - stats.wasserstein_distance(a, b)) < 2e-3


def test_same_law_is_close_and_other_law_is_far():
    rng = np.random.default_rng(1)
    q1, q2, c = rf.qpsk_frames(300, 256, rng), rf.qpsk_frames(300, 256, rng), rf.chirp_frames(300, 256, rng)
    assert log_spectral_distance_db(q1, q2) < 1.0 and log_spectral_distance_db(q1, c) > 10
    assert envelope_w1(q1, q2) < 0.01 and envelope_w1(q1, c) > 0.3


def test_chirp_linearity_separates_chirps_from_qpsk():
    rng = np.random.default_rng(2)
    assert np.nanmax(chirp_linearity(rf.chirp_frames(200, 256, rng))) < 0.02
    assert np.min(chirp_linearity(rf.qpsk_frames(200, 256, rng))) > 0.03


def test_pulse_duty_is_the_generators_pulse_length():
    frames = rf.chirp_frames(200, 256, np.random.default_rng(4))
    duration = np.round(np.random.default_rng(4).uniform(*rf.CHIRP["duration"], 200) * 256)  # its first draw
    assert np.max(np.abs(pulse_duty(frames) * 256 - duration)) <= 2
    halved = frames.copy()
    halved[:, 128:] *= 0.01  # the pulse cut off half way
    assert np.all(pulse_duty(halved) < pulse_duty(frames) + 1e-12) and np.mean(pulse_duty(halved)) < 0.6
    assert pulse_duty(np.zeros((2, 64), np.complex128)).tolist() == [0.0, 0.0]


def test_evm_summary():
    s = evm_summary(np.array([-30.0, -20.0, -10.0, -16.0]))
    assert s["median_db"] == -18.0 and s["share_below_15db"] == 0.75 and s["frames"] == 4


def test_evm_split_tells_phase_wander_from_amplitude_noise():
    rng = np.random.default_rng(3)
    d = (rng.choice([1, -1], (40, 23)) + 1j * rng.choice([1, -1], (40, 23))) / np.sqrt(2)
    k = np.arange(23)
    drift = 0.002 * (k - 11.0) ** 2  # a carrier whose frequency drifts: all of the error is slow phase
    wander = evm_split(d * np.exp(1j * drift), d)
    assert abs(wander["phase_db"] - 10 * np.log10(np.mean(drift**2))) < 1e-6
    assert wander["amplitude_db"] < -100 and wander["detrended_db"] < -100
    assert wander["phase_correlation"]["1"] > 0.8  # a slow wander: neighbours share their error
    jitter = evm_split(d * np.exp(1j * 0.05 * rng.standard_normal(d.shape)), d)  # each symbol off on its own
    assert abs(jitter["phase_correlation"]["1"]) < 0.15 and jitter["detrended_db"] > jitter["phase_db"] - 1
    noisy = evm_split(d * (1 + 0.03 * rng.standard_normal(d.shape)), d)  # amplitude alone, -30.5 dB
    assert abs(noisy["amplitude_db"] + 30.5) < 1.0 and noisy["phase_db"] < -100
    assert abs(noisy["detrended_db"] - noisy["amplitude_db"]) < 0.5  # nothing slow to take out
    with pytest.raises(InputError, match="expected one shape"):
        evm_split(d[:, :3], d[:, :3])
