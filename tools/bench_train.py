"""Training throughput, side by side: frames/s, step time, FLOPs per frame and the fraction of peak.

Each variant is the training loop's own step (:class:`edgediff.train.step.TrainStep`) built for one
configuration: batch, where the frames come from (a resident set or generated on the device), bf16
autocast, fused AdamW, CUDA graphs, torch.compile. ``today`` is the loop the shipped priors were
trained with (resident frames, eager steps, default AdamW, bf16 on CUDA, batch 512); ``fast`` is
what ``edgediff train`` now does on CUDA, at a GPU-sized batch.

A variant runs ``warmup`` steps (kernel choice, compilation, graph capture: reported, not counted),
then chunks of steps with a device sync after each until ``seconds`` have passed. FLOPs are counted
once per model with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and
convolutions: the arithmetic MFU is defined on), forward and forward + backward, per frame. The
fraction of peak divides the achieved FLOP/s by the device's dense peak for the variant's dtype:
known GPUs by name, or ``peak_tflops`` given (a CPU has no entry; give it to get a fraction).
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from edgediff.runtime.errors import InputError, one_line

#: Dense tensor-core peaks in TFLOP/s (vendor datasheets, SXM parts): (bf16, tf32/fp32 matrix).
PEAKS = {"H200": (989.4, 494.7), "H100 PCIe": (756.0, 378.0), "H100": (989.4, 494.7), "A100": (312.0, 156.0),
         "L40S": (362.1, 183.0), "L4": (121.0, 60.0), "A10": (125.0, 62.5), "RTX 4090": (165.2, 82.6)}
VARIANT_KEYS = ("batch", "frames", "amp", "graphs", "fused", "compile", "copies", "channels_last")


@dataclass(frozen=True)
class Variant:
    name: str
    batch: int
    frames: str = "resident"
    amp: bool = False
    graphs: bool = False
    fused: bool = False
    compile: bool = False
    copies: int = 1  # independent models trained at once, each on its own CUDA stream (several priors in one process)
    channels_last: bool = False  # the 1D convolutions as channels-last 2D ones (NHWC, cuDNN's tensor-core layout)


def presets(cuda: bool) -> dict[str, Variant]:
    """The named variants (bf16 where the device has it)."""
    return {
        "today": Variant("today", 512, "resident", amp=cuda),
        # today's loop in bf16 on any device: on the CPU, what --amp buys there (AMX-BF16 matrix units)
        "today-bf16": Variant("today-bf16", 512, "resident", amp=True),
        "fast": Variant("fast", 4096, "generated", amp=cuda, graphs=True, fused=True),
        "fast-512": Variant("fast-512", 512, "generated", amp=cuda, graphs=True, fused=True),
        "fast-compile": Variant("fast-compile", 4096, "generated", amp=cuda, graphs=True, fused=True, compile=True),
        # four priors' steps at the stages' batch, their graphs replayed side by side on four streams
        "fast-compile-x4": Variant("fast-compile-x4", 1024, "generated", amp=cuda, graphs=True, fused=True, compile=True,
                                   copies=4),
        # the stages' compiled step with its convolutions in channels-last memory
        "fast-compile-cl": Variant("fast-compile-cl", 1024, "generated", amp=cuda, graphs=True, fused=True, compile=True,
                                   channels_last=True),
    }


def parse_variant(text: str, cuda: bool) -> Variant:
    """``NAME`` (a preset) or ``NAME:key=value,...`` (a preset changed, or a new name from ``today``);
    keys: batch (int), frames (resident|generated), amp/graphs/fused/compile/channels_last (on|off), copies (int)."""
    name, _, changes = text.partition(":")
    known = presets(cuda)
    base = known.get(name)
    if base is None and not changes:
        raise InputError(f"variant {name!r} is unknown: expected one of {', '.join(known)} or NAME:key=value,...")
    v = replace(base or known["today"], name=name)
    for item in filter(None, (c.strip() for c in changes.split(","))):
        key, _, value = item.partition("=")
        if key not in VARIANT_KEYS:
            raise InputError(f"variant {text!r}: key {key!r} is unknown: expected {', '.join(VARIANT_KEYS)}")
        v = replace(v, **{key: _value(text, key, value)})
    return v


def _value(text: str, key: str, value: str) -> Any:
    if key in ("batch", "copies"):
        top = 1 << 20 if key == "batch" else 64
        if not value.isdigit() or not 1 <= int(value) <= top:
            raise InputError(f"variant {text!r}: {key}={value!r} is not a whole number in 1..{top}")
        return int(value)
    if key == "frames":
        if value not in ("resident", "generated"):
            raise InputError(f"variant {text!r}: frames={value!r}: expected resident or generated")
        return value
    if value not in ("on", "off"):
        raise InputError(f"variant {text!r}: {key}={value!r}: expected on or off")
    return value == "on"


def peak_tflops(device: Any, amp: bool, given: float | None) -> float | None:
    """The device's dense peak for bf16 (``amp``) or float32 matrix work, in TFLOP/s, or None."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for key, (bf16, fp32) in PEAKS.items():  # the more specific names come first
        if key in name:
            return bf16 if amp else fp32
    return None


