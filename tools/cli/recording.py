"""Recordings on the command line: which --y is a recording, its mask, and the streamed run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from edgediff.runtime.errors import InputError


def is_recording(path: Path) -> bool:
    """A SigMF recording, or a .npy holding one long complex vector (frames (N, 2, L) are not)."""
    from edgediff.runtime.recording import is_sigmf, npy_header

    if is_sigmf(path):
        return True
    if path.suffix != ".npy" or not path.is_file():
        return False
    try:
        shape, dtype, _ = npy_header(path)
    except (ValueError, OSError):
        return False
    return len(shape) == 1 and dtype.kind == "c"


def mask_function(reader: Any, mask: Path | None, label: str | None) -> Any:
    """(start, count) -> 0/1 observed flags, from a 0/1 vector file or from SigMF annotations."""
    from edgediff.runtime.recording import npy_header

    if mask is not None and label is not None:
        raise InputError("--mask and --mask-label were both given: choose one way to mark lost samples")
    if mask is not None:
        try:
            shape, dtype, offset = npy_header(mask)
        except (ValueError, OSError) as exc:
            raise InputError(f"--mask {mask}: not a readable .npy vector ({str(exc).splitlines()[0][:80]})") from None
        if len(shape) != 1 or shape[0] != reader.length:
            raise InputError(f"--mask {mask}: shape {shape}: a recording's mask has one 0/1 value per sample "
                             f"({reader.length})")
        if dtype.kind not in "biuf" or dtype.hasobject:
            raise InputError(f"--mask {mask}: dtype {dtype}: expected 0/1 numbers")

        def from_file(start: int, count: int) -> np.ndarray:  # read in chunks, like the recording
            part = np.fromfile(mask, dtype=dtype, count=count, offset=offset + start * dtype.itemsize).astype(np.float64)
            if not np.isin(part, (0.0, 1.0)).all():
                raise InputError(f"--mask {mask}: holds values other than 0 and 1 (1 = observed)")
            return part

        return from_file
    if label is None:
        return None
    if reader.meta is None:
        raise InputError("--mask-label reads SigMF annotations: --y must be a SigMF recording")
    spans = [(int(a.get("core:sample_start", 0)), int(a.get("core:sample_count", reader.length)))
             for a in reader.meta.get("annotations", []) if isinstance(a, dict) and a.get("core:label") == label]
    if not spans:
        raise InputError(f"--mask-label {label!r}: no annotation of the recording has that core:label")

    def from_annotations(start: int, count: int) -> np.ndarray:
        flags = np.ones(count)
        for s, c in spans:
            lo, hi = max(s, start), min(s + c, start + count)
            if hi > lo:
                flags[lo - start: hi - start] = 0.0
        return flags

    return from_annotations


def run_recording(denoiser: Any, y: Path, out: Path, *, operator: str, mask: Path | None, mask_label: str | None,
                  sigma_y: float, hop: int | None, force: bool, quiet: bool, generator: str, stream: dict[str, Any],
                  **kw: Any) -> None:
    """Stream the recording ``y`` through the prior and write ``out`` like it (SigMF or .npy); ``-``
    for either is a raw stream on stdin / stdout (``stream``: datatype, sample rate, scale, batch)."""
    from edgediff.runtime.recording import Recording, RecordingWriter, is_sigmf, sigmf_pair
    from edgediff.runtime.stream import process
    from edgediff.tools.cli.outputs import check_outputs

    if str(y) == "-" or str(out) == "-":
        from edgediff.tools.cli.pipes import run_pipe

        run_pipe(denoiser, y, out, operator=operator, mask=mask, mask_label=mask_label, sigma_y=sigma_y, hop=hop,
                 force=force, quiet=quiet, generator=generator, **stream, **kw)
        return
    if stream.get("scale") is not None or stream.get("datatype") is not None:
        raise InputError("--scale and --datatype are for raw streams (--y - or --out -): a recording file carries its own")
    if operator not in ("identity", "mask"):
        raise InputError(f"--operator {operator}: a recording is cleaned (identity) or filled in (mask), frame by frame")
    if operator == "mask" and mask is None and mask_label is None:
        raise InputError("--operator mask on a recording needs --mask FILE.npy (one 0/1 per sample) or --mask-label LABEL")
    ins = sigmf_pair(y) if is_sigmf(y) else (y,)
    outs = sigmf_pair(out) if is_sigmf(out) else (out,)
    if not (is_sigmf(out) or out.suffix == ".npy"):
        raise InputError(f"--out {out}: a recording is written as NAME.sigmf-meta (SigMF) or NAME.npy")
    check_outputs({f"--out ({p.suffix})": p for p in outs}, inputs={f"--y ({p.suffix})": p for p in ins} | {"--mask": mask},
                  force=force)
    reader = Recording(y)
    mask_fn = mask_function(reader, mask, mask_label if operator == "mask" else None) if operator == "mask" else None
    writer = RecordingWriter(out, reader, generator)
    try:
        with click.progressbar(length=reader.length, label="samples", hidden=quiet, show_pos=True) as bar:
            report = process(reader, writer, denoiser, sigma_y, mask_fn=mask_fn, hop=hop, progress=bar.update,
                             batch=stream.get("batch"), **kw)
        written = writer.commit(f"edgediff {operator} of {y.name}")
    except BaseException:  # Ctrl-C, a full disk, an error: nothing stays under the output names
        writer.abort()
        raise
    rate = report.samples_per_s
    realtime = f", {rate / reader.sample_rate:.3g}x real time at {reader.sample_rate:g} Hz" if reader.sample_rate else ""
    click.echo(f"{report.samples} samples in {report.frames} frames (hop {hop or denoiser.sample_shape[1] // 2}), "
               f"{report.nfe} NFE per frame, {report.seconds:.1f} s: {rate:.0f} samples/s{realtime}")
    click.echo("wrote " + ", ".join(str(p) for p in written))
