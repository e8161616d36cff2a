"""One output policy for every command.

Before any work starts, every output path is checked: not empty, not a directory, its folder exists
and is writable, distinct from the other outputs and from the inputs, and absent unless ``--force``.
Files are written atomically (a temporary name in the same folder, renamed into place), side outputs
(plots, trajectories) before the main output, so a failure leaves no partial file under any name.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgediff.runtime.errors import InputError


def check_outputs(outputs: dict[str, Path | None], *, inputs: dict[str, Path | None] | None = None,
                  force: bool = False) -> None:
    """Refuse unusable outputs up front; ``outputs`` and ``inputs`` map option names to paths."""
    seen: dict[Path, str] = {}
    for option, path in (inputs or {}).items():
        if path is not None and str(path) != "":
            seen.setdefault(_key(path), option)
    for option, path in outputs.items():
        if path is None:
            continue
        key = _key(path)
        if key in seen:
            other = seen[key]
            raise InputError(f"{option} {path} is also {other}: choose a different file for {option}")
        check_output(option, path, force, suffix=".png" if option == "--plot" else None)
        seen[key] = option


def check_output(option: str, path: Path, force: bool = False, suffix: str | None = None) -> None:
    """``suffix``: the file kind this output always is (plots are PNG files whatever they are called)."""
    if str(path).strip() in ("", "."):
        raise InputError(f"{option} is empty: give a file name")
    if suffix is not None and Path(path).suffix.lower() != suffix:
        raise InputError(f"{option} {path}: this output is a {suffix[1:].upper()} file: name it NAME{suffix}")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory: give a file name inside it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: folder {folder} is not writable: choose another place")
    if path.exists() and not force:
        raise InputError(f"{option} {path} exists: pass --force to replace it, or choose another name")


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()
