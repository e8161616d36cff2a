"""Bundles on disk: read the manifest, verify every file's sha256 before anything parses it.

A bundle directory holds ``manifest.json``, ``model.onnx``, ``reference.npz`` and optionally
``model.fp16.onnx`` and TensorRT plans. The manifest lists each file's sha256; a missing, altered
or unlisted-but-referenced file is refused with a message that names it.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime import manifest as schema
from edgediff.runtime.errors import BundleError, EdgediffError
from edgediff.runtime.normalisation import Normalisation
from edgediff.runtime.schedule import NoiseSchedule

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "edgediff-bundle"
FORMAT_VERSION = 1
FINGERPRINT_KEY = "edgediff.schedule_fingerprint"
NORMALISATION_KEY = "edgediff.normalisation"
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


def label(root: str | Path) -> str:
    """How a report names a bundle: a shipped prior by its name (the same in every checkout), any other
    bundle by its path as given."""
    path = Path(root)
    return path.name if path.resolve().parent == SHIPPED_DIR and (path / MANIFEST).is_file() else str(root)


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
            raw = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: unreadable ({exc.strerror}); check its permissions") from None
        manifest = schema.parse(raw, str(path))
        if manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path}: not an edgediff bundle manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{path}: format_version {manifest.get('format_version')!r} is not {FORMAT_VERSION}; "
                              "re-export the bundle with this edgediff")
        schema.validate(manifest, str(path))
        bundle = cls(root, manifest)
        bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every listed file exists, stays inside the bundle and matches its sha256."""
        for name, entry in self.manifest["files"].items():
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

    def stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The training frames' mean (n,) and covariance (n, n), float64, network units; None when the
        bundle has no stats.npz (bundles of points, or of user data that was gone at export)."""
        if "stats.npz" not in self.manifest["files"]:
            return None
        where = self.root / "stats.npz"
        n = int(np.prod(self.sample_shape))
        try:
            with np.load(self.path("stats.npz"), allow_pickle=False) as data:
                mean, cov = np.asarray(data["mean"], np.float64), np.asarray(data["cov"], np.float64)
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise BundleError(f"{where}: unreadable ({type(exc).__name__}); re-export the bundle") from None
        if mean.shape != (n,) or cov.shape != (n, n) or not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise BundleError(f"{where}: mean {mean.shape} / covariance {cov.shape} do not fit frames of {self.sample_shape}")
        return mean, cov

    def reference(self) -> dict[str, np.ndarray]:
        """The torch model's outputs on fixed inputs, in the model's own dtypes: ``x_t`` float32
        (B, *sample_shape), ``t`` float32 (B,) (int64 in bundles from before), ``eps`` float32."""
        where = self.root / "reference.npz"
        try:
            with np.load(self.path("reference.npz"), allow_pickle=False) as data:
                ref = {k: np.asarray(data[k]) for k in ("x_t", "t", "eps")}
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise BundleError(f"{where}: unreadable ({type(exc).__name__}: {str(exc)[:80]}); re-export the bundle") from None
        shape = (len(ref["t"]), *self.sample_shape)
        if (ref["t"].ndim != 1 or ref["x_t"].shape != shape or ref["eps"].shape != shape or len(ref["t"]) < 1
                or ref["t"].dtype.kind not in "fiu" or ref["x_t"].dtype.kind != "f" or ref["eps"].dtype.kind != "f"):
            raise BundleError(f"{where}: arrays of shapes {ref['x_t'].shape}, {ref['t'].shape}, {ref['eps'].shape} do not "
                              f"match the sample shape {self.sample_shape}; re-export the bundle")
        if not all(np.isfinite(v).all() for v in ref.values()) or not np.all((ref["t"] >= 0) & (ref["t"] < self.schedule.T)):
            raise BundleError(f"{where}: holds non-finite values or timesteps outside 0..T-1; re-export the bundle")
        return {"x_t": ref["x_t"].astype(np.float32), "t": ref["t"].astype(np.float32), "eps": ref["eps"].astype(np.float32)}
