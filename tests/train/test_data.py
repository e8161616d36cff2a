"""Built-in datasets and the user's files (npy, npz, SigMF), including every kind of bad file."""

import json

import numpy as np
import pytest

from edgediff.runtime import DataError, InputError
from edgediff.train import datasets, rf
from edgediff.train.datasets import DataConfig
from edgediff.train.userdata import load_user_data


@pytest.mark.parametrize("name, shape", [("gmm2d", (64, 2)), ("rf-qpsk", (64, 2, 128)), ("rf-chirp", (64, 2, 128)),
                                         ("rf-mix", (64, 2, 128))])
def test_builtins_are_seeded_and_shaped(name, shape):
    a = datasets.builtin(name, 64, 128, seed=3)
    assert a.shape == shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, datasets.builtin(name, 64, 128, seed=3))
    assert not np.array_equal(a, datasets.builtin(name, 64, 128, seed=4))


def test_held_out_frames_differ_from_training_frames():
    cfg = DataConfig(dataset="rf-qpsk", n=32, length=64, seed=0)
    train, _ = datasets.load(cfg)
    held = datasets.held_out(cfg, 32)
    assert held.shape == train.shape and not np.allclose(held[0], datasets.builtin("rf-qpsk", 32, 64, 0)[0])


def test_rms_normalisation_is_recorded_and_undoable():
    x, norm = datasets.load(DataConfig(dataset="rf-chirp", n=200, length=64))
    assert norm.kind == "rms" and norm.scale > 0
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(x * norm.scale, datasets.builtin("rf-chirp", 200, 64, 0), rtol=1e-5, atol=1e-6)


def test_qpsk_frames_look_like_qpsk():
    rng = np.random.default_rng(0)
    taps = rf.rrc_taps(8, 0.35, 8)
    assert np.isclose(np.sum(taps**2), 1.0) and np.argmax(taps) == len(taps) // 2
    # RRC * RRC is a Nyquist pulse: zero crossings at multiples of the symbol period
    rc = np.convolve(taps, taps)
    centre = len(rc) // 2
    assert abs(rc[centre + 8]) < 0.01 * rc[centre] and abs(rc[centre + 16]) < 0.01 * rc[centre]
    x = rf.qpsk_frames(4, 256, rng)
    assert x.shape == (4, 256) and np.iscomplexobj(x)


def test_user_arrays_of_every_accepted_shape(tmp_path):
    rng = np.random.default_rng(1)
    cases = {
        "frames.npy": (rng.standard_normal((5, 2, 16)).astype(np.float32), (5, 2, 16)),
        "complex.npy": (rng.standard_normal((4, 16)) + 1j * rng.standard_normal((4, 16)), (4, 2, 16)),
        "points.npy": (rng.standard_normal((9, 2)), (9, 2)),
    }
    for name, (array, shape) in cases.items():
        np.save(tmp_path / name, array)
        assert load_user_data(tmp_path / name, frame=16).shape == shape
    np.savez(tmp_path / "bundle.npz", x=cases["frames.npy"][0])
    np.testing.assert_array_equal(load_user_data(tmp_path / "bundle.npz", frame=16), cases["frames.npy"][0])
    iq = load_user_data(tmp_path / "complex.npy", frame=16)
    np.testing.assert_allclose(iq[:, 0] + 1j * iq[:, 1], cases["complex.npy"][0], rtol=1e-6)


def write_sigmf(base, samples, datatype):
    from sigmf import SigMFFile

    raw = {
        "cf32_le": lambda s: np.stack([s.real, s.imag], -1).astype("<f4"),
        "ci16_le": lambda s: np.stack([s.real, s.imag], -1).astype("<i2"),
        "ci8": lambda s: np.stack([s.real, s.imag], -1).astype("i1"),
        "rf32_le": lambda s: s.real.astype("<f4"),
    }[datatype](samples)
    raw.tofile(str(base) + ".sigmf-data")
    meta = SigMFFile(data_file=str(base) + ".sigmf-data",
                     global_info={"core:datatype": datatype, "core:sample_rate": 1e6, "core:version": "1.0.0"})
    meta.add_capture(0, metadata={"core:frequency": 915e6})
    meta.tofile(str(base) + ".sigmf-meta")


