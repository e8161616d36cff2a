"""Checkpoints in safetensors and JSON only: weights, EMA weights, optimizer state, a small state.

Each checkpoint is a directory ``checkpoints/step_XXXXXXXX`` built under a temporary name and
renamed into place, so a kill at any moment leaves the previous checkpoint intact. Loading accepts
nothing but safetensors and JSON (never pickle).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from edgediff.runtime.atomic import TMP_PREFIX, atomic_directory, atomic_path, reclaim, tmp_prefix
from edgediff.runtime.errors import BundleError

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d{8})$")
FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")


#: The one metadata key of the weights files we write; its value is the metadata as sorted JSON.
METADATA_KEY = "edgediff"


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a flat tensor dict as safetensors. The same tensors and metadata give the same
    bytes: safetensors writes its metadata map in a random order per call, so ours travels as one key
    (:data:`METADATA_KEY`, sorted JSON) and a file's sha256 names its content."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    header = None if metadata is None else {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=header)


def weights_metadata(path: Path) -> dict[str, str]:
    """The metadata :func:`save_weights` wrote (files from before it was one key: their keys as they are)."""
    def read(file: str) -> dict[str, str]:
        with safe_open(file, framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[METADATA_KEY]) if set(meta) == {METADATA_KEY} else dict(meta)

    return _read_safetensors(path, read)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt file is a clear error naming it."""
    return _read_safetensors(path, load_file)


def weight_names(path: Path) -> list[str]:
    """The tensor names of a safetensors file, from its header alone (same errors as :func:`load_weights`)."""
    def names(file: str) -> list[str]:
        with safe_open(file, framework="pt") as f:
            return list(f.keys())

    return _read_safetensors(path, names)


def _read_safetensors(path: Path, read: Any) -> Any:
    if not path.is_file():
        raise BundleError(f"{path}: missing; the run has no weights (train it, or pass the right run directory)")
    try:
        return read(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: corrupt safetensors file ({exc}); re-train or restore it") from None


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON (param groups)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            tensors[f"{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    # a captured step keeps its learning rate in a device tensor: JSON gets the number
    groups = [{k: float(v) if torch.is_tensor(v) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    root: Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int = 2,
) -> Path:
    """Write ``root/step_XXXXXXXX`` atomically and prune all but the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step_{step:08d}"
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    with atomic_directory(target, replace=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(tmp / "model.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta}, indent=1))
    prune(root, keep)
    return target


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, each renamed to a temporary name first: a kill in the
    middle of a deletion leaves a leftover (reclaimed by a later save), never a half checkpoint under a final
    name; and reclaim what dead processes left, such as a deletion they did not finish."""
    # one reclaim per target (it scans the folder itself), not one per leftover; step_ names hold no dot
    for name in {e.name[len(TMP_PREFIX):].split(".", 1)[0] for e in root.iterdir() if e.name.startswith(TMP_PREFIX)}:
        reclaim(root / name)
    for old in list_checkpoints(root)[:-keep]:
        aside = Path(tempfile.mkdtemp(prefix=tmp_prefix(old), dir=root))
        os.replace(old, aside / "x")
        shutil.rmtree(aside, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories, oldest first (temporary leftovers are ignored)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def intact(root: Path) -> Iterator[dict[str, Any]]:
    """Checkpoints that read completely and pass the run schema, newest first; damaged ones are skipped
    with a warning (a kill mid-write leaves at most a temporary directory, never a half checkpoint)."""
    from edgediff.train.run_schema import MAX_STATE_BYTES, read, validate_state

    for path in reversed(list_checkpoints(root)):
        try:
            state = read(path / "state.json", MAX_STATE_BYTES)
            validate_state(state, str(path / "state.json"))
            yield {
                "path": path,
                "state": state,
                "model": load_file(str(path / "model.safetensors")),
                "ema": load_file(str(path / "ema.safetensors")),
                "optimizer": optimizer_from_flat(load_file(str(path / "optimizer.safetensors")), state["optimizer"]),
            }
        except (OSError, ValueError, KeyError, SafetensorError, BundleError) as exc:
            log.warning("checkpoint %s is damaged (%s); trying an older one", path.name, str(exc)[:200])


def load_latest(root: Path) -> dict[str, Any] | None:
    """The newest intact checkpoint, or None."""
    return next(intact(root), None)
