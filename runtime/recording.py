"""Long recordings on disk and raw sample streams, read and written in chunks (numpy only: SigMF is
JSON beside raw samples).

A recording is a complex sequence: a SigMF pair ``NAME.sigmf-meta`` + ``NAME.sigmf-data`` (complex
datatypes cf32/cf64/ci32/ci16/ci8, little- or big-endian) or a 1-D complex ``.npy``. Readers read
chunks at file offsets and writers append chunks (no memory map: mapped pages would count towards
the process's resident memory and grow with the recording). Writers fill a temporary file in the
output's folder, in the input's own datatype, and only :meth:`RecordingWriter.commit` renames it
(data first, then the metadata) to the final names, so an interrupted run leaves nothing there.

Raw streams (:class:`RawReader`, :class:`RawWriter`): interleaved I/Q in one of SigMF's datatypes
(``cf32_le``, ``ci16_le``, ``ci8``: what ``rtl_sdr``/``csdr``, ``hackrf_transfer`` and UHD's tools
write) on a pipe, read as the bytes arrive (a short read is not an end; a partial sample waits for
its other bytes) and written chunk by chunk; integers are scaled to +-1 full scale as in SigMF files.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.atomic import naming, reclaim, tmp_prefix
from edgediff.runtime.errors import InputError

#: SigMF complex datatypes -> (numpy scalar type of one component, integer full scale or None)
COMPLEX_TYPES = {"cf64": (np.float64, None), "cf32": (np.float32, None), "ci32": (np.int32, 2**31),
                 "ci16": (np.int16, 2**15), "ci8": (np.int8, 2**7)}
MAX_META_BYTES = 64 << 20
#: The datatypes a raw stream may carry (SigMF's names).
STREAM_TYPES = ("cf32_le", "ci16_le", "ci8")
#: A .npy written without knowing its length up front reserves this many header bytes.
NPY_HEADER = 128


def sigmf_pair(path: Path) -> tuple[Path, Path]:
    """(meta, data) paths of a SigMF recording named by either file or by its base name."""
    text = str(path)
    for suffix in (".sigmf-meta", ".sigmf-data", ".sigmf"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + ".sigmf-meta"), Path(text + ".sigmf-data")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, read without touching its data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"npy format version {version} (edgediff reads 1.0 and 2.0)")
        return tuple(shape), dtype, fh.tell()


def is_sigmf(path: Path) -> bool:
    return str(path).endswith((".sigmf-meta", ".sigmf-data", ".sigmf"))


def component_dtype(datatype: str) -> tuple[np.dtype, float | None]:
    """numpy dtype of one I or Q value and the integer full scale (None for floats)."""
    if not isinstance(datatype, str) or not datatype.startswith(tuple(COMPLEX_TYPES)):
        raise InputError(f"core:datatype {datatype!r} is not a complex type edgediff reads: expected one of "
                         f"{', '.join(k + '_le' for k in COMPLEX_TYPES)} (or _be)")
    base = datatype.split("_")[0]
    kind, scale = COMPLEX_TYPES[base]
    endian = "<" if datatype.endswith("_le") or base == "ci8" else ">" if datatype.endswith("_be") else None
    if endian is None:
        raise InputError(f"core:datatype {datatype!r}: give the byte order (_le or _be)")
    return np.dtype(kind).newbyteorder(endian), scale


class Recording:
    """A complex recording: ``length`` samples, ``read(start, count)`` -> complex128 (count,)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta: dict[str, Any] | None = None
        if is_sigmf(self.path):
            self._open_sigmf()
        else:
            self._open_npy()

    def _open_sigmf(self) -> None:
        meta_path, data_path = sigmf_pair(self.path)
        for p in (meta_path, data_path):
            if not p.is_file():
                raise InputError(f"{p}: no such file; a SigMF recording needs both .sigmf-meta and .sigmf-data")
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise InputError(f"{meta_path}: {meta_path.stat().st_size} bytes of metadata is more than edgediff reads")
        try:
            meta = json.loads(meta_path.read_text())
            datatype = meta["global"]["core:datatype"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{meta_path}: not SigMF metadata with a global core:datatype ({type(exc).__name__})") from None
        self.meta, self.data_path = meta, data_path
        dtype, self.full_scale = component_dtype(datatype)
        self.datatype = datatype
        size = data_path.stat().st_size
        if size % (2 * dtype.itemsize):
            raise InputError(f"{data_path}: {size} bytes is not a whole number of {datatype} samples")
        self.length = size // (2 * dtype.itemsize)
        self._dtype, self._offset, self._width = dtype, 0, 2
        self.sample_rate = _positive(meta["global"].get("core:sample_rate"))

    def _open_npy(self) -> None:
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        try:
            shape, dtype, offset = npy_header(self.path)
        except (ValueError, OSError) as exc:
            raise InputError(f"{self.path}: not a readable .npy recording ({str(exc).splitlines()[0][:100]})") from None
        if len(shape) != 1 or dtype.kind != "c" or dtype.hasobject:
            raise InputError(f"{self.path}: shape {shape}, dtype {dtype}: a recording is a 1-D complex array "
                             "(frames (N, 2, L) go through the frame path)")
        self.length, self.full_scale = int(shape[0]), None
        self._dtype, self._offset, self._width = dtype, offset, 1
        self.datatype, self.sample_rate, self.data_path = str(dtype), None, self.path

    def read(self, start: int, count: int) -> np.ndarray:
        count = max(0, min(count, self.length - start))
        raw = np.fromfile(self.data_path, dtype=self._dtype, count=count * self._width,
                          offset=self._offset + start * self._width * self._dtype.itemsize)
        if self._width == 1:
            return raw.astype(np.complex128)
        raw = raw.reshape(-1, 2)
        z = raw[:, 0].astype(np.float64) + 1j * raw[:, 1].astype(np.float64)
        return z / self.full_scale if self.full_scale else z


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


class RecordingWriter:
    """Writes a recording like ``like`` (datatype, sample rate, captures, annotations) in chunks."""

    def __init__(self, out: Path, like: Recording, generator: str):
        self.out, self.like, self.generator = Path(out), like, generator
        self.sigmf = is_sigmf(self.out)
        target = sigmf_pair(self.out)[1] if self.sigmf else self.out
        for t in (sigmf_pair(self.out) if self.sigmf else (self.out,)):
            reclaim(t)
        with naming(target):
            fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(target), dir=target.parent)
        self.tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self.position = 0
        if self.sigmf:
            datatype = like.datatype if like.meta is not None or like.datatype in STREAM_TYPES else "cf32_le"
            self.dtype, self.full_scale = component_dtype(datatype)
            self.datatype = datatype
        elif like.length is None:  # a stream: the header is written at commit, into reserved bytes
            self._fh.write(bytes(NPY_HEADER))
        else:
            np.lib.format.write_array_header_1_0(self._fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.complex64)),
                                                            "fortran_order": False, "shape": (like.length,)})

    def write(self, start: int, z: np.ndarray) -> None:
        """Append samples ``start .. start + len(z)`` (spans arrive in order, without gaps)."""
        with naming(self.out):  # a full disk names the output, not the temporary file
            self._write(start, z)

    def commit(self, description: str) -> tuple[Path, ...]:
        """Flush, then rename into place: the data, then (SigMF) the metadata written last."""
        with naming(self.out):
            return self._commit(description)

    def _write(self, start: int, z: np.ndarray) -> None:
        if start != self.position:
            raise InputError(f"recording writer: span at {start} after {self.position}; spans must arrive in order")
        if self.sigmf:
            block = np.stack([z.real, z.imag], axis=1)
            if self.full_scale:  # integer types: back to counts, clipped to the type's range
                info = np.iinfo(self.dtype)
                block = np.clip(np.round(block * self.full_scale), info.min, info.max)
            self._fh.write(block.astype(self.dtype).tobytes())
        else:
            self._fh.write(z.astype(np.complex64).tobytes())
        self.position += len(z)

    def _commit(self, description: str) -> tuple[Path, ...]:
        if self.like.length is not None and self.position != self.like.length:
            raise InputError(f"recording writer: {self.position} of {self.like.length} samples written")
        if not self.sigmf and self.like.length is None:
            self._fh.seek(0)
            self._fh.write(npy_header_bytes(self.position))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self.tmp, 0o644)
        if not self.sigmf:
            os.replace(self.tmp, self.out)
            return (self.out,)
        meta_path, data_path = sigmf_pair(self.out)
        meta = self._meta(description)
        fd, tmp_meta = tempfile.mkstemp(prefix=tmp_prefix(meta_path), dir=meta_path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh, indent=2)
        os.chmod(tmp_meta, 0o644)
        os.replace(self.tmp, data_path)
        os.replace(tmp_meta, meta_path)
        return meta_path, data_path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def _meta(self, description: str) -> dict[str, Any]:
        source = self.like.meta or {}
        glob = dict(source.get("global", {}))
        glob.pop("core:sha512", None)  # the samples changed
        glob.update({"core:datatype": self.datatype, "core:version": glob.get("core:version", "1.0.0"),
                     "core:description": description, "core:recorder": self.generator.split(" ")[0]})
        if self.like.sample_rate is not None:
            glob["core:sample_rate"] = self.like.sample_rate
        captures = source.get("captures") or [{"core:sample_start": 0}]
        annotations = list(source.get("annotations") or [])
        annotations.append({"core:sample_start": 0, "core:sample_count": int(self.position),
                            "core:generator": self.generator, "core:label": "edgediff output"})
        return {"global": glob, "captures": captures, "annotations": annotations}


