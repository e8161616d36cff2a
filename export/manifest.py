"""The bundle manifest: what an edge device needs to know, and the sha256 of every file.

Written last, after every file it lists; rewritten atomically when an engine is added.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edgediff import __version__
from edgediff.runtime.atomic import write_json
from edgediff.runtime.bundle import BUNDLE_FORMAT, FORMAT_VERSION, MANIFEST, sha256_file
from edgediff.runtime.errors import InputError


def io_spec(sample_shape: tuple[int, ...], batch: int | None) -> dict[str, Any]:
    b: Any = batch if batch is not None else "batch"
    return {
        "inputs": [
            {"name": "x_t", "dtype": "float32", "shape": [b, *sample_shape]},
            {"name": "t", "dtype": "float32", "shape": [b], "meaning": "0-based timestep index, as a float"},
        ],
        "outputs": [{"name": "eps", "dtype": "float32", "shape": [b, *sample_shape]}],
    }


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def build(
    *, root: Path, files: list[str], model: dict[str, Any], sample_shape: tuple[int, ...], batch_range: dict[str, Any],
    normalisation: dict[str, Any], schedule: dict[str, Any], versions: dict[str, str], parity: dict[str, Any],
    source_run: dict[str, Any], extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgediff": __version__,
        "model": model,
        "sample_shape": list(sample_shape),
        "batch": batch_range,
        "normalisation": normalisation,
        "schedule": schedule,
        "io": io_spec(sample_shape, batch_range["max"] if not batch_range["dynamic"] else None),
        "files": {name: file_entry(root / name) for name in files},
        "versions": versions,
        "parity": parity,
        "source_run": source_run,
        "engines": [],
    }
    manifest.update(extra or {})
    return manifest


def write(root: Path, manifest: dict[str, Any]) -> None:
    write_json(root / MANIFEST, manifest)


def read(root: Path) -> dict[str, Any]:
    return json.loads((root / MANIFEST).read_text())


def set_sampling(root: Path, record: dict[str, Any] | None) -> dict[str, Any]:
    """Give the bundle at ``root`` its own grid (runtime/grids.py; DDIM's, or the sampler it names), or take it away (None), by
    rewriting its manifest atomically; the files and their hashes are untouched. Returns the manifest."""
    manifest = read(root)
    if manifest.get("distilled"):
        raise InputError(f"{root}: a distilled bundle runs only its own {manifest['distilled'].get('nfe')} timesteps; "
                         "give the grid to its teacher instead")
    if record is None:
        manifest.pop("sampling", None)
    else:
        manifest["sampling"] = record
    write(root, manifest)
    return manifest
