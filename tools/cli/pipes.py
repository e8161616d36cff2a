"""Raw samples on pipes: ``--y -`` reads interleaved I/Q from stdin, ``--out -`` writes it to stdout.

Nothing but samples goes to stdout; progress and the final figures go to stderr. The stream ends
cleanly on EOF (the rest is flushed), on a reader that closes the pipe (what was written stays
written; a note on stderr; exit 0) and on Ctrl-C (exit 130; a file output is removed). A live
stream's scale is running unless ``--scale`` fixes it (runtime/stream.py states the rule); a
recording file streamed to stdout keeps the file path's scale, measured over the whole file first.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgediff.runtime.errors import InputError

#: Samples read per chunk from a recording file.
FILE_CHUNK = 1 << 14


class Progress:
    """A line on stderr every few seconds: samples so far and the rate (stdout carries samples only)."""

    def __init__(self, quiet: bool, every: float = 2.0):
        self.quiet, self.every, self.t0 = quiet, every, time.perf_counter()
        self.last, self.samples = self.t0, 0

    def update(self, n: int) -> None:
        self.samples += n
        now = time.perf_counter()
        if not self.quiet and now - self.last >= self.every:
            click.echo(f"edgediff: {self.samples} samples, {self.samples / (now - self.t0):.0f} samples/s", err=True)
            self.last = now


def run_pipe(denoiser: Any, y: Path, out: Path, *, operator: str, mask: Path | None, mask_label: str | None,
             sigma_y: float, hop: int | None, force: bool, quiet: bool, generator: str, datatype: str | None,
             sample_rate: float | None, scale: float | None, batch: int | None, **kw: Any) -> None:
    from edgediff.runtime.recording import STREAM_TYPES, RawReader, RawWriter, Recording, RecordingWriter, is_sigmf, sigmf_pair
    from edgediff.runtime.stream import ReconstructionFrames, Streamer, recording_rms
    from edgediff.tools.cli.outputs import check_outputs

    if operator not in ("identity", "mask"):
        raise InputError(f"--operator {operator}: a stream is cleaned (identity) or filled in (mask), frame by frame")
    if mask_label is not None:
        raise InputError("--mask-label reads SigMF annotations: a raw stream has none (give --mask FILE.npy)")
    if operator == "mask" and mask is None:
        raise InputError("--operator mask on a stream needs --mask FILE.npy (one 0/1 per sample of the stream)")
    stream_in, stream_out = str(y) == "-", str(out) == "-"
    if stream_in:
        reader: Any = RawReader(sys.stdin.buffer, datatype or "cf32_le", sample_rate=sample_rate)
        chunks = reader.chunks()
    else:
        reader = Recording(y)
        chunks = (reader.read(s, FILE_CHUNK) for s in range(0, reader.length, FILE_CHUNK))
    flags = _mask_reader(mask)
    if stream_out:
        writer: Any = RawWriter(sys.stdout.buffer, datatype or (reader.datatype if reader.datatype in STREAM_TYPES else "cf32_le"))
    else:
        if not (is_sigmf(out) or out.suffix == ".npy"):
            raise InputError(f"--out {out}: a stream is written as NAME.sigmf-meta (SigMF) or NAME.npy, or - for stdout")
        outs = sigmf_pair(out) if is_sigmf(out) else (out,)
        check_outputs({f"--out ({p.suffix})": p for p in outs}, inputs={"--mask": mask}, force=force)
        writer = RecordingWriter(out, reader, generator)
    frames = ReconstructionFrames(denoiser, sigma_y, **kw)
    if scale is None and not stream_in:  # a file: the file path's scale, over the whole recording
        scale = recording_rms(reader, None if mask is None else lambda s, c: flags(s, c))
    streamer = Streamer(frames, frames.frame_length, hop=hop, batch=frames.check_batch(batch), scale=scale,
                        masked=mask is not None)
    progress = Progress(quiet)
    try:
        position = 0
        for z in chunks:
            done = streamer.push(z, None if mask is None else flags(streamer.n_in, len(z)))
            position = _emit(writer, position, done, progress)
        if mask is not None:
            flags(streamer.n_in, 0, strict=True)  # the mask must end where the stream did
        position = _emit(writer, position, streamer.flush(), progress)
        written = writer.commit(f"edgediff {operator} of {'stdin' if stream_in else y.name}")
    except BrokenPipeError:  # the reader went away: what was written stays, the rest is not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        click.echo(f"edgediff: the reader closed the output after {progress.samples} samples; stopped", err=True)
        return
    except BaseException:  # Ctrl-C, a full disk, an error: nothing stays under a file output's names
        writer.abort()
        raise
    seconds = time.perf_counter() - progress.t0
    rate = streamer.n_in / max(seconds, 1e-9)
    realtime = f", {rate / reader.sample_rate:.3g}x real time at {reader.sample_rate:g} Hz" if reader.sample_rate else ""
    line = (f"{streamer.n_in} samples in {streamer.next_frame} frames (hop {streamer.hop}, {streamer.batch} per call, "
            f"latency {streamer.latency} samples), {frames.nfe} NFE per frame, {seconds:.1f} s: {rate:.0f} samples/s{realtime}")
    click.echo(line, err=stream_out)
    if written:
        click.echo("wrote " + ", ".join(str(p) for p in written), err=stream_out)


def _emit(writer: Any, position: int, z: np.ndarray, progress: Progress) -> int:
    if len(z):
        writer.write(position, z)
        progress.update(len(z))
    return position + len(z)


def _mask_reader(mask: Path | None) -> Any:
    """(start, count, strict) -> 0/1 flags from a 1-D .npy read in step with the stream; ``strict`` with
    count 0 checks that the mask ends exactly where the stream did."""
    if mask is None:
        return None
    from edgediff.runtime.recording import npy_header

    try:
        shape, dtype, offset = npy_header(mask)
    except (ValueError, OSError) as exc:
        raise InputError(f"--mask {mask}: not a readable .npy vector ({str(exc).splitlines()[0][:80]})") from None
    if len(shape) != 1 or dtype.kind not in "biuf" or dtype.hasobject:
        raise InputError(f"--mask {mask}: shape {shape}, dtype {dtype}: a stream's mask is one 0/1 value per sample")
    total = shape[0]

    def flags(start: int, count: int, strict: bool = False) -> np.ndarray:
        if count == 0 and strict and start != total:
            raise InputError(f"--mask {mask}: {total} values for a stream of {start} samples: one 0/1 per sample")
        if start + count > total:
            raise InputError(f"--mask {mask}: {total} values, but the stream goes on past them: one 0/1 per sample")
        part = np.fromfile(mask, dtype=dtype, count=count, offset=offset + start * dtype.itemsize).astype(np.float64)
        if not np.isin(part, (0.0, 1.0)).all():
            raise InputError(f"--mask {mask}: holds values other than 0 and 1 (1 = observed)")
        return part

    return flags
