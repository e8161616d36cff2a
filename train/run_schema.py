"""The one schema for run directories: ``config.json``, ``summary.json`` and checkpoints' ``state.json``,
parsed within size and depth limits, every field any reader uses checked for type and range before a
model is built or a checkpoint loaded. The bundles' counterpart is :mod:`edgediff.runtime.manifest`.

A run directory is a file tree a user can edit, copy half or receive from elsewhere; each violation
is one :class:`BundleError` naming the file, the field, what it holds and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from edgediff.runtime import manifest
from edgediff.runtime.errors import BundleError, EdgediffError
from edgediff.runtime.normalisation import NORMALISATIONS

MAX_CONFIG_BYTES = 1 << 20
MAX_STATE_BYTES = 64 << 20  # loss rows of a long run
MAX_INT = 2**63 - 1
Check = Callable[[Any], bool]


def is_int(lo: int = 0, hi: int = MAX_INT) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return check


def one_of(*values: Any) -> Check:
    return lambda v: v in values and type(v) in {type(x) for x in values}


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def is_str(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 4096


IS_BOOL: Check = lambda v: isinstance(v, bool)  # noqa: E731


def _expect(check: Check, what: str) -> tuple[Check, str]:
    return check, what


UNET = {
    "channels": _expect(is_int(1, 64), "an integer in 1..64"),
    "length": _expect(is_int(8, 1 << 20), "an integer in 8..2^20"),
    "base_width": _expect(is_int(1, 4096), "an integer in 1..4096"),
    "mults": _expect(lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(is_int(1, 64)(m) for m in v),
                     "a list of 1 to 8 integers in 1..64"),
    "blocks_per_level": _expect(is_int(1, 16), "an integer in 1..16"),
    "attention": _expect(IS_BOOL, "true or false"),
    "heads": _expect(is_int(1, 64), "an integer in 1..64"),
    "norm_groups": _expect(is_int(2, 256), "an integer in 2..256"),
    "emb_dim": _expect(lambda v: is_int(2, 4096)(v) and v % 2 == 0, "an even integer in 2..4096"),
    "dropout": _expect(is_number(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    "stem_kernel": _expect(lambda v: is_int(1, 255)(v) and v % 2 == 1, "an odd integer in 1..255"),
    "attn_levels": _expect(lambda v: isinstance(v, list) and len(v) <= 8 and len(set(v)) == len(v)
                           and all(is_int(0, 7)(level) for level in v), "a list of distinct levels in 0..7"),
    "kind": _expect(one_of("unet1d"), "unet1d"),
}
UNET2D = {**{k: v for k, v in UNET.items() if k not in ("length", "stem_kernel", "kind")},
          "height": _expect(is_int(4, 1 << 12), "an integer in 4..4096"),
          "width": _expect(is_int(4, 1 << 12), "an integer in 4..4096"),
          "kind": _expect(one_of("unet2d"), "unet2d")}
MLP = {
    "dim": _expect(is_int(1, 64), "an integer in 1..64"),
    "width": _expect(is_int(1, 65536), "an integer in 1..65536"),
    "depth": _expect(is_int(1, 64), "an integer in 1..64"),
    "emb_dim": _expect(lambda v: is_int(2, 4096)(v) and v % 2 == 0, "an even integer in 2..4096"),
    "kind": _expect(one_of("mlp"), "mlp"),
}


def _train_fields() -> dict[str, tuple[Check, str]]:
    from edgediff.train.objective import AUGMENTS, LOSS_WEIGHTS, PREDICTIONS
    from edgediff.train.step import FRAMES

    pos = is_number(0.0, 1e6, lo_open=True)
    flag = optional(IS_BOOL)
    return {
        "steps": (is_int(1, 10**12), "an integer >= 1"), "batch": (is_int(1, 1 << 20), "an integer in 1..2^20"),
        "lr": (pos, "a number > 0"), "warmup": (is_int(0, 10**12), "an integer >= 0"),
        "min_lr_ratio": (is_number(0.0, 1.0), "a number in [0, 1]"), "weight_decay": (is_number(0.0, 1e3), "a number >= 0"),
        "grad_clip": (pos, "a number > 0"), "ema": (is_number(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
        "seed": (is_int(0, MAX_INT), "an integer in 0..2^63-1"), "checkpoint_every": (is_int(1, 10**12), "an integer >= 1"),
        "log_every": (is_int(1, 10**12), "an integer >= 1"), "prediction": (one_of(*PREDICTIONS), " or ".join(PREDICTIONS)),
        "loss_weight": (one_of(*LOSS_WEIGHTS), " or ".join(LOSS_WEIGHTS)), "snr_gamma": (pos, "a number > 0"),
        "augment": (one_of(*AUGMENTS), " or ".join(AUGMENTS)),
        "max_seconds": (optional(is_number(0.0, 1e9, lo_open=True)), "null or a number > 0"),
        "amp": (flag, "null, true or false"), "frames": (one_of(*FRAMES), " or ".join(FRAMES)),
        "graphs": (flag, "null, true or false"), "fused": (flag, "null, true or false"), "compile": (flag, "null, true or false"),
        "channels_last": (flag, "null, true or false"),
        "snapshot_every": (is_int(0, 10**12), "an integer >= 0"), "init_from": (optional(is_str), "null or a path"),
    }


def _data_fields() -> dict[str, tuple[Check, str]]:
    return {
        "dataset": (optional(is_str), "null or a dataset name"), "path": (optional(is_str), "null or a path"),
        "n": (is_int(1, 10**9), "an integer >= 1"), "length": (is_int(1, 1 << 24), "an integer >= 1"),
        "hop": (optional(is_int(1, 1 << 24)), "null or an integer >= 1"), "seed": (is_int(0, MAX_INT), "an integer >= 0"),
        "normalise": (one_of(*NORMALISATIONS), " or ".join(NORMALISATIONS)),
    }


def read(path: Path, limit: int) -> dict[str, Any]:
    """A run file's JSON object within ``limit`` bytes and the manifest's depth limit."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror}); check the run directory") from None
    if len(raw) > limit:
        raise BundleError(f"{path}: {len(raw)} bytes, more than the {limit} a run file may have")
    try:
        return manifest.parse(raw, str(path))
    except BundleError as exc:
        raise BundleError(str(exc).replace("re-export the bundle", "restore the run file or re-train")) from None


