"""The radar-rd generator: shapes, determinism, the stated SNR of a target in its cell, clutter on the ridge."""

import numpy as np

from edgediff.runtime.radar import maps_from_chirps
from edgediff.train.datasets import DataConfig, builtin, held_out
from edgediff.train.radar import RADAR, radar_frames_with_truth


def test_maps_are_iq_channels_reproducible_from_the_seed():
    a, b = builtin("radar-rd", 8, 16, seed=3), builtin("radar-rd", 8, 16, seed=3)
    assert a.shape == (8, 2, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, builtin("radar-rd", 8, 16, seed=4))
    other = held_out(DataConfig(dataset="radar-rd", n=8, length=16, seed=3), 8)
    assert not np.array_equal(a, other)  # held-out frames differ from the training frames


def test_targets_sit_in_their_cells_at_the_stated_snr():
    params = dict(RADAR, targets=(1, 1), clutter_prob=0.0, snr_db=(30.0, 30.0), range=(0.25, 0.25), doppler=(0.125, 0.125))
    chirps, maps, truth = radar_frames_with_truth(64, 32, np.random.default_rng(0), params)
    np.testing.assert_allclose(maps, maps_from_chirps(chirps))
    assert all(cells == [(20, 24)] for cells in truth.cells)  # f_d 0.125 -> 16 + 4, f_r 0.25 -> 16 + 8
    power = np.abs(maps) ** 2
    snr = 10 * np.log10(power[:, 20, 24].mean())  # target on a bin: all its energy in one cell, noise 1 per cell
    assert abs(snr - 30.0) < 0.2
    rest = np.delete(power.reshape(64, -1), 20 * 32 + 24, axis=1)
    assert abs(rest.mean() - 1.0) < 0.05  # unit noise per cell: the map is unitary


def test_clutter_is_a_ridge_at_zero_doppler():
    params = dict(RADAR, targets=(1, 1), clutter_prob=1.0, snr_db=(5.0, 5.0), clutter_cnr_db=(20.0, 20.0))
    _, maps, _ = radar_frames_with_truth(32, 32, np.random.default_rng(1), params)
    power = (np.abs(maps) ** 2).mean(axis=(0, 2))  # per Doppler row
    assert 10 * np.log10(power[16] / np.median(power)) > 15  # the DC-centred zero-Doppler row carries the clutter
