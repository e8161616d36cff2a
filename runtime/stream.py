"""Whole recordings through a frame prior in bounded memory: framing, batching, overlap-add.

Frames of length L start every ``hop`` samples (half a frame by default) from ``-(L - hop)``, so
every recording sample lies in L / hop frames; samples before 0 and past the end are padding the
operator never observes (a per-frame mask of 0 there). Each frame's estimate is weighted by a
sin^2 window and the weights are divided out, so with hop = L/2 the weights of the two frames
over a sample sum to exactly one and frame edges leave no seam.

Memory: one batch of frames and an accumulator of ``batch * hop + L`` samples at any time; a span is
written as soon as no later frame reaches it, so peak memory does not grow with the recording.

Normalisation: the recording is scaled so that its RMS over observed samples equals the prior's
training RMS (the bundle's normalisation scale), and the output is scaled back.
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


def recording_rms(reader: Any, mask_fn: MaskFn | None, chunk: int = 1 << 20) -> float:
    """RMS per real component over the observed samples, in one streaming pass."""
    total, count = 0.0, 0
    for start in range(0, reader.length, chunk):
        z = reader.read(start, chunk)
        keep = np.ones(len(z), bool) if mask_fn is None else mask_fn(start, len(z)) > 0
        total += float(np.sum(np.abs(z[keep]) ** 2))
        count += 2 * int(keep.sum())
    if count == 0 or not total > 0 or not math.isfinite(total):
        raise InputError("the recording has no observed non-zero finite samples: nothing to reconstruct from")
    return math.sqrt(total / count)


def process(reader: Any, writer: Any, denoiser: Any, sigma_y: float, *, mask_fn: MaskFn | None = None,
            hop: int | None = None, method: str = "ddnm", steps: int = 100, seed: int = 0,
            progress: Callable[[int], Any] | None = None, **method_kw: Any) -> StreamReport:
    """Reconstruct (or clean, without a mask) a whole recording frame by frame; see the module docstring."""
    if len(denoiser.sample_shape) != 2 or denoiser.sample_shape[0] != 2:
        raise InputError(f"a recording needs an I/Q prior: this bundle's frames are {tuple(denoiser.sample_shape)}")
    L = denoiser.sample_shape[1]
    hop = hop or L // 2
    if not 1 <= hop <= L:
        raise InputError(f"--hop {hop}: expected 1..{L} (the frame length)")
    if reader.length < L:
        raise InputError(f"the recording has {reader.length} samples, fewer than one frame of {L}: nothing to frame")
    start_time = time.perf_counter()
    gain = denoiser.normalisation.scale / recording_rms(reader, mask_fn)
    w = window(L)
    first, n = -(L - hop), reader.length
    starts = list(range(first, n, hop))
    batch = max(denoiser.min_batch, min(denoiser.max_batch, 64))
    acc_start = first
    acc = np.zeros(batch * hop + L, np.complex128)
    weight = np.zeros(batch * hop + L)
    written = 0
    nfe = 0
    for b, i in enumerate(range(0, len(starts), batch)):
        s0 = starts[i: i + batch]
        frames, masks = _frames(reader, mask_fn, s0, L, gain)
        x, res = reconstruct(denoiser, frames * masks, Mask(masks, (2, L)), sigma_y * gain, method=method, steps=steps,
                             seed=seed * 1_000_003 + b, **method_kw)
        nfe = res.nfe
        z = (x[:, 0] + 1j * x[:, 1]) / gain  # (B, L) back in recording units
        for k, s in enumerate(s0):
            off = s - acc_start
            acc[off:off + L] += w * z[k]
            weight[off:off + L] += w
        # everything before the next batch's first frame is final: write it, slide the accumulator
        done_until = min(starts[i + batch] if i + batch < len(starts) else n, n)
        lo, hi = max(written, acc_start), done_until
        if hi > lo:
            seg = slice(lo - acc_start, hi - acc_start)
            writer.write(lo, acc[seg] / np.maximum(weight[seg], 1e-12))
            if progress is not None:
                progress(hi - lo)
            written = hi
        shift = done_until - acc_start
        acc = np.concatenate([acc[shift:], np.zeros(shift, np.complex128)])
        weight = np.concatenate([weight[shift:], np.zeros(shift)])
        acc_start = done_until
    return StreamReport(n, len(starts), nfe, time.perf_counter() - start_time, gain)


def _frames(reader: Any, mask_fn: MaskFn | None, starts: list[int], L: int, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """I/Q frames (B, 2, L) in prior units and their masks, zero and unobserved outside the recording."""
    lo, hi = max(starts[0], 0), min(starts[-1] + L, reader.length)
    z = np.zeros(starts[-1] + L - starts[0], np.complex128)
    m = np.zeros(len(z))
    z[lo - starts[0]: hi - starts[0]] = reader.read(lo, hi - lo) * gain
    m[lo - starts[0]: hi - starts[0]] = 1.0 if mask_fn is None else mask_fn(lo, hi - lo)
    idx = (np.asarray(starts) - starts[0])[:, None] + np.arange(L)[None]
    masks = np.repeat(m[idx][:, None], 2, axis=1)
    frames = np.where(masks > 0, np.stack([z[idx].real, z[idx].imag], axis=1), 0.0)  # lost samples may hold anything
    if not np.isfinite(frames).all():
        raise InputError("the recording holds NaN or Inf samples where it is observed: mask them out (--mask) first")
    # a frame with nothing observed (inside a long gap): one zero sample pinned at its centre keeps the
    # operator valid; the prior fills the rest, and the neighbouring frames' windows dominate near edges
    empty = ~masks.reshape(len(starts), -1).any(axis=1)
    masks[empty, :, L // 2] = 1.0
    return frames, masks
