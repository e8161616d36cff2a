"""GNU Radio checks, run by tests/tools/test_gnuradio.py inside the GNU Radio environment (.venv-gr:
Debian's Python, numpy and gnuradio). ``python gr_checks.py CASE BUNDLE OUTDIR`` prints one JSON line.

Each case builds a headless flowgraph (vector source, the block, vector sink) and compares the sink
with a Streamer run directly in this process on the same samples: the block must give the streamer's
output delayed by its stated latency, sample for sample."""

from __future__ import annotations

import json
import sys

import numpy as np
import pmt
from gnuradio import blocks, gr

import edgediff.tools.gnuradio as edgediff_gr
from edgediff.runtime import load
from edgediff.runtime.inverse.separate import Amplitudes
from edgediff.runtime.schedule import NoiseSchedule
from edgediff.runtime.stream import ReconstructionFrames, SeparationFrames, Streamer

N = 1500


def signal(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(N) + 1j * rng.standard_normal(N)) * 0.4).astype(np.complex64)


def direct(frames, z, mask=None, batch=2, scale=0.4) -> np.ndarray:
    s = Streamer(frames, frames.frame_length, batch=batch, scale=scale, masked=mask is not None)
    return np.concatenate([s.push(z.astype(np.complex128), mask), s.flush()]).astype(np.complex64)


def run(block, z, extra=None, tags=()):
    tb = gr.top_block()
    src = blocks.vector_source_c(z.tolist(), False, 1, list(tags))
    sink = blocks.vector_sink_c()
    tb.connect(src, (block, 0))
    if extra is not None:
        tb.connect(blocks.vector_source_f(extra.tolist(), False), (block, 1))
    tb.connect(block, sink)
    tb.run()
    return np.asarray(sink.data(), np.complex64), sink.tags()


def aligned(got, want, latency):
    return bool(np.array_equal(got[:latency], np.zeros(latency)) and np.array_equal(got[latency:], want[:len(got) - latency]))


class Counting(edgediff_gr.denoise):
    """The denoise block, counting the engine batches each work() call runs."""

    most = 0

    def _work(self, input_items, output_items):
        before = self.streamer.batches
        k = super()._work(input_items, output_items)
        Counting.most = max(Counting.most, self.streamer.batches - before)
        return k


def case_denoise(bundle):
    z = signal()
    block = Counting(bundle=bundle, backend="ort", steps=3, sigma_y=0.05, scale=0.4, batch=2)
    got, tags = run(block, z)
    want = direct(ReconstructionFrames(load(bundle, backend="ort"), 0.05, steps=3), z)
    lat = [pmt.to_long(t.value) for t in tags if pmt.symbol_to_string(t.key) == "edgediff_latency"]
    return {"aligned": aligned(got, want, block.latency), "latency_tags": lat, "latency": block.latency,
            "n": len(got), "most_batches_per_work": Counting.most}


def case_reconstruct(bundle):
    z = signal(1)
    lost = [(200, 150), (900, 40)]
    mask = np.ones(N, np.float32)
    for start, count in lost:
        mask[start:start + count] = 0
    tags = [gr.tag_utils.python_to_tag((s, pmt.intern("lost"), pmt.from_long(c), pmt.intern("test"))) for s, c in lost]
    kw = dict(bundle=bundle, backend="ort", steps=3, sigma_y=0.01, scale=0.4, batch=2)
    by_tags, _ = run(edgediff_gr.reconstruct(**kw), z, tags=tags)
    block = edgediff_gr.reconstruct(mask_input=True, **kw)
    by_input, _ = run(block, z, extra=mask)
    want = direct(ReconstructionFrames(load(bundle, backend="ort"), 0.01, steps=3), z, mask.astype(float))
    return {"tags": aligned(by_tags, want, block.latency), "input": aligned(by_input, want, block.latency)}


def case_separate(bundle):
    z = signal(2)
    block = edgediff_gr.separate(soi=bundle, interference=bundle, backend="ort", method="joint-ddnm", steps=3,
                                 sigma_y=0.01, soi_power=0.16, interference_power=0.16, batch=2)
    got, _ = run(block, z)
    d = load(bundle, backend="ort")
    frames = SeparationFrames(d, d, 0.01, Amplitudes(np.sqrt(0.08), np.sqrt(0.08), "given"), method="joint-ddnm", steps=3)
    return {"aligned": aligned(got, direct(frames, z, scale=None), block.latency)}


def case_error(bundle):
    z = signal(3)
    z[700] = np.nan
    block = edgediff_gr.denoise(bundle=bundle, backend="ort", steps=2, scale=0.4, batch=2)
    got, _ = run(block, z)  # returns: the block ended the flowgraph
    return {"stopped_early": len(got) < N}


def case_fingerprint(bundle):
    return {"cosine": NoiseSchedule.cosine().fingerprint(), "linear": NoiseSchedule.linear().fingerprint(),
            "numpy": np.__version__}


def case_expected(bundle):
    """What the example flowgraph must write for OUTDIR/capture.cf32 (denoise, 3 steps, scale 0.4)."""
    z = np.fromfile(sys.argv[3] + "/capture.cf32", np.complex64)
    frames = ReconstructionFrames(load(bundle, backend="ort"), 0.05, steps=3)
    s = Streamer(frames, frames.frame_length, batch=frames.check_batch(None), scale=0.4)
    out = np.concatenate([s.push(z.astype(np.complex128)), s.flush()]).astype(np.complex64)
    got = np.fromfile(sys.argv[3] + "/clean.cf32", np.complex64)
    return {"aligned": aligned(got, out, s.latency), "n": len(got)}


if __name__ == "__main__":
    print(json.dumps(globals()[f"case_{sys.argv[1]}"](sys.argv[2])))
