"""Bundles on disk: read the manifest, verify every file's sha256 before anything parses it.

A bundle directory holds ``manifest.json``, ``model.onnx``, ``reference.npz`` and optionally
``model.fp16.onnx`` and TensorRT plans. The manifest lists each file's sha256; a missing, altered
or unlisted-but-referenced file is refused with a message that names it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.errors import BundleError, EdgediffError
from edgediff.runtime.normalisation import Normalisation
from edgediff.runtime.schedule import NoiseSchedule

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "edgediff-bundle"
FORMAT_VERSION = 1
FINGERPRINT_KEY = "edgediff.schedule_fingerprint"
#: The priors edgediff ships, one bundle directory each; a bare name such as ``rf-qpsk`` resolves here.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "priors"
SHIPPED_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def shipped() -> list[str]:
    """Names of the shipped priors present in this installation."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / MANIFEST).is_file())


def resolve(name_or_path: str | Path) -> Path:
    """A bundle directory from a path, or from the short name of a shipped prior (a path wins)."""
    path = Path(name_or_path)
    if path.exists() or not SHIPPED_NAME.match(str(name_or_path)):
        return path
    if (SHIPPED_DIR / str(name_or_path) / MANIFEST).is_file():
        return SHIPPED_DIR / str(name_or_path)
    names = ", ".join(shipped()) or "none installed"
    raise BundleError(f"{name_or_path}: no such bundle directory and no shipped prior of that name "
                      f"(shipped: {names}); create a bundle with `edgediff export onnx RUN --out DIR`")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Bundle:
    """A verified bundle: its manifest and paths to files whose hashes matched."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        """Open and verify a bundle directory, or a shipped prior by its short name."""
        root = resolve(root)
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle directory (create one with `edgediff export onnx RUN --out DIR`)")
        path = root / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: missing; {root} is not a bundle")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: corrupt JSON ({exc}); re-export the bundle") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path}: not an edgediff bundle manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}; "
                              "re-export the bundle with this edgediff")
        bundle = cls(root, manifest)
        bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every listed file exists, stays inside the bundle and matches its sha256."""
        files = self.manifest.get("files")
        if not isinstance(files, dict) or "model.onnx" not in files:
            raise BundleError(f"{self.root / MANIFEST}: lists no model.onnx; re-export the bundle")
        for name, entry in files.items():
            path = self._inside(name)
            if not path.is_file():
                raise BundleError(f"{path}: listed in the manifest but missing; re-export or restore the bundle")
            digest = sha256_file(path)
            if digest != entry.get("sha256"):
                raise BundleError(f"{path}: sha256 {digest[:12]}… does not match the manifest "
                                  f"({str(entry.get('sha256'))[:12]}…); the file was altered: re-export the bundle")

    def _inside(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise BundleError(f"{self.root / MANIFEST}: file {name!r} points outside the bundle; refusing it")
        return path

    def path(self, name: str) -> Path:
        """Path of a verified file; asking for an unlisted one is an error."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.root}: the bundle has no {name} (files: {', '.join(self.manifest['files'])})")
        return self._inside(name)

    # ---- what the manifest says ---------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        try:
            return NoiseSchedule.from_dict(self.manifest["schedule"])
        except (KeyError, EdgediffError) as exc:
            raise BundleError(f"{self.root / MANIFEST}: unusable schedule record ({exc})") from None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.manifest["sample_shape"])

    @property
    def normalisation(self) -> Normalisation:
        try:
            return Normalisation.from_dict(self.manifest["normalisation"])
        except (KeyError, EdgediffError) as exc:
            raise BundleError(f"{self.root / MANIFEST}: unusable normalisation record ({exc})") from None

    @property
    def batch_range(self) -> tuple[int, int]:
        b = self.manifest["batch"]
        return int(b["min"]), int(b["max"])

    @property
    def engines(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("engines", []))

    def reference(self) -> dict[str, np.ndarray]:
        """The torch model's outputs on fixed inputs: ``x_t`` float32, ``t`` int64, ``eps`` float32."""
        try:
            with np.load(self.path("reference.npz"), allow_pickle=False) as data:
                return {k: data[k] for k in ("x_t", "t", "eps")}
        except (ValueError, KeyError, OSError) as exc:
            raise BundleError(f"{self.root / 'reference.npz'}: unreadable ({exc}); re-export the bundle") from None
