"""How fast a training step could run on a GPU: the model's roofline, counted here on the CPU.

Every aten operation of one forward and backward pass is counted by a dispatch mode: its FLOPs
(torch's own formulas, :data:`torch.utils.flop_counter.flop_registry`) and the bytes it reads and
writes (its tensor arguments and results; views move nothing), counted in float32 and scaled to the
step's precision: 2 bytes a floating-point element under bf16 autocast (the norms run in float32
there and move more, so the bytes are a floor and the bounds below are ceilings). The passes are counted at two batch sizes, so
that what grows with the batch (activations) and what does not (weights, their gradients) part; the
optimizer and the EMA add their own fixed traffic (AdamW reads parameter, gradient and both moments
and writes three of them back; the EMA reads two and writes one: float32).

An operation takes at least ``max(FLOPs / peak, bytes / bandwidth)``. Two ceilings follow:

* ``eager``: every operation on its own, each reading its inputs from memory and writing its result
  (the eager step; what torch.compile starts from);
* ``fused``: only the matrix work (convolutions and matrix products, forward and backward) moves
  memory; every elementwise operation, norm and reduction is fused into them for free. No compiler
  reaches it; it says what the network's arithmetic alone allows.

Both are frames/s at a batch and fractions of the dense peak; a measured rate set against them says
whether what is left is the chip's arithmetic, its memory, or the kernels (their efficiency, the
gaps between them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from edgediff.runtime.errors import InputError

#: HBM/GDDR bandwidth in TB/s (vendor datasheets; the same names as bench_train.PEAKS, specific first).
BANDWIDTH = {"H200": 4.8, "H100 PCIe": 2.0, "H100": 3.35, "A100": 2.039, "L40S": 0.864, "L4": 0.3, "A10": 0.6,
             "RTX 4090": 1.008}
#: Operations that only re-describe memory (no bytes move).
_VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "permute", "slice", "select", "as_strided", "unsqueeze",
          "squeeze", "detach", "alias", "split", "split_with_sizes", "unbind", "chunk", "reshape", "_reshape_alias",
          "lift_fresh", "narrow", "view_as_real", "view_as_complex", "expand_as", "view_as"}
#: Bytes a step's optimizer (AdamW: 4 reads, 3 writes) and EMA (2 reads, 1 write) move per float32 parameter.
OPTIMIZER_BYTES_PER_PARAM = 4 * (7 + 3)
COUNT_BATCHES = (4, 8)


@dataclass(frozen=True)
class OpCount:
    name: str
    calls: int
    flops: float  # per frame
    bytes_per_frame: float
    bytes_fixed: float  # per step, whatever the batch


def count(model_config: Any, sample_shape: tuple[int, ...]) -> tuple[list[OpCount], int]:
    """Every operation of a forward + backward pass (MSE loss) of the model, per frame and per step,
    and the model's parameter count."""
    import torch

    from edgediff.train.models import build_model

    torch.manual_seed(0)
    model = build_model(model_config)
    a, b = (_count_pass(model, sample_shape, n) for n in COUNT_BATCHES)
    rows = []
    for name in sorted(set(a) | set(b)):
        (fa, ba, calls), (fb, bb, _) = a.get(name, (0, 0, 0)), b.get(name, (0, 0, 0))
        per_frame = (bb - ba) / (COUNT_BATCHES[1] - COUNT_BATCHES[0])
        rows.append(OpCount(name, calls, fb / COUNT_BATCHES[1], max(per_frame, 0.0),
                            max(bb - COUNT_BATCHES[1] * per_frame, 0.0)))
    return rows, sum(p.numel() for p in model.parameters())


def _count_pass(model: Any, sample_shape: tuple[int, ...], batch: int) -> dict[str, tuple[float, float, int]]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            name = packet.__name__
            if name in _VIEWS:
                return out
            flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
            tensors = [x for x in tree_flatten((args, kwargs, out))[0] if isinstance(x, torch.Tensor)]
            row = totals[name]
            row[0] += flops
            row[1] += sum(x.numel() * x.element_size() for x in tensors)
            row[2] += 1
            return out

    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, *sample_shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g).float()
    model.zero_grad(set_to_none=True)
    with Counter():
        model(x, t).square().mean().backward()
    return {k: (v[0], v[1], int(v[2])) for k, v in totals.items()}


