"""The one manifest schema: parse ``manifest.json`` within size and depth limits, then check every
field any reader uses (type, shape, range) before anything uses it.

A bundle's manifest is data from a file that may have been edited, truncated or fabricated; each
violation is one :class:`BundleError` naming the field, what it holds and what was expected.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from edgediff.runtime import grids
from edgediff.runtime.errors import BundleError, EdgediffError
from edgediff.runtime.normalisation import NORMALISATIONS
from edgediff.runtime.schedule import NoiseSchedule

MAX_BYTES = 1 << 20  # a real manifest is a few kB
MAX_DEPTH = 16  # deepest real field: parity checks (5 levels)
MAX_BATCH = 1 << 16
MAX_SAMPLE_SIZE = 1 << 22  # elements per sample
SCALE_RANGE = (1e-30, 1e30)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse(raw: bytes, where: str) -> dict[str, Any]:
    """The manifest's JSON object, refused when too big, too deep, not UTF-8 or not an object."""
    if len(raw) > MAX_BYTES:
        raise BundleError(f"{where}: {len(raw)} bytes, more than the {MAX_BYTES} a manifest may have; re-export the bundle")
    try:
        text = raw.decode("utf-8")
        _check_depth(text, where)
        value = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BundleError(f"{where}: not UTF-8 text; re-export the bundle") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: corrupt JSON ({str(exc).splitlines()[0]}); re-export the bundle") from None
    if not isinstance(value, dict):
        raise BundleError(f"{where}: holds a JSON {type(value).__name__}, not an object; re-export the bundle")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_depth(text: str, where: str) -> None:
    """Nesting deeper than MAX_DEPTH is refused before the parser recurses into it."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BundleError(f"{where}: nested more than {MAX_DEPTH} levels deep; not an edgediff manifest")
        elif ch in "]}":
            depth -= 1


def _fail(where: str, field: str, value: Any, expected: str, fix: str = "re-export the bundle") -> BundleError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return BundleError(f"{where}: {field} is {shown}: expected {expected}; {fix}")


def _int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _dict(m: dict[str, Any], key: str, where: str, required: bool = True) -> dict[str, Any]:
    value = m.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, key, value, "an object")
    return value


def validate(m: dict[str, Any], where: str) -> None:
    """Check every field a reader uses; see the module docstring."""
    _files(_dict(m, "files", where), where)
    try:
        NoiseSchedule.from_dict(_dict(m, "schedule", where))
    except (EdgediffError, TypeError, ValueError, KeyError, OverflowError) as exc:
        raise BundleError(f"{where}: schedule record unusable ({exc}); re-export the bundle") from None
    shape = m.get("sample_shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3 and all(_int(s, 1, MAX_SAMPLE_SIZE) for s in shape)
            and math.prod(shape) <= MAX_SAMPLE_SIZE):
        raise _fail(where, "sample_shape", shape, "a list of 1 to 3 positive sizes, e.g. [2, 256]")
    _batch(_dict(m, "batch", where), where)
    _normalisation(_dict(m, "normalisation", where), where)
    engines = m.get("engines", [])
    if not isinstance(engines, list) or not all(isinstance(e, dict) for e in engines):
        raise _fail(where, "engines", engines, "a list of engine records")
    for i, e in enumerate(engines):
        _engine(e, f"engines[{i}]", m["files"], where)
    data = _dict(m, "data", where, required=False)
    if data:
        if data.get("dataset") is not None and not isinstance(data.get("dataset"), str):
            raise _fail(where, "data.dataset", data.get("dataset"), "a dataset name or null")
        for key, hi in (("length", MAX_SAMPLE_SIZE), ("seed", 2**63 - 1)):
            if key in data and not _int(data[key], 0, hi):
                raise _fail(where, f"data.{key}", data[key], "a non-negative integer")
    distilled = m.get("distilled")
    if distilled is not None:
        _distilled(distilled, NoiseSchedule.from_dict(m["schedule"]).T, where)
    if m.get("sampling") is not None:
        wrong = grids.problem(m["sampling"], NoiseSchedule.from_dict(m["schedule"]).T)
        if wrong:
            raise _fail(where, "sampling", m["sampling"], wrong,
                        "set the grid again with `edgediff export grid BUNDLE --grid SPEC` (or --clear)")
    for key in ("model", "parity", "source_run", "versions", "io"):
        if key in m and not isinstance(m[key], dict):
            raise _fail(where, key, m[key], "an object")


def _distilled(d: Any, T: int, where: str) -> None:
    nfe = d.get("nfe") if isinstance(d, dict) else None
    ts = d.get("timesteps") if isinstance(d, dict) else None
    if not (_int(nfe, 1, T) and isinstance(ts, list) and len(ts) == nfe and all(_int(t, 0, T - 1) for t in ts)
            and all(a > b for a, b in zip(ts, ts[1:])) and d.get("sampler") == "ddim"
            and isinstance(d.get("eta", 0.0), (int, float)) and not isinstance(d.get("eta", 0.0), bool)):
        raise _fail(where, "distilled", d, "nfe, its decreasing timesteps in 0..T-1 and sampler ddim")


def _files(files: dict[str, Any], where: str) -> None:
    if "model.onnx" not in files:
        raise BundleError(f"{where}: lists no model.onnx; re-export the bundle")
    for name, entry in files.items():
        if not FILE_NAME.match(name):
            raise _fail(where, "a file name", name, "a plain file name inside the bundle")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not SHA256.match(entry["sha256"]):
            raise _fail(where, f"files[{name!r}]", entry, "an object with a 64-hex-digit sha256")
        if "bytes" in entry and not _int(entry["bytes"], 0, 1 << 40):
            raise _fail(where, f"files[{name!r}].bytes", entry["bytes"], "a file size in bytes")


def _batch(b: dict[str, Any], where: str) -> None:
    lo, hi, opt = b.get("min"), b.get("max"), b.get("opt", b.get("min"))
    if not (_int(lo, 1, MAX_BATCH) and _int(hi, 1, MAX_BATCH) and _int(opt, 1, MAX_BATCH) and lo <= opt <= hi):
        raise _fail(where, "batch", b, f"min <= opt <= max, integers in 1..{MAX_BATCH}")
    if "dynamic" in b and not isinstance(b["dynamic"], bool):
        raise _fail(where, "batch.dynamic", b["dynamic"], "true or false")


def _normalisation(n: dict[str, Any], where: str) -> None:
    kind, scale = n.get("kind"), n.get("scale")
    if kind not in NORMALISATIONS:
        raise _fail(where, "normalisation.kind", kind, f"one of {', '.join(NORMALISATIONS)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise _fail(where, "normalisation.scale", scale, f"a finite positive number in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")


def _engine(e: dict[str, Any], field: str, files: dict[str, Any], where: str) -> None:
    if not isinstance(e.get("file"), str) or e["file"] not in files:
        raise _fail(where, f"{field}.file", e.get("file"), "a plan file listed in files")
    for key in ("precision", "tensorrt", "compute_capability"):
        if not isinstance(e.get(key), str):
            raise _fail(where, f"{field}.{key}", e.get(key), "a string")
    profile = e.get("profile")
    if not (isinstance(profile, dict) and all(_int(profile.get(k), 1, MAX_BATCH) for k in ("min", "opt", "max"))
            and profile["min"] <= profile["opt"] <= profile["max"]):
        raise _fail(where, f"{field}.profile", profile, "min <= opt <= max batch sizes")
