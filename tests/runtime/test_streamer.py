"""The push-based streamer: chunking never changes the output, its latency and memory are what it says,
its running scale follows the stated rule, and it refuses what it cannot use."""

import numpy as np
import pytest

from edgediff.runtime.errors import InputError
from edgediff.runtime.stream import ReconstructionFrames, Streamer


def signal(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.7


def cut(z, sizes):
    """z in chunks of the given sizes, cycling, to the end."""
    out, i, k = [], 0, 0
    while i < len(z):
        out.append(z[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def run(streamer, chunks, masks=None):
    parts = [streamer.push(c, None if masks is None else m) for c, m in zip(chunks, masks or [None] * len(chunks))]
    return np.concatenate(parts + [streamer.flush()])


class Recorder:
    """A frame function that returns its input times a factor and records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, z, seen, b, scale):
        self.calls.append((b, len(z), scale))
        return z * (1 + 0.01 * b)  # depends on the batch index: a misplaced batch shows


@pytest.mark.parametrize("sizes", [[1], [7], [4095], [3, 1000, 1, 250]])
def test_awkward_chunks_give_exactly_one_large_pushs_output(sizes):
    z = signal(5000)
    one = run(Streamer(Recorder(), 64, batch=4, scale=None), [z])
    many = run(Streamer(Recorder(), 64, batch=4, scale=None), cut(z, sizes))
    assert len(one) == len(z) and np.array_equal(one, many)


def test_identity_frames_come_back_unchanged_and_every_sample_once():
    z = signal(3001)
    out = run(Streamer(lambda f, s, b, sc: f, 128, hop=32, batch=3), cut(z, [100]))
    np.testing.assert_allclose(out, z, rtol=0, atol=1e-12)


def test_latency_is_what_the_property_says():
    L, hop, batch = 64, 16, 5
    s = Streamer(lambda f, seen, b, sc: f, L, hop=hop, batch=batch)
    arrived_at = []
    z = signal(2000)
    for i in range(len(z)):
        arrived_at += [i] * len(s.push(z[i:i + 1]))  # output sample j appeared when input i went in
    delays = np.asarray(arrived_at) - np.arange(len(arrived_at))
    assert delays.max() == s.latency == (batch - 1) * hop + L - 1
    assert len(arrived_at) + len(s.flush()) == len(z)


def test_memory_stays_bounded_over_a_long_stream():
    L, hop, batch = 64, 32, 8
    s = Streamer(lambda f, seen, b, sc: f, L, hop=hop, batch=batch)
    most = 0
    for chunk in cut(signal(100_000), [997]):
        s.push(chunk)
        most = max(most, len(s.buf), len(s.acc))
    assert most <= batch * hop + L + 997


def test_running_scale_uses_everything_seen_up_to_each_batch():
    z = signal(20_000)
    rec = Recorder()
    run(Streamer(rec, 64, batch=4), cut(z, [333]))
    whole = np.sqrt(np.mean(np.abs(z) ** 2) / 2)
    scales = [c[2] for c in rec.calls]
    # batch b covers samples up to its last frame's end: the scale is the RMS of exactly those
    first_end = -(64 - 32) + 32 * 3 + 64
    assert scales[0] == pytest.approx(np.sqrt(np.mean(np.abs(z[:first_end]) ** 2) / 2), rel=1e-12)
    assert scales[-1] == pytest.approx(whole, rel=1e-12) and abs(scales[len(scales) // 2] / whole - 1) < 0.02
    fixed = Recorder()
    run(Streamer(fixed, 64, batch=4, scale=0.5), [z])
    assert {c[2] for c in fixed.calls} == {0.5}


def test_masks_travel_with_their_samples_and_bad_input_is_refused():
    z, m = signal(1000), (np.random.default_rng(1).random(1000) > 0.5).astype(float)
    got = []
    s = Streamer(lambda f, seen, b, sc: got.append(seen) or f, 64, batch=2, masked=True)
    run(s, cut(z, [77]), cut(m, [77]))
    flags = np.concatenate([g[:, 32:64].reshape(-1) for g in got])  # each sample once: the frames' second halves
    assert np.array_equal(flags[:len(m)], m) and not flags[len(m):].any()  # past the end: padding, unobserved
    with pytest.raises(InputError, match="push each chunk with its 0/1 mask"):
        Streamer(lambda *a: a[0], 64, masked=True).push(z)
    with pytest.raises(InputError, match="one 0/1 per sample"):
        Streamer(lambda *a: a[0], 64, masked=True).push(z, m[:10])
    bad = z.copy()
    bad[5] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        Streamer(lambda *a: a[0], 64).push(bad)
    m2 = np.ones(1000)
    m2[5] = 0
    Streamer(lambda *a: a[0], 64, masked=True).push(bad, m2)  # a lost sample may hold anything
    with pytest.raises(InputError, match="--hop"):
        Streamer(lambda *a: a[0], 64, hop=65)
    with pytest.raises(InputError, match="--scale"):
        Streamer(lambda *a: a[0], 64, scale=float("nan"))


@pytest.mark.onnx
def test_the_file_path_and_any_chunking_agree_on_a_real_prior(unet_bundle):
    pytest.importorskip("onnxruntime")
    from edgediff.runtime import load

    d = load(unet_bundle, backend="ort")
    z = signal(700, 3)
    outs = []
    for sizes in ([700], [1], [7, 40]):
        frames = ReconstructionFrames(d, 0.05, steps=3, seed=2)
        outs.append(run(Streamer(frames, frames.frame_length, batch=frames.check_batch(4), scale=0.7), cut(z, sizes)))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert np.abs(outs[0] - z).max() < 3 and np.isfinite(outs[0]).all()
    with pytest.raises(InputError, match="--batch"):
        ReconstructionFrames(d, 0.05).check_batch(10_000)