def _section(d: dict[str, Any], key: str, fields: dict[str, tuple[Check, str]], where: str, extra_ok: tuple[str, ...] = ()) -> None:
    section = d.get(key)
    if not isinstance(section, dict):
        raise _fail(where, key, section, "an object")
    unknown = sorted(set(section) - set(fields) - set(extra_ok))
    if unknown:
        raise _fail(where, f"{key}.{unknown[0]}", section[unknown[0]], f"no such field (known: {', '.join(fields)})")
    for name, (check, what) in fields.items():
        if name in section and not check(section[name]):
            raise _fail(where, f"{key}.{name}", section[name], what)


def _fail(where: str, field: str, value: Any, expected: str) -> BundleError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return BundleError(f"{where}: {field} is {shown}: expected {expected}; fix the file or re-train the run")


def validate_config(d: dict[str, Any], where: str) -> None:
    """Every field of a run's config.json that a reader uses, before any of it is used."""
    if d.get("format") != 1:
        raise _fail(where, "format", d.get("format"), "1 (a config written by this edgediff)")
    model = d.get("model")
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind not in ("unet1d", "mlp", "unet2d"):
        raise _fail(where, "model.kind", kind, "unet1d, unet2d or mlp")
    _section(d, "model", {"unet1d": UNET, "unet2d": UNET2D, "mlp": MLP}[kind], where)
    if kind in ("unet1d", "unet2d"):
        _unet_shapes(d["model"], where)
    _section(d, "data", _data_fields(), where, extra_ok=("mixture", "generator"))
    _section(d, "train", _train_fields(), where)
    norm = d.get("normalisation")
    if not isinstance(norm, dict) or norm.get("kind") not in NORMALISATIONS or not is_number(1e-30, 1e30)(norm.get("scale")):
        raise _fail(where, "normalisation", norm, "kind rms|none and a positive finite scale")
    from edgediff.runtime.schedule import NoiseSchedule

    try:
        NoiseSchedule.from_dict(d.get("schedule") if isinstance(d.get("schedule"), dict) else {})
    except (EdgediffError, TypeError, ValueError, KeyError, OverflowError) as exc:
        raise BundleError(f"{where}: schedule record unusable ({exc}); fix the file or re-train the run") from None
    if not isinstance(d.get("versions", {}), dict):
        raise _fail(where, "versions", d.get("versions"), "an object")
    if d.get("distilled") is not None:
        manifest._distilled(d["distilled"], int(d["schedule"].get("T", 0)), where)


def _unet_shapes(m: dict[str, Any], where: str) -> None:
    """The sizes a U-Net must agree on: levels against the length, groups and heads against the widths."""
    mults = m.get("mults", [1, 2, 2, 4])
    width = m.get("base_width", 32)
    for length in ([m.get("length", 256)] if m.get("kind") != "unet2d" else [m.get("height", 32), m.get("width", 32)]):
        if length % 2 ** (len(mults) - 1):
            raise _fail(where, "model.length" if m.get("kind") != "unet2d" else "model.height/width", length,
                        f"a multiple of 2^{len(mults) - 1} for {len(mults)} levels")
    groups, heads = m.get("norm_groups", 8), m.get("heads", 4)
    for mult in mults:
        if (width * mult) % groups:
            raise _fail(where, "model.norm_groups", groups, f"a divisor of every level's width (base_width {width} x {mults})")
    if m.get("attention", True) and (width * mults[-1]) % heads:
        raise _fail(where, "model.heads", heads, f"a divisor of the last level's width {width * mults[-1]}")
    for level in m.get("attn_levels", []):
        if level >= len(mults):
            raise _fail(where, "model.attn_levels", m["attn_levels"], f"levels in 0..{len(mults) - 1}")
        if (width * mults[level]) % heads:
            raise _fail(where, "model.heads", heads, f"a divisor of level {level}'s width {width * mults[level]}")


def validate_summary(d: dict[str, Any], where: str) -> None:
    for key, check, what in (("steps", is_int(0, 10**12), "an integer >= 0"), ("seconds", is_number(0.0), "a number >= 0")):
        if key in d and not check(d[key]):
            raise _fail(where, key, d[key], what)


def validate_state(d: dict[str, Any], where: str) -> None:
    """A checkpoint's state.json: the step, the logged rows and the optimizer's param groups."""
    if not is_int(0, 10**12)(d.get("step")):
        raise _fail(where, "step", d.get("step"), "an integer >= 0")
    rows = d.get("loss_rows", [])
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and 4 <= len(r) <= 5 and all(is_number()(v) for v in r) for r in rows):
        raise _fail(where, "loss_rows", rows, "a list of [step, loss, lr, rate(, eps_mse)] rows of numbers")
    groups = d.get("optimizer", {}).get("param_groups") if isinstance(d.get("optimizer"), dict) else None
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and all(is_int()(p) for p in g["params"]) for g in groups):
        raise _fail(where, "optimizer.param_groups", groups, "a list of groups with integer params")