@pytest.mark.parametrize("datatype, scale", [("cf32_le", 1.0), ("ci16_le", 1000.0), ("ci8", 50.0)])
def test_sigmf_recordings_are_framed(tmp_path, datatype, scale):
    pytest.importorskip("sigmf")
    rng = np.random.default_rng(2)
    n = 1000
    samples = np.round(scale * (rng.uniform(-1, 1, n) + 1j * rng.uniform(-1, 1, n)))
    if datatype == "cf32_le":
        samples = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    write_sigmf(tmp_path / "rec", samples, datatype)
    frames = load_user_data(tmp_path / "rec.sigmf-meta", frame=128, hop=64)
    assert frames.shape == ((n - 128) // 64 + 1, 2, 128)
    got = frames[:, 0] + 1j * frames[:, 1]
    # integer types are autoscaled by sigmf; compare shape of the waveform, not its units
    ratio = got[0, 5] / samples[5]
    np.testing.assert_allclose(got[1], samples[64:192] * ratio, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.npy", "no such file"),
        (lambda p: (p / "data.csv").write_text("1,2") and p / "data.csv", "unknown extension"),
        (lambda p: np.save(p / "r5.npy", np.zeros((2, 2, 2, 2, 2))) or p / "r5.npy", "rank 5"),
        (lambda p: np.save(p / "cmaps.npy", np.zeros((2, 4, 4), complex)) or p / "cmaps.npy", "complex maps"),
        (lambda p: np.save(p / "r1.npy", np.zeros(5)) or p / "r1.npy", "rank 1"),
        (lambda p: np.save(p / "nan.npy", np.array([[1.0, np.nan]])) or p / "nan.npy", "NaN or Inf"),
        (lambda p: np.save(p / "inf.npy", np.array([[1.0, np.inf]])) or p / "inf.npy", "NaN or Inf"),
        (lambda p: (p / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage-header") and p / "bad.npy", "not a readable"),
        (lambda p: np.save(p / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True) or p / "obj.npy",
         "not a readable"),
        (lambda p: np.savez(p / "two.npz", a=np.zeros((2, 2)), b=np.ones((2, 2))) or p / "two.npz", "one array"),
        (lambda p: (p / "zip.npz").write_bytes(b"PK\x03\x04broken") and p / "zip.npz", "cannot be read"),
    ],
)
def test_bad_user_files_are_clear_errors(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_user_data(make(tmp_path), frame=16)


def test_sigmf_errors(tmp_path):
    pytest.importorskip("sigmf")
    rng = np.random.default_rng(3)
    write_sigmf(tmp_path / "short", rng.standard_normal(50) + 0j, "cf32_le")
    with pytest.raises(DataError, match="too few for one frame"):
        load_user_data(tmp_path / "short.sigmf-meta", frame=128)
    write_sigmf(tmp_path / "real", rng.standard_normal(500) + 0j, "rf32_le")
    with pytest.raises(DataError, match="datatype 'rf32_le' is not supported"):
        load_user_data(tmp_path / "real.sigmf-data", frame=128)
    (tmp_path / "lonely.sigmf-meta").write_text(json.dumps({"global": {}}))
    with pytest.raises(DataError, match="needs both"):
        load_user_data(tmp_path / "lonely.sigmf-meta", frame=128)
    write_sigmf(tmp_path / "broken", rng.standard_normal(500) + 0j, "cf32_le")
    (tmp_path / "broken.sigmf-meta").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the SigMF"):
        load_user_data(tmp_path / "broken.sigmf-meta", frame=128)


def test_unknown_builtin_and_normalisation():
    with pytest.raises(InputError, match="unknown"):
        datasets.builtin("rf-ofdm", 4, 16, 0)
    with pytest.raises(InputError, match="normalise"):
        datasets.fit_normalisation(np.ones((2, 2)), "zscore")
