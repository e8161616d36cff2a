"""``edgediff bench``: every backend side by side in one run; a table and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgediff.runtime.bundle import label as bundle_label
from edgediff.tools.cli import cli
from edgediff.tools.cli.outputs import check_outputs
from edgediff.tools.cli.types import CommaList, count, positive, within


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backends", type=CommaList(click.Choice(["ort", "torch", "trt"]), unique=True),
              help="Comma-separated: ort, torch, trt. [ort, and torch where it is installed]")
@click.option("--run", "run_dir", type=click.Path(path_type=Path),
              help="The torch backend's weights: the exporting run's folder, or a bundle's (its model.onnx read back). "
                   "[the run the manifest names; where it is not here, BUNDLE's own model.onnx]")
@click.option("--batch", "batches", type=CommaList(count(1, 1 << 16), unique=True), default="1,16,64", show_default=True,
              help="Batch sizes for the NFE latency (each within every engine's range).")
@click.option("--repeats", type=count(1, 100_000), default=30, show_default=True, help="Timed repeats per measurement.")
@click.option("--warmup", type=count(0, 100_000), default=5, show_default=True)
@click.option("--ddpm/--no-ddpm", default=True, show_default=True, help="Include the DDPM-T end-to-end run.")
@click.option("--quality-samples", type=count(16, 1_000_000), default=4000, show_default=True, help="gmm2d bundles: samples per sampler.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write all figures as JSON.")
@click.option("--force", is_flag=True, help="Replace the JSON file if it exists.")
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True, help="ONNX Runtime CPU threads (0: min(2, cores)).")
@click.option("--precisions", type=CommaList(click.Choice(["int8", "dynamic", "fp16"]), unique=True),
              help="Also ONNX Runtime rows for the bundle's int8 / fp16 models and ORT's dynamic quantization "
                   "(made here, in a temporary file).")
def bench(bundle, backends, run_dir, batches, repeats, warmup, ddpm, quality_samples, json_out, threads, force,
          precisions) -> None:
    """Measure BUNDLE on each backend: NFE latency, sampler overhead, end-to-end time, footprint."""
    import tempfile

    from edgediff.runtime.atomic import write_json
    from edgediff.runtime.backends import load
    from edgediff.tools import bench as b

    names, batch_list = backends or default_backends(), batches
    check_outputs({"--json": json_out}, force=force)
    weights, note = b.torch_weights(bundle, run_dir) if "torch" in names else (None, None)
    if note:
        click.echo(note)
    denoisers = {n: load(bundle, backend=n, threads=threads, run_dir=weights if n == "torch" else None) for n in names}
    scratch = tempfile.TemporaryDirectory()
    for p in precisions or []:
        if p == "dynamic":
            denoisers["ort-dynamic"] = b.dynamic_int8(bundle, scratch.name, threads)
        elif p == "fp16" and "model.fp16.onnx" not in denoisers[names[0]].bundle.manifest["files"]:
            denoisers["ort-fp16"] = b.converted_fp16(bundle, scratch.name, threads)  # shipped priors carry none
        else:
            denoisers[f"ort-{p}"] = load(bundle, backend="ort", precision=p, threads=threads)
    for n, d in denoisers.items():
        within("--batch", batch_list, d.min_batch, d.max_batch, f"the batch range of the {n} engine")
    report: dict[str, Any] = {"machine": b.machine(), "bundle": bundle_label(denoisers[names[0]].bundle.root), "backends": {}, "ratios": {}}
    for name, d in denoisers.items():
        entry: dict[str, Any] = {"provider": d.provider, "nfe": {}, "end_to_end": {}}
        for size in batch_list:
            entry["nfe"][str(size)] = b.nfe_latency(d, size, warmup, repeats)
        entry["loop_overhead"] = {label: b.loop_overhead(d, max(1, d.min_batch), 50, max(3, repeats // 6), eta)
                                  for label, eta in (("ddim", 0.0), ("ddpm-posterior", 1.0))}
        runs = ([("ddpm", None)] if ddpm else []) + [("ddim", 50), ("ddim", 20)]
        for method, steps in runs:
            label = f"{method}-{steps or d.schedule.T}"
            entry["end_to_end"][label] = b.end_to_end(d, max(1, d.min_batch), method, steps, repeats=1 if steps is None else 3)
        report["backends"][name] = entry
    if "torch" in denoisers:
        d = denoisers["torch"]
        report["research_loop"] = {f"{m}-{s or d.schedule.T}": b.research_loop(d, m, s, 1, 1 if s is None else 3)
                                   for m, s in (([("ddpm", None)] if ddpm else []) + [("ddim", 50)])}
        report["torch_process"] = b.process_footprint(bundle, b.TORCH_SCRIPT, *([str(weights)] if weights else []))
    report["lean_process"] = b.process_footprint(bundle, b.LEAN_SCRIPT)
    report["sample_cli"] = b.sample_cli_footprint(bundle)
    report["install_footprint"] = {"edgediff[ort]": b.install_footprint(["edgediff", "onnxruntime"]),
                                   "torch loop": b.install_footprint(["torch", "numpy"])}
    report["ratios"] = ratios(report)
    scratch.cleanup()
    first = next(iter(denoisers.values()))
    if first.bundle.manifest.get("data", {}).get("dataset") == "gmm2d":
        report["gmm2d_quality"] = b.gmm_quality(denoisers.get("ort", first), quality_samples, first.max_batch)
    for line in table(report):
        click.echo(line)
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")


def default_backends() -> list[str]:
    """ONNX Runtime, and torch beside it where torch is installed (a board has none: its bench runs ort alone)."""
    import importlib.util

    return ["ort", "torch"] if importlib.util.find_spec("torch") is not None else ["ort"]


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    be = report["backends"]
    for slow, fast in (("torch", "ort"), ("torch", "trt"), ("ort", "trt")):
        if slow in be and fast in be:
            common = set(be[slow]["nfe"]) & set(be[fast]["nfe"])
            out[f"nfe {slow}/{fast}"] = {k: be[slow]["nfe"][k]["median"] / be[fast]["nfe"][k]["median"]
                                         for k in sorted(common, key=int)}
    for name in [n for n in be if n.startswith("ort-") and "ort" in be]:  # a lower precision against fp32
        common = set(be["ort"]["nfe"]) & set(be[name]["nfe"])
        out[f"nfe ort/{name}"] = {k: be["ort"]["nfe"][k]["median"] / be[name]["nfe"][k]["median"] for k in sorted(common, key=int)}
        out[f"end to end ort/{name}"] = {k: be["ort"]["end_to_end"][k]["median"] / v["median"]
                                         for k, v in be[name]["end_to_end"].items() if k in be["ort"]["end_to_end"]}
    for name, entry in be.items():
        e2e = entry["end_to_end"]
        ddpm = next((v for k, v in e2e.items() if k.startswith("ddpm")), None)
        if ddpm is not None and "ddim-50" in e2e:
            out[f"{name} ddpm/ddim-50 end to end"] = ddpm["median"] / e2e["ddim-50"]["median"]
    if "research_loop" in report and "ort" in be:
        for label, v in report["research_loop"].items():
            if label in be["ort"]["end_to_end"]:
                out[f"research torch loop / edgediff ort, {label}"] = v["median"] / be["ort"]["end_to_end"][label]["median"]
    return out


def table(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, python {m['python']}, numpy {m['numpy']}, "
             f"onnxruntime {m.get('onnxruntime', '-')}, torch {m.get('torch', '-')}"]
    be = report["backends"]
    sizes = sorted({int(k) for e in be.values() for k in e["nfe"]})
    lines.append("NFE latency, ms (median [min-max])".ljust(34) + "".join(f"batch {s}".rjust(24) for s in sizes))
    for name, e in be.items():
        cells = [f"{1e3 * e['nfe'][str(s)]['median']:.3f} [{1e3 * e['nfe'][str(s)]['min']:.2f}-{1e3 * e['nfe'][str(s)]['max']:.2f}]"
                 if str(s) in e["nfe"] else "-" for s in sizes]
        lines.append(f"  {name} ({e['provider'][:24]})".ljust(34) + "".join(c.rjust(24) for c in cells))
    lines.append("sampler overhead outside the network, per step (batch 1, 50 steps; DDIM eta 0 / eta 1 = DDPM posterior):")
    for name, e in be.items():
        parts = [f"{label} {1e6 * o['overhead_s']:.1f} us of {1e3 * o['step_s']:.3f} ms ({100 * o['overhead_fraction']:.2f} %)"
                 for label, o in e["loop_overhead"].items()]
        lines.append(f"  {name}: " + "; ".join(parts))
    lines.append("end to end, seconds per sample (batch 1):")
    for name, e in be.items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v['median']:.3f}" for k, v in e["end_to_end"].items()))
    if "research_loop" in report:
        lines.append("  torch research loop: " + ", ".join(f"{k} {v['median']:.3f}" for k, v in report["research_loop"].items()))
    for key in ("lean_process", "torch_process"):
        p = report.get(key)
        if p and "error" in p:
            lines.append(f"process ({key.replace('_', ' ')}): not measured: {p['error']}")
        elif p:
            what = "edgediff runtime on onnxruntime, torch blocked" if key == "lean_process" else "torch research loop"
            lines.append(f"process ({what}): peak RSS {p['peak_rss_mb']:.0f} MB, import {p['import_s']:.2f} s, "
                         f"load {p['load_s']:.3f} s, DDIM-20 {p['sample_ddim20_s']:.2f} s")
    cli_fp = report.get("sample_cli", {})
    if "peak_rss_mb" in cli_fp:
        lines.append(f"`edgediff sample --n 16 --steps 20` process: peak RSS {cli_fp['peak_rss_mb']:.0f} MB, "
                     f"wall {cli_fp['wall_s']:.2f} s (exit {cli_fp['returncode']})")
    fp = report.get("install_footprint", {})
    if fp:
        lines.append("install footprint (installed packages, MB): " + ", ".join(
            f"{k} {v['total_mb']:.0f} MB ({len(v['packages'])} packages)" for k, v in fp.items()))
    lines.append("ratios (same run):")
    for k, v in report["ratios"].items():
        text = ", ".join(f"{'batch ' if str(s).isdigit() else ''}{s}: {r:.2f}x" for s, r in v.items()) if isinstance(v, dict) else f"{v:.2f}x"
        lines.append(f"  {k}: {text}")
    if "gmm2d_quality" in report:
        q = report["gmm2d_quality"]
        lines.append(f"gmm2d mode shares ({q['n']} samples): DDPM {['%.3f' % s for s in q['ddpm']]}, "
                     f"DDIM-50 {['%.3f' % s for s in q['ddim50']]}; max difference {q['max_share_diff']:.3f}")
    return lines


def _sampler_nfe(spec: str) -> tuple[str, int]:
    from edgediff.runtime.sampling import METHODS

    name, _, nfe = spec.partition(":")
    if name not in METHODS or not nfe.isdigit() or not 1 <= int(nfe) <= 100_000:
        raise click.BadParameter(f"{spec!r}: expected SAMPLER:NFE with SAMPLER one of {', '.join(METHODS)} "
                                 "and NFE a positive whole number, e.g. ddim:200", param_hint="'--also'")
    return name, int(nfe)


@cli.command("bench-samplers")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=16, max=100_000), default=512, show_default=True, help="Samples per row.")
@click.option("--no-timing", is_flag=True, help="Quality only (no per-sample timing).")
@click.option("--json", "json_out", type=click.Path(path_type=Path))
@click.option("--plot", type=click.Path(path_type=Path), help="Quality against NFE, one panel per bundle (PNG).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.option("--also", "also", multiple=True, callback=lambda _c, _p, v: [_sampler_nfe(s) for s in v],
              help="Another row beyond the grid (repeat), SAMPLER:NFE, e.g. ddim:200 or ddpm:1000.")
def bench_samplers(bundles, n, no_timing, json_out, plot, force, also) -> None:
    """Quality against NFE for DDIM, DPM-Solver++(2M) and UniPC (and a distilled bundle's own sampler)."""
    check_outputs({"--json": json_out, "--plot": plot}, force=force)
    from edgediff.runtime import load
    from edgediff.runtime.atomic import write_json
    from edgediff.tools.bench import machine
    from edgediff.tools.bench_samplers import GRID, describe, quality

    reports = []
    for bundle in bundles:
        report = quality(load(bundle, backend="ort"), n, grid=GRID + tuple(also), timing=not no_timing)
        reports.append(report)
        for line in describe(report):
            click.echo(line)
    out = {"machine": machine(), "bundles": reports}
    if json_out is not None:
        write_json(json_out, out)
        click.echo(f"wrote {json_out}")
    if plot is not None:
        from edgediff.tools import plot_curves

        click.echo(f"wrote {plot_curves.quality_vs_nfe(reports, plot)}")


@cli.command("bench-train")
@click.option("--dataset", type=click.Choice(["rf-qpsk", "rf-qpsk-fast", "rf-chirp", "rf-mix", "gmm2d"]), default="rf-qpsk",
              show_default=True)
@click.option("--width", type=count(8, 1024), default=32, show_default=True, help="U-Net base width (MLP width for gmm2d).")
@click.option("--variant", "variants", multiple=True, default=("today", "fast"), show_default=True,
              help="A configuration to compare (repeat the option; in order): a preset (today, today-bf16, fast, fast-512, "
                   "fast-compile, fast-compile-x4, fast-compile-cl) or NAME:batch=N,frames=resident|generated,amp=on|off,graphs=on|off,"
                   "fused=on|off,compile=on|off,copies=N (N models at once, a CUDA stream each),channels_last=on|off.")
@click.option("--seconds", type=positive(3600.0), default=10.0, show_default=True, help="Timed seconds per variant.")
@click.option("--warmup", type=count(4, 10_000), default=10, show_default=True, help="Untimed steps first (capture, compile).")
@click.option("--n", "n_resident", type=count(16, 10_000_000), default=20000, show_default=True, help="Frames in the resident set.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=count(1, 256), help="torch CPU threads (default: torch's).")
@click.option("--peak-tflops", type=positive(1e6), help="The device's peak, for the fraction (known GPUs: looked up).")
@click.option("--bandwidth-tbs", type=positive(1e3), help="The device's memory bandwidth in TB/s, for the roofline "
              "(known GPUs: looked up).")
@click.option("--profile", "profile_steps", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="After each variant's timing, profile this many steps: device time by kernel group, device busy share.")
@click.option("--roofline", "roofline_gpu", metavar="GPU",
              help="Only print the model's roofline on this GPU (H200, H100, A100, L40S, ...) at the variants' "
                   "batches, counted here: no training, no GPU needed.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write every figure as JSON.")
@click.option("--force", is_flag=True, help="Replace the JSON file if it exists.")
def bench_train(dataset, width, variants, seconds, warmup, n_resident, device, threads, peak_tflops, bandwidth_tbs,
                profile_steps, roofline_gpu, json_out, force) -> None:
    """Training throughput of the loop's own step in several configurations, side by side in one run:
    frames/s, ms per step, FLOPs per frame, TFLOP/s, the fraction of the device's peak and of the
    model's roofline; optionally where the step's device time goes (--profile)."""
    check_outputs({"--json": json_out}, force=force)
    if roofline_gpu is not None:
        _roofline(dataset, width, variants, roofline_gpu, peak_tflops, bandwidth_tbs, json_out)
        return
    import torch

    from edgediff.runtime.atomic import write_json
    from edgediff.tools import bench_train as bt
    from edgediff.train.loop import resolve_device

    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    chosen = [bt.parse_variant(v, dev.type == "cuda") for v in variants]
    config = _train_config(dataset, width)
    flops = bt.flops_per_frame(config.model, config.model.sample_shape)
    click.echo(f"{dataset}, {config.model.kind} width {width} on {dev}: {flops['forward'] / 1e9:.3f} GFLOP per frame "
               f"forward, {flops['train'] / 1e9:.3f} forward + backward")
    report = bt.bench(chosen, config, dev, seconds=seconds, warmup=warmup, n_resident=n_resident, peak=peak_tflops,
                      bandwidth=bandwidth_tbs, profile=profile_steps, log=click.echo)
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")


def _train_config(dataset: str, width: int):
    """The run config bench-train measures: the dataset's prior recipe at this width."""
    from edgediff.tools import priors

    recipe = priors.RECIPES["gmm2d"] if dataset == "gmm2d" else priors.PriorRecipe(dataset)
    return priors.run_config(priors.replace_width(recipe, width))


def _roofline(dataset, width, variants, gpu, peak_tflops, bandwidth_tbs, json_out) -> None:
    from dataclasses import asdict

    from edgediff.runtime.atomic import write_json
    from edgediff.tools import bench_train as bt
    from edgediff.tools import roofline

    chosen = [bt.parse_variant(v, True) for v in variants]
    figures = roofline.gpu_figures(gpu, peak_tflops, bandwidth_tbs)
    config = _train_config(dataset, width)
    rows, n_params = roofline.count(config.model, config.model.sample_shape)
    click.echo(f"{dataset}, {config.model.kind} width {width}, {n_params:,} parameters, on {gpu} "
               f"({figures[0]:.0f} TFLOP/s bf16, {figures[1]:.2f} TB/s):")
    for text in roofline.table(rows):
        click.echo("  " + text)
    bounds = []
    for batch in sorted({v.batch for v in chosen}):
        bounds.append(roofline.bounds(rows, n_params, batch, *figures))
        click.echo(roofline.summary(bounds[-1]))
    if json_out is not None:
        write_json(json_out, {"gpu": gpu, "model": asdict(config.model), "parameters": n_params, "bounds": bounds,
                              "operations": [asdict(r) for r in rows]})
        click.echo(f"wrote {json_out}")


@cli.command("bench-stream")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--steps", "steps_list", type=CommaList(count(1, 1000)), default="1,2,5,10,20,100", show_default=True,
              help="Denoising steps per frame, one row each.")
@click.option("--rate", type=positive(1e12), default=1e6, show_default=True, help="Sample rate in Hz for the real-time factor.")
@click.option("--seconds", type=positive(3600.0), default=5.0, show_default=True, help="Timed seconds per row (at least 2 batches).")
@click.option("--chunk", type=count(1, 1 << 24), default=16384, show_default=True, help="Samples per push.")
@click.option("--batch", type=count(1, 1 << 16), help="Frames per engine call (default: up to 64).")
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True, help="ONNX Runtime CPU threads (0: min(2, cores)).")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Peak RSS over a 1 M and a 10 M sample stream.")
@click.option("--json", "json_out", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace the JSON file if it exists.")
def bench_stream(bundles, steps_list, rate, seconds, chunk, batch, threads, memory, json_out, force) -> None:
    """Live-stream throughput, real-time factor and latency of BUNDLES (denoise) at several step counts."""
    check_outputs({"--json": json_out}, force=force)
    from edgediff.runtime.atomic import write_json
    from edgediff.runtime.backends import load
    from edgediff.tools import bench_stream as bs
    from edgediff.tools.bench import machine

    report: dict[str, Any] = {"machine": machine(), "rate_hz": rate, "chunk": chunk, "bundles": {}}
    for bundle in bundles:
        d = load(bundle, backend="ort", threads=threads)
        rows = []
        for steps in steps_list:
            rows.append(bs.measure(d, steps, rate=rate, seconds=seconds, chunk=chunk, batch=batch))
            click.echo(bs.line(Path(bundle).name, rows[-1]))
        entry: dict[str, Any] = {"provider": d.provider, "rows": rows}
        if memory:
            entry["memory"] = bs.memory(str(bundle), 1 << 20, 10 << 20)
            m = entry["memory"]
            if "error" not in m["short"] and "error" not in m["long"]:
                click.echo(f"{Path(bundle).name:>12} peak RSS {m['short']['peak_rss_mb']:.0f} MB over "
                           f"{m['short']['samples']} samples, {m['long']['peak_rss_mb']:.0f} MB over {m['long']['samples']}")
        report["bundles"][str(bundle)] = entry
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")
