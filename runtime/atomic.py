"""Atomic file and directory writes: write beside the target, flush, then rename over it.

A reader (or a process killed mid-write) sees either the old file or the complete new one, never a
half-written one. Temporary names are ``.tmp-<target>.<pid>.<random>``: a killed process cannot
clean up, so every later write to the same target first *reclaims* the leftovers of processes that
no longer run (a live process's temporary files are never touched). A replaced directory is moved
aside as ``.tmp-<target>.<pid>.old.<random>/x`` only after its successor is complete; if the
process dies between moving it aside and renaming the new one in, reclaiming moves it back.

Errors from the file system (a full disk, a file-size limit, a vanished or read-only folder) leave
through :func:`naming`, which puts the target's path in the ``OSError`` so that the one-line message
names the file the user asked for, not a temporary one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TMP_PREFIX = ".tmp-"


def tmp_prefix(target: Path) -> str:
    """The prefix of this process's temporary names for ``target``."""
    return f"{TMP_PREFIX}{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim(target: str | Path) -> list[Path]:
    """Remove the temporary leftovers of dead processes for ``target`` (restoring a directory that a
    killed replacement had moved aside); returns what was reclaimed."""
    target = Path(target)
    done: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return done
    head = f"{TMP_PREFIX}{target.name}."
    for entry in entries:
        rest = entry.name[len(head):] if entry.name.startswith(head) else ""
        pid = rest.split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        aside = entry / "x"
        if ".old." in rest and aside.exists() and not target.exists():
            os.replace(aside, target)  # the replacement never arrived: the previous version comes back
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry)
    return done


@contextlib.contextmanager
def naming(target: str | Path) -> Iterator[None]:
    """Re-raise a file-system error inside the block with ``target`` as its file name."""
    try:
        yield
    except OSError as exc:
        if exc.filename == str(target):
            raise
        if exc.errno is None:  # numpy's tofile: "N requested and M written", a short write
            import errno

            raise OSError(errno.ENOSPC, f"short write, {exc} (the disk is full or a file-size limit was reached)",
                          str(target)) from None
        raise type(exc)(exc.errno, _cause(exc), str(target)) from None


def _cause(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror} (the disk is full or a file-size limit was reached)"
    return exc.strerror or str(exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success.

    ``suffix`` keeps an extension that a writer insists on (``numpy.save`` appends ``.npy``).
    """
    target = Path(target)
    reclaim(target)
    with naming(target):
        fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(target), suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming(target):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual mode
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy(target: str | Path, array: np.ndarray) -> None:
    with atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def save_npz(target: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it onto ``target`` when the block ends.

    On error the temporary directory is removed and ``target`` is untouched. With ``replace`` an
    existing ``target`` is swapped out (moved aside, then deleted) only after the new one is complete.
    """
    target = Path(target)
    reclaim(target)
    with naming(target):
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(target), dir=target.parent))
    try:
        with naming(target):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if target.exists():
                if not replace:
                    raise FileExistsError(target)
                old = Path(tempfile.mkdtemp(prefix=tmp_prefix(target) + "old.", dir=target.parent))
                os.replace(target, old / "x")
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
