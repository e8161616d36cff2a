"""The user's recordings: ``.npy`` / ``.npz`` arrays and SigMF recordings, checked and framed.

Arrays are read with ``allow_pickle=False`` (never unpickle a user file). Accepted shapes:
(N, C, L) real signal frames, (N, L) complex frames (converted to I/Q, C = 2), (N, C, H, W) real
maps (the 2D U-Net's images; complex maps are refused: which axis holds I/Q is then the user's
call) and (N, D) real points. SigMF recordings (``NAME.sigmf-meta`` + ``NAME.sigmf-data``) are read with the ``sigmf``
package and cut into frames of length L with a hop H.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgediff.runtime.errors import DataError
from edgediff.train.rf import to_iq

log = logging.getLogger(__name__)

ARRAY_SUFFIXES = (".npy", ".npz")
SIGMF_SUFFIXES = (".sigmf-meta", ".sigmf-data")
#: Complex datatypes this reader accepts (the sigmf package scales integer types to [-1, 1]).
SIGMF_DATATYPES = ("cf32_le", "cf64_le", "ci32_le", "ci16_le", "ci8")


def load_user_data(path: str | Path, *, frame: int, hop: int | None = None) -> np.ndarray:
    """float32 (N, C, L) frames, (N, C, H, W) maps or (N, D) points from a user file; raises DataError when unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES + SIGMF_SUFFIXES:
        raise DataError(
            f"{path}: unknown extension {suffix or '(none)'!r}: expected "
            f"{', '.join(ARRAY_SUFFIXES + SIGMF_SUFFIXES)}"
        )
    if suffix in SIGMF_SUFFIXES:
        data = frames_from_sigmf(path, frame, hop or frame)
    else:
        if not path.is_file():
            raise DataError(f"{path}: no such file; check the --data path")
        data = _shape_array(path, _read_array(path))
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {bad} values are NaN or Inf: clean or drop those frames before training")
    return data


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if len(names) != 1 and "x" not in names:
                raise DataError(f"{path}: holds arrays {names}: expected one array, or one named 'x'")
            return archive["x" if "x" in names else names[0]]
    except DataError:
        raise
    except ValueError as exc:  # pickled object arrays, corrupt or truncated headers
        raise DataError(f"{path}: not a readable numpy array ({exc}); save it with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a numpy file ({exc}); save it with numpy.save") from None
    except Exception as exc:  # zipfile.BadZipFile and friends from a damaged .npz
        raise DataError(f"{path}: cannot be read as a numpy file ({type(exc).__name__}: {exc})") from None


def _shape_array(path: Path, x: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(x):
        if x.ndim == 3:
            raise DataError(f"{path}: complex maps of shape {x.shape}: save them as real I/Q channels (N, 2, H, W) "
                            "with numpy.stack([x.real, x.imag], axis=1)")
        if x.ndim != 2:
            raise DataError(f"{path}: complex array of shape {x.shape}: expected (N, L) complex frames")
        return to_iq(x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: dtype {x.dtype}: expected real or complex numbers")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{path}: array of shape {x.shape} (rank {x.ndim}): expected (N, C, L), (N, C, H, W), "
                        "(N, L) complex or (N, D)")
    if x.shape[0] < 1 or min(x.shape) < 1:
        raise DataError(f"{path}: array of shape {x.shape} is empty")
    return x.astype(np.float32)


def frames_from_sigmf(path: Path, frame: int, hop: int) -> np.ndarray:
    """Cut a SigMF recording into float32 I/Q frames (N, 2, frame) with the given hop."""
    try:
        from sigmf import sigmffile
    except ImportError:
        raise DataError("reading SigMF needs the sigmf package: pip install 'edgediff[sigmf]'") from None
    base = path.with_suffix("")
    meta_path, data_path = base.with_suffix(".sigmf-meta"), base.with_suffix(".sigmf-data")
    for p in (meta_path, data_path):
        if not p.is_file():
            raise DataError(f"{p}: no such file; a SigMF recording needs both .sigmf-meta and .sigmf-data")
    if frame < 1 or hop < 1:
        raise DataError(f"SigMF framing L={frame}, hop={hop}: expected positive integers")
    try:
        recording = sigmffile.fromfile(str(meta_path))
        datatype = recording.get_global_info().get("core:datatype")
        if datatype not in SIGMF_DATATYPES:
            raise DataError(
                f"{meta_path}: SigMF datatype {datatype!r} is not supported: expected one of {', '.join(SIGMF_DATATYPES)}"
            )
        samples = np.asarray(recording.read_samples())
    except DataError:
        raise
    except Exception as exc:  # sigmf raises its own errors, json and OS errors for broken files
        raise DataError(f"{meta_path}: cannot read the SigMF recording ({type(exc).__name__}: {exc})") from None
    samples = samples.reshape(-1)
    if samples.size < frame:
        raise DataError(f"{data_path}: {samples.size} samples are too few for one frame of L={frame}; lower --sigmf-frame")
    starts = np.arange(0, samples.size - frame + 1, hop)
    frames = samples[starts[:, None] + np.arange(frame)[None]]
    log.info("SigMF %s: %d samples (%s) -> %d frames of %d, hop %d", meta_path.name, samples.size, datatype,
             len(frames), frame, hop)
    return to_iq(frames)