def device_figures(name: str | None, peak_tflops: float | None, bandwidth_tbs: float | None) -> tuple[float, float] | None:
    """(peak TFLOP/s bf16, bandwidth TB/s) for a GPU by name, each overridden when given; None when
    either stays unknown."""
    from edgediff.tools.bench_train import PEAKS

    key = next((k for k in PEAKS if name and k.lower() in name.lower()), None)
    peak = peak_tflops if peak_tflops is not None else (PEAKS[key][0] if key else None)
    bw = bandwidth_tbs if bandwidth_tbs is not None else (BANDWIDTH.get(key) if key else None)
    return (peak, bw) if peak and bw else None


def gpu_figures(name: str, peak_tflops: float | None = None, bandwidth_tbs: float | None = None) -> tuple[float, float]:
    """:func:`device_figures` for a GPU named by the user, or one clear error."""
    figures = device_figures(name, peak_tflops, bandwidth_tbs)
    if figures is None:
        raise InputError(f"GPU {name!r} is unknown: expected one of {', '.join(BANDWIDTH)}, "
                         "or give --peak-tflops and --bandwidth-tbs")
    return figures


def bounds(rows: list[OpCount], n_params: int, batch: int, peak_tflops: float, bandwidth_tbs: float,
           element_bytes: int = 2) -> dict[str, Any]:
    """The eager and fused ceilings at ``batch`` with activations of ``element_bytes`` (2: bf16, 4:
    float32): frames/s and fraction of peak, and how much of the eager step's time is memory-bound."""
    peak, bw = peak_tflops * 1e12, bandwidth_tbs * 1e12
    scale = element_bytes / 4  # counted in float32
    train_flops = sum(r.flops for r in rows)
    fixed = n_params * OPTIMIZER_BYTES_PER_PARAM / bw
    eager = fused = fixed
    memory_bound_s = fixed  # the optimizer and EMA: memory traffic only
    for r in rows:
        compute, memory = batch * r.flops / peak, scale * (batch * r.bytes_per_frame + r.bytes_fixed) / bw
        op = max(compute, memory)
        eager += op
        memory_bound_s += op if memory >= compute else 0.0
        if r.flops:
            fused += op
    out: dict[str, Any] = {"batch": batch, "peak_tflops": peak_tflops, "bandwidth_tbs": bandwidth_tbs,
                           "element_bytes": element_bytes, "train_gflop_per_frame": train_flops / 1e9,
                           "bytes_per_frame_mb": scale * sum(r.bytes_per_frame for r in rows) / 1e6,
                           "memory_bound_share_eager": memory_bound_s / eager}
    for name, seconds in (("eager", eager), ("fused", fused)):
        fps = batch / seconds
        out[name] = {"frames_per_s": fps, "fraction_of_peak": fps * train_flops / peak}
    return out


def summary(b: dict[str, Any]) -> str:
    return (f"roofline at batch {b['batch']} ({b['peak_tflops']:.0f} TFLOP/s, {b['bandwidth_tbs']:.2f} TB/s; "
            f"{b['train_gflop_per_frame']:.3g} GFLOP, >= {b['bytes_per_frame_mb']:.3g} MB a frame): "
            f"eager <= {b['eager']['frames_per_s']:,.0f} frames/s ({100 * b['eager']['fraction_of_peak']:.1f} % of peak, "
            f"{100 * b['memory_bound_share_eager']:.0f} % of its time memory-bound), "
            f"fused <= {b['fused']['frames_per_s']:,.0f} ({100 * b['fused']['fraction_of_peak']:.1f} %)")


def table(rows: list[OpCount], element_bytes: int = 2, top: int = 12) -> list[str]:
    """The operations moving the most bytes per frame, with their FLOPs and arithmetic intensity."""
    scale = element_bytes / 4
    lines = [f"{'operation':<32} {'calls':>5} {'MFLOP/frame':>12} {'MB/frame':>9} {'FLOP/byte':>9}"]
    for r in sorted(rows, key=lambda r: -r.bytes_per_frame)[:top]:
        moved = scale * r.bytes_per_frame
        intensity = r.flops / moved if moved else 0.0
        lines.append(f"{r.name:<32} {r.calls:>5} {r.flops / 1e6:>12.2f} {moved / 1e6:>9.3f} {intensity:>9.1f}")
    return lines
