"""Radar imaging pieces: the partial Fourier operator against its dense matrix, the CA-CFAR detector's
false-alarm rate and detections, the l1 baseline, and the refusals."""

import numpy as np
import pytest

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.baselines import fista_l1
from edgediff.runtime.inverse.methods import Problem
from edgediff.runtime.inverse.operators import PartialFourier
from edgediff.runtime.radar import Cfar, detection_rate, maps_from_chirps


def dense(op, shape):
    """The operator as a matrix, column by column on the basis of the flattened frame."""
    n = int(np.prod(shape))
    cols = [op.forward(e.reshape(1, *shape)).reshape(-1) for e in np.eye(n)]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("mask", [np.array([1, 0, 1, 1]), np.array([[1, 0, 1, 0, 1]]),
                                  (np.random.default_rng(0).random((4, 5)) < 0.6).astype(float)])
def test_partial_fourier_against_its_dense_matrix(mask):
    shape = (2, 4, 5)
    op = PartialFourier(mask, shape)
    A = dense(op, shape)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, *shape)), rng.standard_normal((3, *shape))
    np.testing.assert_allclose(op.forward(x).reshape(3, -1), x.reshape(3, -1) @ A.T, atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y).reshape(3, -1), y.reshape(3, -1) @ A, atol=1e-12)  # A^T
    np.testing.assert_allclose(op.pinv(y).reshape(3, -1), y.reshape(3, -1) @ np.linalg.pinv(A).T, atol=1e-10)
    gram = A @ A.T  # the kept chirp samples' projection (F unitary)
    ym = op.check_measurement(y)
    for c in (0.3, 2.0):
        np.testing.assert_allclose(op.solve_gram(ym, c).reshape(3, -1),
                                   np.linalg.solve(gram + c * np.eye(len(gram)), ym.reshape(3, -1).T).T, atol=1e-10)


def test_cfar_false_alarm_rate_on_noise_and_a_known_target():
    rng = np.random.default_rng(2)
    noise = (rng.standard_normal((600, 32, 32)) + 1j * rng.standard_normal((600, 32, 32))) / np.sqrt(2)
    cfar = Cfar(train=3, guard=1, pfa=1e-3)
    rate = cfar.detect(noise).mean()
    assert 0.7e-3 < rate < 1.4e-3, rate  # 614 400 cells: the set rate within its counting noise
    chirps = noise[:8].copy()
    nn, mm = np.arange(32)[:, None], np.arange(32)[None]
    chirps += np.sqrt(10 ** 2.5 / 1024) * np.exp(2j * np.pi * (6 / 32 * nn + 9 / 32 * mm))  # 25 dB, on the grid
    det = cfar.detect(maps_from_chirps(chirps))
    assert detection_rate(det, [[(16 + 6, 16 + 9)]] * 8).all()


def test_l1_recovers_a_sparse_map_from_half_its_chirps_better_than_zero_fill():
    rng = np.random.default_rng(3)
    X = np.zeros((1, 16, 16), complex)
    X[0, 3, 4], X[0, 10, 12], X[0, 7, 2] = 3.0, 2.0j, -1.5
    x = np.stack([X.real, X.imag], axis=1)
    op = PartialFourier((rng.random(16) < 0.5).astype(float), (2, 16, 16))
    y = op.forward(x) + 0.01 * op.forward(rng.standard_normal(x.shape))
    p = Problem(op, y, 0.01)

    def nmse(e):
        return 10 * np.log10(np.sum((e - x) ** 2) / np.sum(x**2))

    assert nmse(fista_l1(p, 0.05, 300)) < nmse(op.adjoint(p.y)) - 6


def test_bad_masks_and_priors_are_refused():
    with pytest.raises(InputError, match="over chirps"):
        PartialFourier(np.ones(7), (2, 4, 5))
    with pytest.raises(InputError, match="needs I/Q maps"):
        PartialFourier(np.ones(4), (2, 256))  # a 1D prior asked for an imaging operator
    with pytest.raises(InputError, match="keeps no chirp"):
        PartialFourier(np.zeros(4), (2, 4, 5))
    with pytest.raises(InputError, match="0 and 1"):
        PartialFourier(np.full(4, 0.5), (2, 4, 5))


def test_matched_threshold_declares_the_stated_share_of_background_cells():
    from edgediff.runtime.radar import background_cells, matched_threshold

    rng = np.random.default_rng(5)
    stat = rng.exponential(size=(20, 16, 16))
    targets = [[(3, 4)] for _ in range(20)]
    keep = background_cells(stat.shape, targets)
    assert not keep[:, 7:10].any() and not keep[0, 3, 4] and not keep[0, 5, 6] and keep[0, 0, 0]  # ridge rows 7..9
    assert keep.sum() == 20 * (16 * 16 - 3 * 16 - 25)  # the target's 5 x 5 neighbourhood lies off the ridge
    for pfa in (1e-3, 1e-2, 0.1):
        threshold = matched_threshold(stat, keep, pfa)
        assert (stat > threshold)[keep].sum() == int(np.floor(pfa * keep.sum()))
    zeros = np.zeros_like(stat)
    zeros[0, 0, 0] = 1.0  # an l1 map: everything exactly zero but one cell
    assert matched_threshold(zeros, keep, 0.01) == 0.0  # the zero background: only the one nonzero cell exceeds it

