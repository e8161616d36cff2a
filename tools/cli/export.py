"""``edgediff export onnx|trt``: bundles for the edge."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.runtime.grids import SAMPLERS
from edgediff.runtime.metrics import FP32_PARITY
from edgediff.tools.cli import cli
from edgediff.tools.cli.types import BATCH_PROFILE, SEED, count, non_negative


@cli.group()
def export() -> None:
    """Turn a run into a bundle (ONNX, parity-gated) and add TensorRT engines to it."""


@export.command("onnx")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle directory to write.")
@click.option("--opset", type=click.IntRange(17, 30), default=18, show_default=True, help="ONNX opset (17 or newer).")
@click.option("--batch", type=count(1, 65536), help="Fix the batch size (default: dynamic).")
@click.option("--max-batch", type=count(1, 65536), default=64, show_default=True, help="Largest batch of the dynamic profile.")
@click.option("--atol", type=non_negative(1.0), default=FP32_PARITY["atol"], show_default=True,
              help="Parity gate absolute tolerance.")
@click.option("--rtol", type=non_negative(1.0), default=FP32_PARITY["rtol"], show_default=True,
              help="Parity gate relative tolerance.")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (norms, softmax, embedding kept fp32).")
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
def export_onnx(run_dir, out, opset, batch, max_batch, atol, rtol, fp16, force) -> None:
    """Export RUN_DIR's EMA model to ONNX, gate it against torch on ONNX Runtime, write the bundle."""
    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle
    from edgediff.export.parity import describe

    opts = OnnxExportOptions(opset=opset, batch=batch, max_batch=max_batch, atol=atol, rtol=rtol, fp16=fp16, force=force)
    m = export_bundle(run_dir, out, opts)
    click.echo(f"parity: {describe(m['parity'])}")
    if "fp16" in m:
        click.echo(f"fp16: worst relative L2 {m['fp16']['worst_rel_l2']:.2e} on {m['fp16']['engine']}")
    size = sum(f["bytes"] for f in m["files"].values()) / 1e6
    click.echo(f"bundle {out}: {', '.join(m['files'])} ({size:.1f} MB), schedule {m['schedule']['kind']} "
               f"T={m['schedule']['T']}, batch {m['batch']['min']}..{m['batch']['max']}")


@export.command("int8")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile", show_default=True,
              help="Activation calibration.")
@click.option("--calibration", type=count(16, 1 << 16), default=512, show_default=True,
              help="Calibration inputs x_t, their timesteps stratified over the schedule.")
@click.option("--gate-frames", type=count(16, 1 << 20),
              help="Frames each model samples for the gate [QPSK 512, chirps 4096, mix 1024, gmm2d 8192].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--weight-bits", type=click.Choice(["7", "8"]), default="7", show_default=True,
              help="Weight range: 7 bits avoid u8s8 saturation on x86 CPUs without VNNI (AVX2); 8 the full range.")
@click.option("--force", is_flag=True, help="Replace the bundle's existing int8 model.")
def export_int8(bundle_dir, method, calibration, gate_frames, seed, weight_bits, force) -> None:
    """Quantize BUNDLE_DIR to int8 (QDQ, ONNX Runtime's static quantization, calibrated over the schedule)
    and keep model.int8.onnx only if the receiver gate passes (EVM, LSD, mode shares, reconstruction
    against fp32); otherwise nothing is written. Run it with --precision int8."""
    from edgediff.tools.int8_gate import quantize_gated

    quantize_gated(bundle_dir, method, calibration, gate_frames, seed, force, log=click.echo, weight_bits=int(weight_bits))


@export.command("trt")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default="fp32", show_default=True,
              help="int8: explicit quantization from the bundle's gated model.int8.onnx (edgediff export int8).")
@click.option("--batch", "profile", type=BATCH_PROFILE, default="1:1:16", show_default=True,
              help="Optimisation profile MIN:OPT:MAX (or one size), within the bundle's batch range.")
