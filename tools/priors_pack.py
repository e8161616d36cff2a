"""The trip back from a GPU session: its runs packed into parts small enough for the device tool, and
unpacked here without ever merging a new run into an earlier one (:mod:`edgediff.tools.priors_continue`
trains them there; ``edgediff priors unpack`` brings them back)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from edgediff.runtime.errors import InputError

#: Each part brought back stays under the device tool's 16 MiB per file.
PART_BYTES = 15 * 1024 * 1024
#: What comes back of a run: everything but checkpoints and snapshots (EMA weights carry the stage).
PACKED = ("config.json", "weights.safetensors", "loss.csv", "summary.json", "curve.json", "train.log", "curve.log")
#: The parts' names in OUT: runs.tar.part00, runs.tar.part01, ...
PART_PREFIX = "runs.tar.part"


def refuse_earlier_parts(out: Path) -> None:
    """Before a call trains anything: its parts would overwrite those of an earlier call not yet unpacked."""
    earlier = sorted(p.name for p in out.glob(PART_PREFIX + "*")) if out.is_dir() else []
    if earlier:
        raise InputError(f"{out} holds {', '.join(earlier)} from an earlier call: unpack them (edgediff priors "
                         "unpack) and move them away, or give another --out")


def pack(runs: list[Path], extra: list[Path], out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """One tar of the runs' files (and ``extra`` files), cut into parts of at most ``part_bytes``."""
    out.mkdir(parents=True, exist_ok=True)
    whole = out / "runs.tar"
    with tarfile.open(whole, "w") as tar:
        for run in runs:
            for name in PACKED:
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"{run.name}/{name}")
        for path in extra:
            if path.is_file():
                tar.add(path, arcname=path.name)
    parts, data = [], whole.read_bytes()
    for i in range(0, max(1, len(data)), part_bytes):
        part = out / f"{PART_PREFIX}{i // part_bytes:02d}"
        part.write_bytes(data[i:i + part_bytes])
        parts.append(part)
    whole.unlink()
    return parts


def unpack(parts: list[Path], runs: Path, replace_existing: bool = False) -> list[Path]:
    """Join the parts (in name order) and extract the runs under ``runs``; returns the run directories.

    A run (or a report) already under ``runs`` with other contents is an earlier call's: the archive is
    refused before anything is written, unless ``replace_existing``, when each such run is replaced
    whole (never merged: an old run's files must not pass as the new one's). The archive is extracted
    into a scratch folder beside the runs and moved into place entry by entry."""
    import io
    import shutil
    import tempfile

    if not parts:
        raise InputError("no parts given: pass the runs.tar.partNN files a GPU session brought back")
    data = b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: p.name))
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as exc:
        raise InputError(f"the parts do not form a tar archive ({exc}): is one missing?") from None
    with tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members:
            if Path(m.name).is_absolute() or ".." in Path(m.name).parts or len(Path(m.name).parts) > 2:
                raise InputError(f"archive member {m.name!r} would leave {runs}; refusing the archive")
        payload = {Path(m.name).as_posix(): tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    tops = sorted({Path(name).parts[0] for name in payload})
    clashes = [top for top in tops if (runs / top).exists() and not _holds(runs, top, payload)]
    if clashes and not replace_existing:
        raise InputError(f"{runs} already holds {', '.join(clashes)} from an earlier call, with other contents: unpack "
                         f"into a new folder (--runs {runs}-2) or pass --replace to replace them whole")
    runs.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=runs))
    try:
        for name, content in payload.items():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_bytes(content)
        for i, top in enumerate(tops):
            if (runs / top).exists():
                os.replace(runs / top, scratch / f"old-{i}")
            os.replace(scratch / top, runs / top)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [runs / top for top in tops if (runs / top).is_dir()]


def _holds(runs: Path, top: str, payload: dict[str, bytes]) -> bool:
    """Whether ``runs/top`` already holds exactly what the archive has under ``top`` (a second unpack)."""
    path = runs / top
    if path.is_file():
        return payload.get(top) == path.read_bytes()
    mine = {f"{top}/{f.relative_to(path).as_posix()}": f for f in path.rglob("*") if f.is_file()}
    theirs = {name for name in payload if name.startswith(f"{top}/")}
    return set(mine) == theirs and all(mine[name].read_bytes() == payload[name] for name in theirs)
