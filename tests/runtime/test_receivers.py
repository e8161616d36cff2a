"""The PSK receivers on frames whose truth is known: EVM against theory, error counts, noise."""

import numpy as np
import pytest

from edgediff.runtime.errors import InputError
from edgediff.runtime.receivers import PskFormat, blind_receive, genie_receive, gray_bits, rrc_taps
from edgediff.train import rf

FMT = rf.psk_format(rf.QPSK)


def test_rrc_pulse_is_unit_energy_and_nyquist_after_matching():
    taps = rrc_taps(8, 0.35, 8)
    assert len(taps) == 65 and abs(np.sum(taps**2) - 1) < 1e-12
    rc = np.convolve(taps, taps)  # raised cosine: 1 at the centre, ~0 at other symbol instants
    centre = len(rc) // 2
    assert abs(rc[centre] - 1) < 1e-9
    assert np.max(np.abs(rc[centre % 8::8][np.arange(len(rc[centre % 8::8])) != centre // 8])) < 0.02


def test_clean_frames_decode_without_error():
    x, truth = rf.qpsk_frames_with_truth(64, 256, np.random.default_rng(0), snr_db=(np.inf, np.inf))
    genie = genie_receive(x, truth, FMT)
    assert genie.ser == 0 and genie.ber == 0 and genie.symbols_scored.min() >= 23
    blind = blind_receive(x, FMT)
    assert np.median(blind.evm_db) < -33  # the truncated RRC pulse's own ISI floor is about -36 dB
    np.testing.assert_allclose(blind.cfo, truth.cfo, atol=2e-4)


@pytest.mark.parametrize("params", [rf.QPSK, rf.QPSK_FAST], ids=["rf-qpsk", "rf-qpsk-fast"])
def test_blind_timing_finds_every_generator_frame(params):
    # the data the priors are judged against: every frame's sampling phase is the truth's, so every
    # frame decodes (the most-energy phase was a sample off on about 1 % of these, at -14.5 dB EVM)
    fmt = rf.psk_format(params)
    x, truth = rf.qpsk_frames_with_truth(2048, 256, np.random.default_rng(12345), params)
    blind = blind_receive(x, fmt)
    assert np.array_equal(blind.timing, truth.peaks[:, 0] % fmt.samples_per_symbol)
    assert blind.evm_db.max() < -15, np.sort(blind.evm_db)[-5:]
    np.testing.assert_allclose(blind.cfo, truth.cfo, atol=5e-4)


@pytest.mark.parametrize("snr_db", [10.0, 16.0])
def test_evm_at_a_set_snr_matches_theory(snr_db):
    # SNR is per sample over the frame; after the unit-energy matched filter Es/N0 = SNR + 10 log10(sps)
    expected = -(snr_db + 10 * np.log10(FMT.samples_per_symbol))
    x, truth = rf.qpsk_frames_with_truth(400, 256, np.random.default_rng(1), snr_db=(snr_db, snr_db))
    genie = np.median(genie_receive(x, truth, FMT).evm_db)
    blind = np.median(blind_receive(x, FMT).evm_db)
    assert abs(genie - expected) < 0.6, (genie, expected)
    assert abs(blind - expected) < 1.0, (blind, expected)


def test_white_noise_is_far_worse_than_any_qpsk():
    noise = np.random.default_rng(2).standard_normal((200, 256, 2)) @ np.array([1, 1j])
    assert np.median(blind_receive(noise, FMT).evm_db) > -7


def test_error_counts_on_known_flips():
    x, truth = rf.qpsk_frames_with_truth(8, 256, np.random.default_rng(3), snr_db=(np.inf, np.inf))
    wrong = truth.symbols.copy()
    valid = (truth.peaks >= 32) & (truth.peaks < 256 - 32)
    k = np.argmax(valid, axis=1)  # the first scored symbol of each frame
    wrong[np.arange(8), k] = -wrong[np.arange(8), k]  # both bits flipped
    lied = type(truth)(truth.cfo, truth.phase, truth.peaks, wrong)
    res = genie_receive(x, lied, FMT)
    assert res.symbol_errors.tolist() == [1] * 8 and res.bit_errors.tolist() == [2] * 8
    assert gray_bits(np.array([1 + 1j, -1 + 1j, -1 - 1j, 1 - 1j])).tolist() == [[0, 0], [1, 0], [1, 1], [0, 1]]


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(InputError, match="expected complex"):
        blind_receive(np.zeros((2, 256)), FMT)
    with pytest.raises(InputError, match="too short"):
        blind_receive(np.zeros((2, 40), complex), FMT)
    with pytest.raises(InputError, match="invalid"):
        PskFormat(samples_per_symbol=1)
