"""One loader for user arrays: .npy or single-array .npz, never unpickled, checked before use.

Every problem is one :class:`InputError` that names the option: a missing file, a directory, an
unreadable or pickled file, several arrays in an .npz, text or object dtypes, an empty array,
NaN or Inf. numpy's own warnings are kept out of the terminal (they would precede the error line).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from edgediff.runtime.errors import InputError


def load_array(path: Path | None, option: str, *, allow_complex: bool = False, finite: bool = True,
               ndim: tuple[int, ...] | None = None) -> np.ndarray | None:
    """The numeric array stored at ``path`` (None stays None)."""
    if path is None:
        return None
    path = Path(path)
    if str(path).strip() == "":
        raise InputError(f"{option} is empty: give a .npy file")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory: expected a .npy file")
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = _read(path, option)
    return check_array(array, f"{option} {path}", allow_complex=allow_complex, finite=finite, ndim=ndim)


def _read(path: Path, option: str) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
                raise InputError(f"{option} {path}: not a .npy or .npz file (it starts with {magic[:6]!r}): "
                                 "save the array with numpy.save")
            data = np.load(fh, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                names = list(data.files)
                if len(names) != 1:
                    raise InputError(f"{option} {path}: an .npz with {len(names)} arrays ({', '.join(names[:5]) or 'none'}): "
                                     "save the one array as .npy")
                return np.asarray(data[names[0]])
            return np.asarray(data)
    except InputError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise InputError(f"{option} {path}: holds Python objects (pickled data), which edgediff never loads: "
                             "save a numeric array with numpy.save") from None
        raise InputError(f"{option} {path}: not a readable .npy/.npz array ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{option} {path}: not a readable .npy/.npz array ({type(exc).__name__})") from None


def check_array(array: np.ndarray, what: str, *, allow_complex: bool = False, finite: bool = True,
                ndim: tuple[int, ...] | None = None) -> np.ndarray:
    if array.dtype.kind not in "biufc":
        raise InputError(f"{what}: dtype {array.dtype} is not numeric: expected float values")
    if array.dtype.kind == "c" and not allow_complex:
        raise InputError(f"{what}: complex values: save I/Q as real channels, (N, 2, L) frames or (N, 2, H, W) maps: "
                         "numpy.stack([x.real, x.imag], axis=1)")
    if array.size == 0:
        raise InputError(f"{what}: empty array of shape {array.shape}")
    if ndim is not None and array.ndim not in ndim:
        raise InputError(f"{what}: shape {array.shape} has {array.ndim} dimensions: expected {' or '.join(map(str, ndim))}")
    if finite and not np.isfinite(array).all():
        raise InputError(f"{what}: holds NaN or Inf values")
    return array
