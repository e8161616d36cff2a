"""Where a training step's time goes: a few steps under torch.profiler, kernels grouped by kind.

On CUDA the kernels are read from the profiler's own trace (``cat == "kernel"``): a step replayed
as a CUDA graph shows there kernel by kernel, where the operator tables see one graph launch. What
comes out: device time by group (convolutions, matrix products, fused Triton kernels, norms,
elementwise, reductions, the optimizer, copies), the heaviest kernels, and how busy the device was
over the profiled steps (the union of kernel intervals over the wall time): a busy device with slow
kernels wants better kernels or more work per kernel, an idle one wants fewer gaps.

On the CPU the operators' self times stand in for kernels (no trace to read).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

#: Kernel (or operator) name -> group, first match wins: cuDNN's implicit-GEMM convolutions name
#: themselves fprop/dgrad/wgrad and so come before the GEMMs.
GROUPS = (("convolution", r"conv|fprop|dgrad|wgrad|winograd|implicit"),
          ("triton pointwise", r"^triton_poi"),
          ("triton reduction", r"^triton_(red|per)"),
          ("triton other", r"^triton"),
          ("matmul", r"gemm|cutlass|cublas|matmul|\bmm\b|bmm|addmm|linear"),
          ("optimizer", r"multi_tensor|adam|foreach"),
          ("layout", r"nchwtonhwc|nhwctonchw|transpose"),
          ("norm", r"group_norm|groupnorm|layer_norm|batch_norm|norm"),
          ("copy", r"memcpy|memset|copy|fill|cat|clone|contiguous"),
          ("reduction", r"reduce|sum|mean"),
          ("elementwise", r"elementwise|vectorized|unrolled|silu|sigmoid|\badd|\bmul|\bsub|\bdiv|\bpow|\bexp\b|\bsin\b|\bcos\b"))
TOP = 15


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for g, pattern in GROUPS if re.search(pattern, low)), "other")


def profile_steps(run: Callable[[], None], device: Any, trace: Path | None = None) -> dict[str, Any]:
    """Profile ``run`` (a few steps that end synchronised) and summarise it; ``trace``: keep the
    profiler's trace there (gzipped JSON)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        events = json.loads(raw.read_text()).get("traceEvents", [])
        if trace is not None:
            trace.parent.mkdir(parents=True, exist_ok=True)
            with raw.open("rb") as src, gzip.open(trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if cuda:
        kernels = kernels_of(events)
        busy = _union(kernels)
    else:
        kernels = [(a.key, 0.0, float(a.self_cpu_time_total), int(a.count)) for a in prof.key_averages()
                   if a.self_cpu_time_total > 0 and not a.key.startswith("ProfilerStep")]
        busy = None
    out = summarise(kernels, wall, busy)
    out["unit"] = "kernels" if cuda else "operator calls"
    return out


def kernels_of(events: list[dict[str, Any]]) -> list[tuple[str, float, float, int]]:
    """(name, start µs, duration µs, 1) of every device kernel in a profiler trace's events."""
    return [(e["name"], float(e["ts"]), float(e["dur"]), 1) for e in events
            if e.get("cat") == "kernel" and "dur" in e and "ts" in e]


def _union(kernels: list[tuple[str, float, float, int]]) -> float:
    """Microseconds covered by at least one kernel (streams overlap)."""
    total, end = 0.0, float("-inf")
    for _, start, dur, _ in sorted(kernels, key=lambda k: k[1]):
        stop = start + dur
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarise(kernels: list[tuple[str, float, float, int]], wall_s: float, busy_us: float | None) -> dict[str, Any]:
    """Time by group and the heaviest names, from (name, start µs, duration µs, calls) records."""
    total = sum(k[2] for k in kernels) or 1.0
    by_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_group: dict[str, float] = defaultdict(float)
    for name, _, dur, calls in kernels:
        by_name[name][0] += calls
        by_name[name][1] += dur
        by_group[group_of(name)] += dur
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:TOP]
    out: dict[str, Any] = {
        "wall_s": wall_s, "kernel_s": total / 1e6, "kernels": sum(k[3] for k in kernels),
        "groups": {g: {"seconds": s / 1e6, "share": s / total} for g, s in sorted(by_group.items(), key=lambda kv: -kv[1])},
        "top": [{"name": n[:160], "group": group_of(n), "calls": int(c), "seconds": s / 1e6, "share": s / total}
                for n, (c, s) in top]}
    if busy_us is not None:
        out["busy_s"] = busy_us / 1e6
        out["busy_fraction"] = busy_us / 1e6 / wall_s if wall_s > 0 else None
    return out


def line(name: str, p: dict[str, Any]) -> str:
    groups = ", ".join(f"{g} {100 * v['share']:.0f} %" for g, v in list(p["groups"].items())[:5])
    busy = f"device busy {100 * p['busy_fraction']:.0f} % of {p['wall_s'] * 1e3:.0f} ms; " if p.get("busy_fraction") else ""
    return f"{name:>15}  profile: {busy}{p['kernels']} {p.get('unit', 'kernels')}, {groups}"
