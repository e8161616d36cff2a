"""Signals through a frame prior in bounded memory: a push-based streamer, and whole recordings on it.

Framing: frames of length L start every ``hop`` samples (half a frame by default) from ``-(L - hop)``,
so every sample lies in L / hop frames; samples before 0 and past the end are padding the operator
never observes (a per-frame mask of 0 there). Each frame's estimate is weighted by a sin^2 window
and the weights are divided out, so with hop = L/2 the weights of the two frames over a sample sum to
exactly one and frame edges leave no seam.

Streaming (:class:`Streamer`): ``push(chunk[, mask])`` takes any number of samples and returns the
samples whose overlap-add is complete; partial frames wait in the streamer's state. Frames go to the
engine ``batch`` at a time, in order (frame k in batch k // batch, whatever the chunk sizes), so
the output does not depend on how the input was cut; ``flush()`` processes what is left, with the
frames past the end padded, and returns the rest. A sample comes out at most
``latency = (batch - 1) * hop + L - 1`` samples after it went in (plus the engine's time).

Normalisation: the prior wants its training RMS. A stream's scale (its RMS per real component over
observed samples, in input units) is either fixed (``scale=...``: the file path measures it over the
whole recording first; a live user states it, ``--scale``) or running: each batch uses the RMS of
every observed sample from the stream's start up to that batch's last sample (so, again, not the chunk
sizes). A running scale settles as the stream goes on; the first frames of a stream see a rougher one.

Memory: at most ``batch * hop + L`` input samples and as many accumulator samples at any time, so
peak memory does not grow with the stream.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse import reconstruct
from edgediff.runtime.inverse.operators import Mask

MaskFn = Callable[[int, int], np.ndarray]  # (start, count) -> 0/1 per sample (1 = observed)
#: (frames (B, L) complex in input units, zero where unobserved; observed flags (B, L); batch index;
#: the stream's scale) -> estimates (B, L) complex in input units
FrameFn = Callable[[np.ndarray, np.ndarray, int, float], np.ndarray]
#: Samples read per chunk from a recording on disk.
CHUNK = 1 << 16


@dataclass
class StreamReport:
    samples: int
    frames: int
    nfe: int
    seconds: float
    gain: float  # recording units -> prior units

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def window(length: int) -> np.ndarray:
    """sin^2 with a half-sample offset: w[i] + w[i + L/2] = 1 for every i."""
    return np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 2


def recording_rms(reader: Any, mask_fn: MaskFn | None, chunk: int = CHUNK) -> float:
    """RMS per real component over the observed samples, in one streaming pass (chunks of the streaming pass's
    size: at 1 << 20 its temporaries, 35 MB, were the run's peak where a small network's were less)."""
    total, count = 0.0, 0
    for start in range(0, reader.length, chunk):
        z = reader.read(start, chunk)
        keep = np.ones(len(z), bool) if mask_fn is None else mask_fn(start, len(z)) > 0
        total += float(np.sum(np.abs(z[keep]) ** 2))
        count += 2 * int(keep.sum())
    if count == 0 or not total > 0 or not math.isfinite(total):
        raise InputError("the recording has no observed non-zero finite samples: nothing to reconstruct from")
    return math.sqrt(total / count)


class Streamer:
    """Push-based framing, batching and overlap-add around a frame function (see the module docstring)."""

    def __init__(self, frame_fn: FrameFn, frame_length: int, *, hop: int | None = None, batch: int = 64,
                 scale: float | None = None, masked: bool = False):
        L = int(frame_length)
        self.hop = int(hop or L // 2)
        if not 1 <= self.hop <= L:
            raise InputError(f"--hop {hop}: expected 1..{L} (the frame length)")
        if batch < 1:
            raise InputError(f"batch {batch}: expected at least one frame per engine call")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise InputError(f"--scale {scale}: expected the stream's RMS per real component, a finite number > 0")
        self.frame_fn, self.L, self.batch, self.scale, self.masked = frame_fn, L, int(batch), scale, masked
        self.first = -(L - self.hop)  # start of frame 0
        self.w = window(L)
        self.n_in = 0  # samples pushed
        self.n_out = 0  # samples returned
        self.next_frame = 0  # index of the first frame not processed yet
        self.batches = 0
        # input kept from max(0, the first pending frame's start): padding before 0 is implicit
        self.buf_start, self.buf, self.obs = 0, np.zeros(0, np.complex128), np.zeros(0)
        # overlap-add accumulator from the first sample not returned yet
        self.acc, self.weight = np.zeros(0, np.complex128), np.zeros(0)
        self._power, self._count, self._power_upto = 0.0, 0, 0  # running scale: sums over [0, upto)
        self.seconds = 0.0

    @property
    def latency(self) -> int:
        """Most samples that arrive after a sample before it is returned (engine time aside)."""
        return (self.batch - 1) * self.hop + self.L - 1

    def start(self, k: int) -> int:
        return self.first + k * self.hop

    def until_next_batch(self) -> int:
        """Samples still to push before the next engine batch runs (a push of this many runs exactly one)."""
        return self.start(self.next_frame + self.batch - 1) + self.L - self.n_in

    def push(self, chunk: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Take ``chunk`` (complex (n,)) and its 0/1 observed flags (masked streams); return finished samples."""
        z = np.asarray(chunk)
        if z.ndim != 1:
            raise InputError(f"a chunk of shape {z.shape}: push one complex vector at a time")
        if mask is None:
            if self.masked:
                raise InputError("this stream reconstructs lost samples: push each chunk with its 0/1 mask")
            m = np.ones(len(z))
        else:
            m = np.asarray(mask, dtype=np.float64)
            if m.shape != z.shape:
                raise InputError(f"a mask of {m.shape[0] if m.ndim == 1 else m.shape} values for {len(z)} samples: "
                                 "one 0/1 per sample")
            if not np.isin(m, (0.0, 1.0)).all():
                raise InputError("the mask holds values other than 0 and 1 (1 = observed)")
        z = z.astype(np.complex128)
        if not np.isfinite(z[m > 0]).all():
            raise InputError("the stream holds NaN or Inf samples where it is observed: mark them lost (mask 0)")
        self.buf = np.concatenate([self.buf, np.where(m > 0, z, 0)])
        self.obs = np.concatenate([self.obs, m])
        self.n_in += len(z)
        out = []
        while self.start(self.next_frame + self.batch - 1) + self.L <= self.n_in:
            out.append(self._run(self.batch))
        return np.concatenate(out) if out else np.zeros(0, np.complex128)

    def flush(self) -> np.ndarray:
        """End of stream: process the frames that remain (padded past the end); return every sample left."""
        out = []
        while self.start(self.next_frame) < self.n_in:
            remaining = -(-(self.n_in - self.start(self.next_frame)) // self.hop)
            out.append(self._run(min(self.batch, remaining)))
        return np.concatenate(out) if out else np.zeros(0, np.complex128)

    def _run(self, count: int) -> np.ndarray:
        """Process frames next_frame .. next_frame + count - 1; return the samples that became final."""
        t0 = time.perf_counter()
        L, k0 = self.L, self.next_frame
        starts = self.start(k0) + self.hop * np.arange(count)
        last = int(starts[-1]) + L
        # 1. the frames from the buffer, zero and unobserved outside the samples pushed so far
        span = np.zeros(last - int(starts[0]), np.complex128)
        seen = np.zeros(len(span))
        lo, hi = max(int(starts[0]), 0), min(last, self.n_in)
        if hi > lo:
            span[lo - starts[0]: hi - starts[0]] = self.buf[lo - self.buf_start: hi - self.buf_start]
            seen[lo - starts[0]: hi - starts[0]] = self.obs[lo - self.buf_start: hi - self.buf_start]
        idx = (starts - starts[0])[:, None] + np.arange(L)[None]
        estimate = self.frame_fn(span[idx], seen[idx], self.batches, self._scale(min(last, self.n_in)))
        # 2. windowed overlap-add from the first sample not returned yet
        acc_start = self.n_out
        need = last - acc_start
        if len(self.acc) < need:
            self.acc = np.concatenate([self.acc, np.zeros(need - len(self.acc), np.complex128)])
            self.weight = np.concatenate([self.weight, np.zeros(need - len(self.weight))])
        for k, s in enumerate(starts):
            lo_k = int(s) - acc_start
            cut = max(0, -lo_k)  # samples of a first frame before 0 were returned never
            self.acc[lo_k + cut: lo_k + L] += self.w[cut:] * estimate[k, cut:]
            self.weight[lo_k + cut: lo_k + L] += self.w[cut:]
        self.next_frame += count
        self.batches += 1
        # 3. final: everything before the next frame's start (or the end of the stream)
        done = min(self.start(self.next_frame), self.n_in)
        take = max(0, done - acc_start)
        out = self.acc[:take] / np.maximum(self.weight[:take], 1e-12)
        self.acc, self.weight = self.acc[take:], self.weight[take:]
        self.n_out += take
        # 4. forget input no pending frame reaches
        drop = max(0, self.start(self.next_frame) - self.buf_start)
        self.buf, self.obs, self.buf_start = self.buf[drop:], self.obs[drop:], self.buf_start + drop
        self.seconds += time.perf_counter() - t0
        return out

    def _scale(self, upto: int) -> float:
        """The stream's RMS per real component: the fixed one, or over observed samples [0, upto)."""
        if self.scale is not None:
            return self.scale
        lo = max(self._power_upto, self.buf_start)
        if upto > lo:
            seg, m = self.buf[lo - self.buf_start: upto - self.buf_start], self.obs[lo - self.buf_start: upto - self.buf_start]
            self._power += float(np.sum(np.abs(seg[m > 0]) ** 2))
            self._count += 2 * int(np.sum(m > 0))
            self._power_upto = upto
        if self._count == 0 or not self._power > 0:
            return 1.0  # nothing observed yet: frames of nothing but padding
        return math.sqrt(self._power / self._count)


class ReconstructionFrames:
    """The frame function of denoise and reconstruct: frames scaled to the prior's units, the mask
    operator (all ones where observed for denoising), one reconstruction per engine batch seeded
    ``seed * 1_000_003 + batch index``, scaled back."""

    def __init__(self, denoiser: Any, sigma_y: float, *, method: str = "ddnm", steps: int = 100, seed: int = 0,
                 **method_kw: Any):
        if len(denoiser.sample_shape) != 2 or denoiser.sample_shape[0] != 2:
            raise InputError(f"a stream needs an I/Q prior: this bundle's frames are {tuple(denoiser.sample_shape)}")
        self.denoiser, self.sigma_y, self.method, self.steps, self.seed, self.kw = denoiser, sigma_y, method, steps, seed, method_kw
        self.nfe, self.gain = 0, float("nan")

    @property
    def frame_length(self) -> int:
        return int(self.denoiser.sample_shape[1])

    def check_batch(self, batch: int | None) -> int:
        """Frames per engine call: the asked number (within the engine's range), else up to 64."""
        lo, hi = self.denoiser.min_batch, self.denoiser.max_batch
        if batch is None:
            return max(lo, min(hi, 64))
        if not lo <= batch <= hi:
            raise InputError(f"--batch {batch}: this engine takes {lo}..{hi} frames per call")
        return int(batch)

    def __call__(self, z: np.ndarray, seen: np.ndarray, b: int, scale: float) -> np.ndarray:
        L = z.shape[1]
        gain = self.denoiser.normalisation.scale / scale
        masks = np.repeat(seen[:, None], 2, axis=1)  # (B, 2, L)
        frames = np.stack([z.real, z.imag], axis=1) * gain
        # a frame with nothing observed (inside a long gap): one zero sample pinned at its centre keeps the
        # operator valid; the prior fills the rest, and the neighbouring frames' windows dominate near edges
        empty = ~masks.reshape(len(z), -1).any(axis=1)
        masks[empty, :, L // 2] = 1.0
        x, res = reconstruct(self.denoiser, frames * masks, Mask(masks, (2, L)), self.sigma_y * gain, method=self.method,
                             steps=self.steps, seed=self.seed * 1_000_003 + b, **self.kw)
        self.nfe, self.gain = res.nfe, gain
        return (x[:, 0] + 1j * x[:, 1]) / gain  # (B, L) back in input units


class SeparationFrames:
    """The frame function of separation: each batch of mixture frames (input units) separated with the
    two priors at the given amplitudes, seeded ``seed * 1_000_003 + batch index``; returns the SOI.
    The stream's scale is not used: the amplitudes state the sources' levels. Frames at the stream's
    two ends are zero-padded, which the sum operator reads as a quiet mixture there."""

    def __init__(self, soi: Any, interference: Any, sigma_y: float, amplitudes: Any, *, method: str = "auto",
                 steps: int = 100, seed: int = 0):
        from edgediff.runtime.inverse.separate import check_pair, choose_method

        check_pair(soi, interference)
        self.soi, self.interference, self.sigma_y, self.amp = soi, interference, sigma_y, amplitudes
        self.method = choose_method(amplitudes)[0] if method == "auto" else method
        self.steps, self.seed, self.nfe = steps, seed, 0

    @property
    def frame_length(self) -> int:
        return int(self.soi.sample_shape[1])

    def __call__(self, z: np.ndarray, seen: np.ndarray, b: int, scale: float) -> np.ndarray:
        from edgediff.runtime.inverse.separate import separate

        y = np.stack([z.real, z.imag], axis=1)
        res = separate(self.soi, self.interference, y, self.sigma_y, self.amp, method=self.method, steps=self.steps,
                       seed=self.seed * 1_000_003 + b)
        self.nfe = res.nfe_per_source
        return res.soi[:, 0] + 1j * res.soi[:, 1]


def process(reader: Any, writer: Any, denoiser: Any, sigma_y: float, *, mask_fn: MaskFn | None = None,
            hop: int | None = None, method: str = "ddnm", steps: int = 100, seed: int = 0,
            progress: Callable[[int], Any] | None = None, batch: int | None = None, **method_kw: Any) -> StreamReport:
    """Reconstruct (or clean, without a mask) a whole recording: its RMS measured first (the scale),
    then the recording pushed through a :class:`Streamer` in chunks."""
    frames = ReconstructionFrames(denoiser, sigma_y, method=method, steps=steps, seed=seed, **method_kw)
    L = frames.frame_length
    if reader.length < L:
        raise InputError(f"the recording has {reader.length} samples, fewer than one frame of {L}: nothing to frame")
    start_time = time.perf_counter()
    streamer = Streamer(frames, L, hop=hop, batch=frames.check_batch(batch), scale=recording_rms(reader, mask_fn),
                        masked=mask_fn is not None)
    written = 0
    for start in range(0, reader.length, CHUNK):
        z = reader.read(start, CHUNK)
        out = streamer.push(z, None if mask_fn is None else mask_fn(start, len(z)))
        written = _write(writer, written, out, progress)
    _write(writer, written, streamer.flush(), progress)
    return StreamReport(reader.length, streamer.next_frame, frames.nfe, time.perf_counter() - start_time, frames.gain)


def _write(writer: Any, position: int, out: np.ndarray, progress: Callable[[int], Any] | None) -> int:
    if len(out):
        writer.write(position, out)
        if progress is not None:
            progress(len(out))
    return position + len(out)
