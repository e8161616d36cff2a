"""Whole recordings: SigMF and long .npy through reconstruct/denoise, streamed in bounded memory."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.onnx

from edgediff.train import rf  # noqa: E402


def edgediff(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_sigmf(base, z, datatype="cf32_le", annotations=(), sample_rate=2e6):
    if datatype == "ci16_le":
        iq = np.clip(np.round(np.stack([z.real, z.imag], 1) * 2**15), -2**15, 2**15 - 1).astype("<i2")
    else:
        iq = np.stack([z.real, z.imag], 1).astype("<f4")
    iq.tofile(f"{base}.sigmf-data")
    meta = {"global": {"core:datatype": datatype, "core:sample_rate": sample_rate, "core:version": "1.0.0"},
            "captures": [{"core:sample_start": 0, "core:frequency": 915e6}], "annotations": list(annotations)}
    (base.parent / f"{base.name}.sigmf-meta").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """One continuous QPSK stream (no seams of its own), clean and at 10 dB SNR."""
    d = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(4)
    clean, _ = rf.qpsk_frames_with_truth(1, 4096, rng, snr_db=(np.inf, np.inf))
    clean = 0.3 * clean[0]
    noise_std = np.sqrt(np.mean(np.abs(clean) ** 2) / 10 / 2)
    noisy = clean + noise_std * (rng.standard_normal(4096) + 1j * rng.standard_normal(4096))
    write_sigmf(d / "rec", noisy, annotations=[{"core:sample_start": 1000, "core:sample_count": 200, "core:label": "LOST"}])
    np.save(d / "rec.npy", noisy.astype(np.complex64))
    return d, clean, noisy, noise_std


def read_sigmf(base):
    meta = json.loads((base.parent / f"{base.name}.sigmf-meta").read_text())
    iq = np.fromfile(f"{base}.sigmf-data", dtype="<f4").reshape(-1, 2)
    return meta, iq[:, 0] + 1j * iq[:, 1]


def test_denoise_a_sigmf_recording_without_seams(recording, tmp_path):
    d, clean, noisy, noise_std = recording
    res = edgediff("denoise", "rf-qpsk", "--y", d / "rec.sigmf-meta", "--sigma-y", noise_std, "--steps", "20",
                   "--out", tmp_path / "out.sigmf-meta", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "4096 samples" in res.stdout and "samples/s" in res.stdout and "real time at 2e+06 Hz" in res.stdout
    meta, z = read_sigmf(tmp_path / "out")
    assert len(z) == len(noisy) and meta["global"]["core:sample_rate"] == 2e6 and meta["global"]["core:datatype"] == "cf32_le"
    assert meta["captures"] == [{"core:sample_start": 0, "core:frequency": 915e6}]
    assert meta["annotations"][0]["core:label"] == "LOST" and "edgediff" in meta["annotations"][-1]["core:generator"]
    err = np.abs(z - clean) ** 2
    power = np.mean(np.abs(clean) ** 2)
    assert 10 * np.log10(np.mean(err) / power) < 10 * np.log10(np.mean(np.abs(noisy - clean) ** 2) / power) - 3
    # frames start every 128 samples (from -128): samples within 8 of a frame edge against frame centres
    phase = np.arange(len(z)) % 128
    edge = (phase < 8) | (phase >= 120)
    centre = (phase >= 48) & (phase < 80)
    edge[:256], edge[-256:], centre[:256], centre[-256:] = False, False, False, False
    seam = 10 * np.log10(np.mean(err[edge]) / np.mean(err[centre]))
    print(f"seam: edge vs centre NMSE {seam:+.2f} dB")
    assert abs(seam) <= 1.0


def test_fill_lost_spans_from_labels_and_vectors_and_npy_in_npy_out(recording, tmp_path):
    d, clean, noisy, noise_std = recording
    res = edgediff("reconstruct", "rf-qpsk", "--y", d / "rec.sigmf-meta", "--operator", "mask", "--mask-label", "LOST",
                   "--sigma-y", noise_std, "--steps", "10", "--out", tmp_path / "a.sigmf-meta", "--quiet")
    assert res.returncode == 0, res.stderr
    mask = np.ones(len(noisy))
    mask[1000:1200] = 0
    np.save(tmp_path / "mask.npy", mask)
    res = edgediff("reconstruct", "rf-qpsk", "--y", d / "rec.npy", "--operator", "mask", "--mask", tmp_path / "mask.npy",
                   "--sigma-y", noise_std, "--steps", "10", "--out", tmp_path / "b.npy", "--quiet")
    assert res.returncode == 0, res.stderr
    b = np.load(tmp_path / "b.npy")
    assert b.shape == (4096,) and b.dtype == np.complex64 and np.isfinite(b).all()
    _, a = read_sigmf(tmp_path / "a")
    lost = slice(1000, 1200)
    # the gap is filled with signal of the right power, not zeros
    assert 0.3 < np.mean(np.abs(a[lost]) ** 2) / np.mean(np.abs(clean) ** 2) < 3
    assert 0.3 < np.mean(np.abs(b[lost]) ** 2) / np.mean(np.abs(clean) ** 2) < 3


def test_integer_recording_keeps_its_datatype_and_the_sigmf_package_reads_it(recording, tmp_path):
    sigmf = pytest.importorskip("sigmf")
    d, clean, noisy, noise_std = recording
    write_sigmf(tmp_path / "int", noisy, datatype="ci16_le")
    res = edgediff("denoise", "rf-qpsk", "--y", tmp_path / "int.sigmf-meta", "--sigma-y", noise_std, "--steps", "2",
                   "--out", tmp_path / "int-out.sigmf-meta", "--quiet")
    assert res.returncode == 0, res.stderr
    handle = sigmf.sigmffile.fromfile(str(tmp_path / "int-out.sigmf-meta"))
    handle.validate()
    assert handle.get_global_field("core:datatype") == "ci16_le"
    assert handle.get_global_field("core:sample_rate") == 2e6
    samples = handle.read_samples()
    assert len(samples) == 4096 and np.abs(samples).max() <= 1.0


@pytest.mark.parametrize("case, match", [
    ("meta-only", "needs both .sigmf-meta and .sigmf-data"),
    ("datatype", "is not a complex type edgediff reads"),
    ("mask-length", "one 0/1 value per sample"),
    ("short", "fewer than one frame"),
    ("overwrite", "is also --y"),
    ("no-label", "no annotation of the recording has that core:label"),
])
def test_bad_recordings_one_line_nothing_written(recording, tmp_path, case, match):
    d, clean, noisy, noise_std = recording
    y, extra, out = d / "rec.sigmf-meta", [], tmp_path / "out.sigmf-meta"
    if case == "meta-only":
        (tmp_path / "lonely.sigmf-meta").write_text((d / "rec.sigmf-meta").read_text())
        y = tmp_path / "lonely.sigmf-meta"
    elif case == "datatype":
        write_sigmf(tmp_path / "odd", noisy)
        meta = json.loads((tmp_path / "odd.sigmf-meta").read_text())
        meta["global"]["core:datatype"] = "ru8"
        (tmp_path / "odd.sigmf-meta").write_text(json.dumps(meta))
        y = tmp_path / "odd.sigmf-meta"
    elif case == "mask-length":
        np.save(tmp_path / "m.npy", np.ones(100))
        extra = ["--operator", "mask", "--mask", tmp_path / "m.npy"]
    elif case == "short":
        write_sigmf(tmp_path / "short", noisy[:100])
        y = tmp_path / "short.sigmf-meta"
    elif case == "overwrite":
        out = y
    elif case == "no-label":
        extra = ["--operator", "mask", "--mask-label", "NOPE"]
    argv = ["reconstruct", "rf-qpsk", "--y", y, "--sigma-y", "0.01", "--steps", "2", "--out", out, "--quiet"]
    argv += extra if extra else ["--operator", "identity"]
    res = edgediff(*argv)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and match in res.stderr, res.stderr
    if case != "overwrite":
        assert not out.exists() and not out.with_suffix(".sigmf-data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


PEAK = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "edgediff", *sys.argv[1:]], capture_output=True, text=True)
assert proc.returncode == 0, proc.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_recording(tmp_path, unet_bundle):
    """1 MB against 20 MB of samples, one step each: an implementation that held the recording (or
    its output) in memory would grow by 40-80 MB; the bound is 10 MB (measured: +2 MB). The session's
    tiny U-Net streams it (10 s here, rf-qpsk's network 25 s): the framing and I/O are under test, and
    its small activations leave any other peak in sight (the scale pass's 1 M-sample chunks: +39 MB)."""
    rng = np.random.default_rng(0)
    peaks = {}
    for name, n in (("small", 131_072), ("large", 2_621_440)):
        z = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64) * 0.3
        np.save(tmp_path / f"{name}.npy", z)
        proc = subprocess.run([sys.executable, "-c", PEAK, "denoise", str(unet_bundle), "--y", str(tmp_path / f"{name}.npy"),
                               "--sigma-y", "0.1", "--steps", "1", "--out", str(tmp_path / f"{name}-out.npy"), "--quiet"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        peaks[name] = int(proc.stdout.strip().splitlines()[-1]) / 1024  # MB
    print(f"peak RSS: 1 MB recording {peaks['small']:.1f} MB, 20 MB recording {peaks['large']:.1f} MB")
    assert peaks["large"] - peaks["small"] < 10
    assert np.load(tmp_path / "large-out.npy", mmap_mode="r").shape == (2_621_440,)