def flops_per_frame(model_config: Any, sample_shape: tuple[int, ...]) -> dict[str, float]:
    """Forward and forward + backward FLOPs of one frame, counted on the CPU at batch 2."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgediff.train.models import build_model

    model = build_model(model_config)
    x = torch.randn(2, *sample_shape)
    t = torch.tensor([10.0, 500.0])
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model(x, t)
    with FlopCounterMode(display=False) as both:
        model(x, t).square().mean().backward()
    return {"forward": fwd.get_total_flops() / 2, "train": both.get_total_flops() / 2}


def measure(variant: Variant, config: Any, device: Any, *, seconds: float, warmup: int, n_resident: int,
            chunk: int = 10, profile: int = 0, trace: Any = None) -> dict[str, Any]:
    """Frames/s and step time of one variant (its own model, optimizer and data; with ``copies``, that
    many models, each with its own seed, data and CUDA stream, stepped in turn: frames/s counts them
    all); ``profile``: that many more steps under the profiler afterwards
    (:mod:`edgediff.tools.train_profile`), their trace kept at ``trace`` when given."""
    import numpy as np
    import torch

    from edgediff.train import datasets, step
    from edgediff.train.layers import use_channels_last
    from edgediff.train.loop import step_seed, ema_decay, frame_source
    from edgediff.train.models import build_model, fit_to_data
    from edgediff.train.reference import schedule_tensors

    train = replace(config.train, batch=variant.batch, frames=variant.frames, amp=variant.amp, graphs=variant.graphs,
                    fused=variant.fused, compile=variant.compile, channels_last=variant.channels_last)
    data, norm = datasets.load(replace(config.data, n=n_resident))
    config = replace(config, train=train, normalisation=norm, model=fit_to_data(config.model, tuple(data.shape[1:])))
    train, options = step.resolve(train, config.data, device, False)
    step.configure_backends(device)  # as the loop does
    runners = []
    for copy in range(variant.copies):
        torch.manual_seed(copy)
        model = build_model(config.model).to(device)
        use_channels_last(model, options.channels_last)
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer = step.make_optimizer(model, train.lr, train.weight_decay, options, device)
        net = torch.compile(model) if options.compile else model
        runners.append(step.TrainStep(net, model, optimizer, ema, schedule_tensors(config.schedule, torch.float32, device),
                                      frame_source(replace(config, train=train), data, variant.batch, device), config,
                                      variant.batch, device, options, tuple(data.shape[1:])))
    del data
    generators = [torch.Generator(device=device) for _ in runners]
    # one model: the current stream, as the loop runs it; several: a stream each, so their steps can overlap
    several = variant.copies > 1 and device.type == "cuda"
    streams = [torch.cuda.Stream(device) if several else None for _ in runners]

    def run(first: int, count: int) -> None:
        for s in range(first, first + count):
            for copy, (runner, generator, stream) in enumerate(zip(runners, generators, streams)):
                with torch.cuda.stream(stream):  # None: the current stream
                    generator.manual_seed(step_seed(copy, s, 0))
                    runner(generator, train.lr, ema_decay(s, train.ema))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    run(0, warmup)
    warm_s = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while True:
        run(warmup + steps, chunk)
        steps += chunk
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    losses = [runner.take_metrics()[0] for runner in runners]
    loss = float(np.mean(losses))
    profiled = None
    if profile:
        from edgediff.tools.train_profile import profile_steps

        try:
            profiled = profile_steps(lambda: run(warmup + steps, profile), device, trace)
            profiled["steps"] = profile
        except Exception as exc:  # the timing above stands without it
            profiled = {"error": one_line(exc)}
    return {"variant": asdict(variant), "profile": profiled, "options": options.describe(), "frames": train.frames, "steps": steps,
            "seconds": elapsed, "warmup_steps": warmup, "warmup_s": warm_s, "copies": variant.copies,
            "frames_per_s": steps * variant.batch * variant.copies / elapsed, "step_ms": 1e3 * elapsed / steps,
            "mean_loss": loss, "copy_losses": losses, "loss_finite": bool(np.all(np.isfinite(losses)))}


def bench(variants: list[Variant], config: Any, device: Any, *, seconds: float, warmup: int, n_resident: int,
          peak: float | None = None, bandwidth: float | None = None, profile: int = 0, traces: Any = None,
          log: Any = print) -> dict[str, Any]:
    """Every variant in turn, in one process; a failing variant is reported and the others still run.
    Where the device's peak and bandwidth are known (or given), each row is set against the model's
    roofline at its batch (:mod:`edgediff.tools.roofline`); ``profile`` steps of each variant run under
    the profiler afterwards, their traces kept in the folder ``traces`` when given."""
    import torch

    from edgediff.tools import roofline
    from edgediff.tools.bench import machine

    flops = flops_per_frame(config.model, config.model.sample_shape)
    report: dict[str, Any] = {"machine": machine(), "device": str(device), "model": asdict(config.model),
                              "dataset": config.data.dataset, "flops_per_frame": flops, "rows": []}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    if gpu:
        report["gpu"] = gpu
    figures = roofline.device_figures(gpu, peak, bandwidth)
    counted = roofline.count(config.model, config.model.sample_shape) if figures else None
    for v in variants:
        trace = None if traces is None else traces / f"{v.name}.trace.json.gz"
        try:
            row = measure(v, config, device, seconds=seconds, warmup=warmup, n_resident=n_resident, profile=profile,
                          trace=trace)
        except Exception as exc:  # a GPU minute is too dear to lose the other variants to one failure
            row = {"variant": asdict(v), "error": one_line(exc)}
        else:
            pk = peak_tflops(device, v.amp, peak)
            row["tflops"] = row["frames_per_s"] * flops["train"] / 1e12
            row["peak_tflops"] = pk
            row["fraction_of_peak"] = row["tflops"] / pk if pk else None
            if counted:
                bound = roofline.bounds(*counted, v.batch, *figures, element_bytes=2 if v.amp else 4)
                row["roofline"] = bound
                row["of_eager_roofline"] = row["frames_per_s"] / bound["eager"]["frames_per_s"]
        report["rows"].append(row)
        log(row_line(row, report["rows"][0]))
        if row.get("roofline"):
            log(" " * 16 + roofline.summary(row["roofline"]) + f"; measured {100 * row['of_eager_roofline']:.0f} % of eager")
        if row.get("profile"):
            from edgediff.tools.train_profile import line

            log(line(v.name, row["profile"]) if "error" not in row["profile"]
                else f"{v.name:>15}  profile failed: {row['profile']['error']}")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report


def row_line(row: dict[str, Any], first: dict[str, Any]) -> str:
    v = row["variant"]
    if "error" in row:
        return f"{v['name']:>15}  batch {v['batch']:>8}  failed: {row['error']}"
    ratio = row["frames_per_s"] / first["frames_per_s"] if "frames_per_s" in first else float("nan")
    frac = f"{100 * row['fraction_of_peak']:.1f} % of {row['peak_tflops']:.0f}" if row.get("fraction_of_peak") else "peak n/a"
    copies = v.get("copies", 1)
    batch = f"{v['batch']}" + (f" x {copies}" if copies > 1 else "")
    return (f"{v['name']:>15}  batch {batch:>8}  {row['options']:<22} {row['frames']:<9} "
            f"{row['frames_per_s']:>10.0f} frames/s  {row['step_ms']:>8.2f} ms/step  {row['tflops']:>7.2f} TFLOP/s "
            f"({frac})  x{ratio:.2f}  warm-up {row['warmup_s']:.1f} s")
