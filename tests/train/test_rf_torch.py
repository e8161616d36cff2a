"""The built-in datasets generated in torch: the same frames from the same draws, the same laws as numpy."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime.fidelity import chirp_linearity, log_spectral_distance_db  # noqa: E402
from edgediff.runtime.receivers import blind_receive  # noqa: E402
from edgediff.train import datasets, rf, rf_torch  # noqa: E402

pytestmark = pytest.mark.torch
L = 256


def complex_of(iq):
    return iq[:, 0] + 1j * iq[:, 1]


@pytest.mark.parametrize("params", [rf.QPSK, rf.QPSK_FAST])
def test_qpsk_shaping_gives_numpys_frames_from_the_same_draws(params):
    rng = np.random.default_rng(5)
    n, n_sym = 12, rf.qpsk_symbols_per_frame(L, params)
    symbols = (rng.choice([-1.0, 1.0], (n, n_sym)) + 1j * rng.choice([-1.0, 1.0], (n, n_sym))) / np.sqrt(2)
    offset = rng.integers(0, params["samples_per_symbol"], n)
    cfo, phase = rng.uniform(-0.01, 0.01, n), rng.uniform(0, 2 * np.pi, n)
    snr, noise = rng.uniform(20, 40, n), rng.standard_normal((n, L)) + 1j * rng.standard_normal((n, L))
    want = rf.add_noise(rf.qpsk_shape(symbols, offset, cfo, phase, L, params), snr, noise)
    t = torch.from_numpy
    got = rf_torch.add_noise(
        rf_torch.qpsk_shape(t(np.stack([symbols.real, symbols.imag], 1)), t(offset), t(cfo), t(phase), L, params),
        t(snr), t(np.stack([noise.real, noise.imag], 1))).numpy()
    np.testing.assert_allclose(complex_of(got), want, rtol=0, atol=1e-12)


def test_chirp_shaping_gives_numpys_frames_from_the_same_draws():
    rng = np.random.default_rng(6)
    n = 12
    duration = np.round(rng.uniform(0.5, 1.0, n) * L).astype(int)
    delay = (rng.uniform(0, 1, n) * (L - duration + 1)).astype(int)
    f0, sweep, phase0 = rng.uniform(-0.2, 0.2, n), rng.uniform(-0.3, 0.3, n), rng.uniform(0, 2 * np.pi, n)
    want = rf.chirp_shape(duration, delay, f0, sweep, phase0, L)
    f = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got = rf_torch.chirp_shape(f(duration), f(delay), f(f0), f(sweep), f(phase0), L).numpy()
    np.testing.assert_allclose(complex_of(got), want, rtol=0, atol=1e-9)


def generated(name, n, seed=0):
    gen = rf_torch.FrameGenerator(name, n, L, 1.0, "cpu")
    gen.draw(torch.Generator().manual_seed(seed))
    return gen.frames().numpy().astype(np.float64)


def test_generated_qpsk_has_numpys_law_by_the_receiver_and_the_spectrum():
    torch_frames, numpy_frames = complex_of(generated("rf-qpsk", 400)), rf.from_iq(datasets.builtin("rf-qpsk", 400, L, 3))
    evm_t, evm_n = (np.median(blind_receive(f.astype(complex)).evm_db) for f in (torch_frames, numpy_frames))
    assert evm_t < -25 and abs(evm_t - evm_n) < 1.0, (evm_t, evm_n)  # 20-40 dB SNR: median near -30 dB
    power_t, power_n = np.mean(np.abs(torch_frames) ** 2), np.mean(np.abs(numpy_frames) ** 2)
    assert power_t == pytest.approx(power_n, rel=0.03)
    control = rf.from_iq(datasets.builtin("rf-qpsk", 400, L, 4)).astype(complex)  # numpy against numpy: the noise
    lsd_t, lsd_n = (log_spectral_distance_db(f, numpy_frames.astype(complex)) for f in (torch_frames, control))
    assert lsd_t < lsd_n + 0.5, (lsd_t, lsd_n)


def test_generated_chirps_and_mix_have_numpys_law():
    chirps_t, chirps_n = complex_of(generated("rf-chirp", 2000)), rf.from_iq(datasets.builtin("rf-chirp", 2000, L, 3))
    assert np.nanmedian(chirp_linearity(chirps_t)) < 0.02
    # mean spectra of chirps converge slowly (about 1 dB between two numpy sets of 2000): judge against that
    control = rf.from_iq(datasets.builtin("rf-chirp", 2000, L, 4)).astype(complex)
    lsd_t, lsd_n = (log_spectral_distance_db(f, chirps_n.astype(complex)) for f in (chirps_t, control))
    assert lsd_t < lsd_n + 0.5, (lsd_t, lsd_n)
    mix = complex_of(generated("rf-mix", 1000))
    share = np.mean(np.nan_to_num(chirp_linearity(mix), nan=np.inf) < 0.02)
    assert abs(share - 0.5) < 0.06, share


def test_generated_gmm_has_the_mixtures_mode_shares():
    from edgediff.runtime.analytic import GMM2D

    x = generated("gmm2d", 20000)
    means = np.asarray(GMM2D.means)
    labels = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(labels, minlength=6) / len(x), GMM2D.weights, atol=0.015)


def test_a_generator_reuses_its_memory_and_follows_its_seed():
    gen = rf_torch.FrameGenerator("rf-mix", 8, L, 2.0, "cpu")
    pointers = {k: v.data_ptr() for k, v in gen.buffers.items()}
    gen.draw(torch.Generator().manual_seed(1))
    a = gen.frames().clone()
    gen.draw(torch.Generator().manual_seed(1))
    torch.testing.assert_close(gen.frames(), a, rtol=0, atol=0)
    gen.draw(torch.Generator().manual_seed(2))
    assert not torch.equal(gen.frames(), a)
    assert pointers == {k: v.data_ptr() for k, v in gen.buffers.items()}  # a graph may capture them


def test_user_data_has_no_generator():
    from edgediff.runtime.errors import InputError

    with pytest.raises(InputError, match="no generator on the device"):
        rf_torch.FrameGenerator("my-file", 8, L, 1.0, "cpu")