@click.option("--workspace", type=count(64, 1 << 20), default=512, show_default=True, help="Builder workspace in MiB (256 on 8 GB Jetsons).")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="Read and update this timing cache file.")
@click.option("--tf32/--no-tf32", default=False, show_default=True, help="Allow TF32 in fp32 engines (faster, ~1e-3).")
@click.option("--version-compatible", is_flag=True, help="Plan that later TensorRT versions and the lean runtime load.")
@click.option("--gpu", type=click.IntRange(0, 64), default=0, show_default=True, help="CUDA device index.")
def export_trt(bundle_dir, precision, profile, workspace, timing_cache, tf32, version_compatible, gpu) -> None:
    """Build a TensorRT engine for this GPU from BUNDLE_DIR's ONNX, validate it against ONNX Runtime,
    and add it to the bundle as model.<sm>.trt<version>.<precision>.plan."""
    from edgediff.export.tensorrt_build import BuildSettings, Profile, add_engine
    from edgediff.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    settings = BuildSettings(precision=precision, profile=Profile.parse(":".join(map(str, profile)), bundle.batch_range),
                             workspace_mib=workspace, timing_cache=timing_cache, tf32=tf32,
                             version_compatible=version_compatible, device_index=gpu)
    verbose = click.get_current_context().find_root().params.get("verbose", False)
    entry = add_engine(bundle_dir, settings, verbose=verbose)
    worst = max(entry["validation"]["checks"], key=lambda c: float(c["rel_l2"]))
    click.echo(f"engine {entry['file']} ({entry['bytes'] / 1e6:.1f} MB) for {entry['gpu']} {entry['compute_capability']}, "
               f"TensorRT {entry['tensorrt']}, profile {profile}; worst vs onnxruntime: rel L2 {float(worst['rel_l2']):.2e}, "
               f"max abs {float(worst['max_abs']):.2e}")


@export.command("grid")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--grid", "spec", help="Segments HI-LO:K, e.g. 999-950:4,950-820:22,820-400:10,400-0:14: K DDIM steps "
                                     "from t HI down toward LO in each.")
@click.option("--why", default="", help="A line kept beside the grid in the manifest (how it was chosen).")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="ddim", show_default=True,
              help="The sampler the grid is for, and the bundle's default: `sample` and `evaluate` without --sampler "
                   "run it on the grid.")
@click.option("--clear", is_flag=True, help="Take the bundle's own grid away (DDIM runs the uniform one again).")
def export_grid(bundle_dir, spec, why, sampler, clear) -> None:
    """Give BUNDLE_DIR its own grid: `sample` and `evaluate` place DDIM's steps (or --sampler's, which
    becomes the bundle's default) there by default when asked for that many (or no) steps, and
    --spacing chooses the uniform ones again. Only the
    manifest is rewritten (atomically); the model and its hashes stay. Judge a grid with `evaluate`
    against `evaluate --spacing trailing` before keeping it."""
    from edgediff.export.manifest import set_sampling
    from edgediff.runtime import grids
    from edgediff.runtime.bundle import Bundle
    from edgediff.runtime.errors import InputError

    if clear == (spec is not None):
        raise InputError("export grid: give either --grid SPEC or --clear")
    bundle = Bundle.open(bundle_dir)  # a bundle that verifies, or one line saying why not
    record = None if clear else grids.record(spec, bundle.schedule.T, why, sampler)
    set_sampling(bundle.root, record)
    if record is None:
        click.echo(f"{bundle.root}: own grid removed; DDIM runs the trailing grid")
    else:
        name = "DDIM" if sampler == "ddim" else f"{sampler} (the bundle's default sampler now)"
        click.echo(f"{bundle.root}: {name}-{record['steps']} runs on t = {', '.join(map(str, record['timesteps']))} "
                   "(--spacing trailing for the uniform grid)")
