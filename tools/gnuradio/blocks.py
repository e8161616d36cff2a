"""The blocks: complex float in, complex float out, one :class:`edgediff.runtime.stream.Streamer` each.

Timing: a block is a ``gr.sync_block`` with a fixed delay equal to its streamer's latency (in
samples): its first ``latency`` output items are zeros, announced by an ``edgediff_latency`` tag on
item 0 whose value is that delay, and output item i is the streamer's sample i - latency. A sync
block keeps every downstream rate and tag in place; the delay is the price of overlap-add, stated.

Scheduling: ``work()`` never runs more than one engine batch: it consumes input only up to the
sample that completes the next batch (:meth:`Streamer.until_next_batch`) and leaves the rest for
the next call, so the scheduler gets control back after each batch.

Masks (reconstruct): a second input of float 0/1 per sample (1 = observed), or stream tags: a tag
with key ``lost_tag`` (default ``lost``) at item k with an integer value n marks items k .. k + n - 1
as lost; spans may cross calls.

Errors: a bad bundle or parameter fails the constructor (GRC shows it); an error while running (NaN
samples, say) is logged through the block's GNU Radio logger and ends the flowgraph (WORK_DONE).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pmt
from gnuradio import gr

from edgediff.runtime.errors import EdgediffError
from edgediff.runtime.stream import ReconstructionFrames, SeparationFrames, Streamer

LATENCY_TAG = "edgediff_latency"


def _load(bundle: str, backend: str, threads: int) -> Any:
    from edgediff.runtime.backends import load

    return load(bundle, backend=backend, threads=threads)


class _StreamBlock(gr.sync_block):
    """The delay line and the one-batch-per-call rule shared by the three blocks."""

    def __init__(self, name: str, in_sig: list[Any], streamer: Streamer):
        gr.sync_block.__init__(self, name=name, in_sig=in_sig, out_sig=[np.complex64])
        self.streamer = streamer
        self.latency = streamer.latency
        self._fifo = np.zeros(self.latency, np.complex64)
        self._tagged = False

    def work(self, input_items: Any, output_items: Any) -> int:
        try:
            return self._work(input_items, output_items)
        except EdgediffError as exc:
            self.logger.error(f"{self.name()}: {exc}")
            return -1  # WORK_DONE: this block is finished, and the flowgraph with it

    def _work(self, input_items: Any, output_items: Any) -> int:
        k = min(len(output_items[0]), self.streamer.until_next_batch())
        done = self.streamer.push(input_items[0][:k], self.mask(input_items, k))
        fifo = np.concatenate([self._fifo, done.astype(np.complex64)])
        output_items[0][:k] = fifo[:k]  # never short: the streamer lags its input by at most its latency
        self._fifo = fifo[k:]
        if not self._tagged:
            self.add_item_tag(0, self.nitems_written(0), pmt.intern(LATENCY_TAG), pmt.from_long(self.latency))
            self._tagged = True
        return k

    def mask(self, input_items: Any, k: int) -> np.ndarray | None:
        return None


class denoise(_StreamBlock):  # noqa: N801 (GNU Radio's block naming)
    """Clean a complex stream with a bundle's prior (the identity operator)."""

    def __init__(self, bundle: str = "rf-qpsk", backend: str = "auto", steps: int = 20, hop: int = 0,
                 sigma_y: float = 0.05, scale: float = 0.0, batch: int = 0, seed: int = 0, threads: int = 0):
        d = _load(bundle, backend, threads)
        frames = ReconstructionFrames(d, sigma_y, steps=steps, seed=seed)
        super().__init__("edgediff_denoise", [np.complex64],
                         Streamer(frames, frames.frame_length, hop=hop or None, batch=frames.check_batch(batch or None),
                                  scale=scale or None))


class reconstruct(_StreamBlock):  # noqa: N801
    """Fill lost samples of a complex stream: the mask from a second float input or from ``lost`` tags."""

    def __init__(self, bundle: str = "rf-qpsk", backend: str = "auto", method: str = "ddnm", steps: int = 50,
                 hop: int = 0, sigma_y: float = 0.01, scale: float = 0.0, batch: int = 0, seed: int = 0,
                 mask_input: bool = False, lost_tag: str = "lost", threads: int = 0):
        d = _load(bundle, backend, threads)
        frames = ReconstructionFrames(d, sigma_y, method=method, steps=steps, seed=seed)
        in_sig = [np.complex64, np.float32] if mask_input else [np.complex64]
        super().__init__("edgediff_reconstruct", in_sig,
                         Streamer(frames, frames.frame_length, hop=hop or None, batch=frames.check_batch(batch or None),
                                  scale=scale or None, masked=True))
        self.mask_input, self.lost_key, self._lost_until = mask_input, pmt.intern(lost_tag), 0

    def mask(self, input_items: Any, k: int) -> np.ndarray:
        if self.mask_input:
            return np.asarray(input_items[1][:k], dtype=np.float64)
        start = self.nitems_read(0)
        flags = np.ones(k)
        flags[: max(0, min(k, self._lost_until - start))] = 0.0  # a span begun in an earlier call
        for tag in self.get_tags_in_window(0, 0, k, self.lost_key):
            length = pmt.to_long(tag.value) if pmt.is_integer(tag.value) else 0
            self._lost_until = max(self._lost_until, tag.offset + length)
            flags[tag.offset - start: max(0, tag.offset + length - start)] = 0.0
        return flags


class separate(_StreamBlock):  # noqa: N801
    """Pull the signal of interest out from under an interferer: two priors and their powers."""

    def __init__(self, soi: str = "rf-qpsk", interference: str = "rf-chirp", backend: str = "auto",
                 method: str = "auto", steps: int = 100, hop: int = 0, sigma_y: float = 0.01, soi_power: float = 1.0,
                 interference_power: float = 1.0, batch: int = 0, seed: int = 0, threads: int = 0):
        from edgediff.runtime.inverse.separate import source_amplitudes

        d_s, d_b = _load(soi, backend, threads), _load(interference, backend, threads)
        amp = source_amplitudes(np.zeros((1, 2, 1)), sigma_y, d_s.normalisation.scale, d_b.normalisation.scale,
                                soi_power, interference_power)
        frames = SeparationFrames(d_s, d_b, sigma_y, amp, method=method, steps=steps, seed=seed)
        lo, hi = max(d_s.min_batch, d_b.min_batch), min(d_s.max_batch, d_b.max_batch)
        super().__init__("edgediff_separate", [np.complex64],
                         Streamer(frames, frames.frame_length, hop=hop or None,
                                  batch=max(lo, min(hi, batch or 64))))