def npy_header_bytes(length: int) -> bytes:
    """A version 1.0 .npy header for a complex64 vector of ``length``, exactly NPY_HEADER bytes long."""
    text = "{'descr': '<c8', 'fortran_order': False, 'shape': (%d,), }" % length
    pad = NPY_HEADER - 10 - len(text) - 1
    if pad < 0:
        raise InputError(f"{length} samples do not fit the stream's reserved .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", NPY_HEADER - 10) + (text + " " * pad + "\n").encode("latin1")


def stream_dtype(datatype: str) -> tuple[np.dtype, float | None]:
    """The component dtype and full scale of a raw stream's datatype (one of STREAM_TYPES)."""
    if datatype not in STREAM_TYPES:
        raise InputError(f"--datatype {datatype!r}: a raw stream is one of {', '.join(STREAM_TYPES)}")
    return component_dtype(datatype)


class RawReader:
    """Interleaved I/Q from a binary file object (a pipe): ``chunks()`` yields complex128 vectors."""

    def __init__(self, fileobj: Any, datatype: str, chunk: int = 1 << 14, sample_rate: float | None = None):
        self.fileobj, self.datatype, self.chunk = fileobj, datatype, chunk
        self.dtype, self.full_scale = stream_dtype(datatype)
        self.sample_rate, self.meta, self.length = sample_rate, None, None
        self.samples = 0

    def chunks(self) -> Any:
        size = 2 * self.dtype.itemsize
        pending = b""
        fd = self.fileobj.fileno() if hasattr(self.fileobj, "fileno") else None
        while True:
            # os.read returns what the pipe holds now (up to a chunk): a live stream is not held back
            data = os.read(fd, self.chunk * size) if fd is not None else self.fileobj.read(self.chunk * size)
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % size
            if whole:
                yield self._decode(pending[:whole])
                pending = pending[whole:]
        if pending:
            raise InputError(f"the input ended with {len(pending)} byte(s) of a partial {self.datatype} sample "
                             f"({size} bytes each): check --datatype")

    def _decode(self, data: bytes) -> np.ndarray:
        raw = np.frombuffer(data, dtype=self.dtype).reshape(-1, 2)
        z = raw[:, 0].astype(np.float64) + 1j * raw[:, 1].astype(np.float64)
        self.samples += len(z)
        return z / self.full_scale if self.full_scale else z


class RawWriter:
    """Interleaved I/Q to a binary file object (a pipe) in ``datatype``, written and flushed per chunk."""

    def __init__(self, fileobj: Any, datatype: str):
        self.fileobj, self.datatype = fileobj, datatype
        self.dtype, self.full_scale = stream_dtype(datatype)
        self.position = 0

    def write(self, start: int, z: np.ndarray) -> None:
        block = np.stack([z.real, z.imag], axis=1)
        if self.full_scale:
            info = np.iinfo(self.dtype)
            block = np.clip(np.round(block * self.full_scale), info.min, info.max)
        self.fileobj.write(block.astype(self.dtype).tobytes())
        self.fileobj.flush()
        self.position += len(z)

    def commit(self, description: str) -> tuple[Any, ...]:
        self.fileobj.flush()
        return ()

    def abort(self) -> None:
        pass
