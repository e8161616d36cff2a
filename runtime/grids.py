"""A bundle's own DDIM grid: where its default steps land when the user does not say.

The uniform ("trailing") grid spends as many network calls where nothing is decided as where a frame's
kind is decided. A bundle may carry its own grid in its manifest, ``"sampling": {"steps": n,
"timesteps": [...], "spec": "..."}``; ``sample`` and ``evaluate`` run DDIM at that step count on it
unless ``--spacing`` (or ``--steps`` of another count) is given. With ``"method"`` (one of :data:`SAMPLERS`)
the record names the bundle's default sampler too: the sampler a request that names none runs, on the grid. A grid is written as segments
``HI-LO:K`` (``"999-950:3,950-840:25,840-400:10,400-0:12"``): K steps evenly from HI down toward LO,
LO itself not included, segments joined end to start.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

SEGMENT = re.compile(r"^(\d+)-(\d+):(\d+)$")
#: Samplers a bundle's own grid may name as its default (DDPM runs every step: no grid).
SAMPLERS = ("ddim", "dpmpp2m", "sde-dpmpp2m", "unipc")


def from_spec(spec: str, T: int) -> np.ndarray:
    """The decreasing timesteps of a segment spec, or an InputError naming what is wrong."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise InputError(f"grid {spec!r} is empty: expected segments HI-LO:K, e.g. 999-900:20,900-0:30")
    steps: list[int] = []
    previous_lo = None
    for part in parts:
        m = SEGMENT.match(part.replace(" ", ""))
        if not m:
            raise InputError(f"grid segment {part!r} is not HI-LO:K: write e.g. 999-900:20 (20 steps from t 999 down toward 900)")
        hi, lo, k = (int(g) for g in m.groups())
        if not (T - 1 >= hi > lo >= 0 and k >= 1):
            raise InputError(f"grid segment {part!r} is out of range: expected {T - 1} >= HI > LO >= 0 and K >= 1 (T = {T})")
        if previous_lo is not None and hi != previous_lo:
            raise InputError(f"grid segment {part!r} does not start where the one before ends ({previous_lo}): "
                             "join the segments end to start")
        steps += [int(v) for v in np.round(np.linspace(hi, lo, k, endpoint=False))]
        previous_lo = lo
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise InputError(f"grid {spec!r} puts two steps on one timestep: give a segment fewer steps or a wider range")
    return np.asarray(steps, dtype=np.int64)


def record(spec: str, T: int, why: str = "", method: str = "ddim") -> dict[str, Any]:
    """The manifest's ``sampling`` record of a spec (``method``: the bundle's default sampler on it)."""
    if method not in SAMPLERS:
        raise InputError(f"sampler {method!r} cannot be a bundle's default: expected one of {', '.join(SAMPLERS)}")
    ts = from_spec(spec, T)
    out: dict[str, Any] = {"steps": len(ts), "timesteps": ts.tolist(), "spec": spec}
    if method != "ddim":  # a DDIM grid's record stays as it was
        out["method"] = method
    if why:
        out["why"] = why
    return out


def problem(sampling: Any, T: int) -> str | None:
    """What is wrong with a manifest's ``sampling`` record, or None."""
    if not isinstance(sampling, dict):
        return "an object"
    n, ts = sampling.get("steps"), sampling.get("timesteps")
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= T and isinstance(ts, list) and len(ts) == n
            and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= T - 1 for t in ts)
            and all(a > b for a, b in zip(ts, ts[1:]))):
        return f"steps and as many decreasing integer timesteps in 0..{T - 1}"
    if not isinstance(sampling.get("spec", ""), str) or not isinstance(sampling.get("why", ""), str):
        return "spec and why as text"
    if sampling.get("method", "ddim") not in SAMPLERS:
        return f"method one of {', '.join(SAMPLERS)}"
    return None


def method_of(sampling: dict[str, Any] | None) -> str | None:
    """The sampler a bundle's own grid is for (DDIM unless the record names another); None without one."""
    return None if not sampling else str(sampling.get("method", "ddim"))
