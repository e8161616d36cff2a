"""``edgediff reconstruct`` and ``edgediff bench-reconstruct``: the diffusion prior for y = A x + n."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from edgediff.tools.cli import cli
from edgediff.runtime.errors import InputError
from edgediff.tools.arrays import load_array
from edgediff.tools.cli.options import engine_options, load_denoiser, stream_options, walk_options
from edgediff.tools.cli.types import SEED, CommaList, Finite, count, non_negative, positive

#: bench-reconstruct's cases (edgediff.tools.bench_reconstruct.CASES, named here so that --help stays light)
CASE_NAMES = ("miss50", "miss75", "burst25", "denoise10", "decimate2")
#: the imaging cases for radar-rd bundles (edgediff.tools.bench_imaging.IMAGING_CASES)
IMAGING_CASE_NAMES = ("chirps50", "chirps25", "chirpburst25", "chirpburst50")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--y", "y_path", type=click.Path(path_type=Path), required=True,
              help="Measurements (.npy), user units; a recording; or - for raw samples on stdin.")
@click.option("--operator", type=click.Choice(["mask", "identity", "decimate", "matrix", "partial-fourier"]), required=True,
              help="partial-fourier: a range-Doppler map seen through the chirps kept (--mask over chirps/samples).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="0/1 array, 1 = observed: (C, L) or (L,) for every frame, or (N, C, L) one per frame; "
                   "partial-fourier: (chirps,), (1, samples), (chirps, samples) or one per frame.")
@click.option("--factor", type=count(1), help="Decimation factor k.")
@click.option("--no-antialias", is_flag=True, help="Decimate by plain subsampling (no low-pass filter).")
@click.option("--matrix", "matrix_path", type=click.Path(path_type=Path), help="Dense (M, C*L) sensing matrix (.npy).")
@click.option("--sigma-y", type=non_negative(), required=True, help="Measurement noise std, user units.")
@click.option("--method", type=click.Choice(["ddnm", "diffpir", "dps", "smc"]), default="ddnm", show_default=True,
              help="smc: sequential Monte Carlo, exact as --particles grow (NFE per frame: particles x steps).")
@click.option("--particles", type=count(1, 1 << 16), default=16, show_default=True, help="smc: particles per frame.")
@click.option("--sampler", type=click.Choice(["ddim", "dpmpp2m", "sde-dpmpp2m"]), default="ddim", show_default=True,
              help="ddnm/diffpir: their own DDIM-style steps, or inside DPM-Solver++(2M) (deterministic, ~20 steps) or its SDE variant.")
@click.option("--steps", type=count(1), help="Reverse steps [100; a distilled bundle: its own].")
@click.option("--eta", type=Finite(0.0, 1.0), default=0.5, show_default=True, help="DDNM+ share of fresh noise.")
@click.option("--zeta", type=non_negative(100.0),
              help="DPS step size [1.0 exact, 0.3 Jacobian-free]; DiffPIR fresh-noise share in [0, 1] [1.0].")
@click.option("--lam", type=positive(1e6), default=1.0, show_default=True, help="DiffPIR data weight lambda.")
@click.option("--dps-approx", is_flag=True, help="DPS without the network Jacobian even when gradients exist.")
@click.option("--samples", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
              help="Average K posterior samples (seeds SEED .. SEED+K-1): the posterior-mean estimate, K x steps NFE.")
@walk_options("ddnm", "the mean", "", "--travel 10:4 --samples 4 --restart 600,500 --init lmmse at 75 % of QPSK "
              "samples missing: README, Reconstruction")
@click.option("--init", type=click.Choice(["noise", "lmmse"]), default="noise", show_default=True,
              help="--restart: where the rounds begin: the mean of --samples passes from noise, or lmmse (the "
                   "bundle's covariance, stats.npz) with no first passes.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Reconstruction (.npy), user units.")
@click.option("--truth", "truth_path", type=click.Path(path_type=Path), help="Clean frames, for NMSE and the plot.")
@click.option("--plot", type=click.Path(path_type=Path), help="Truth, measurement, reconstruction and error (PNG).")
@click.option("--hop", type=count(1), help="Recordings: samples between frame starts (default: half a frame).")
@click.option("--mask-label", help="Recordings: SigMF annotations with this core:label mark lost samples.")
@stream_options
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def reconstruct(bundle, y_path, operator, mask_path, factor, no_antialias, matrix_path, sigma_y, method, particles, sampler,
                steps, eta, zeta, lam, dps_approx, samples, travel, restart, init, seed, out, truth_path, plot, hop,
                mask_label, force, quiet,
                datatype, sample_rate, scale, batch, **engine) -> None:
    """Recover frames x from measurements y = A x + n with BUNDLE's diffusion prior (DDNM+, DiffPIR or DPS).

    --y may also be a whole recording (NAME.sigmf-meta or a 1-D complex .npy): it is framed with
    overlap, streamed through the prior in bounded memory and written back as a recording of the
    same length, datatype and sample rate (--operator identity to clean it, mask to fill lost samples).
    --y - and --out - are raw interleaved samples on stdin / stdout (--datatype), chunk by chunk."""
    from edgediff.tools.cli.recording import is_recording, run_recording

    denoiser = load_denoiser(bundle, **engine)
    steps = distilled_steps(denoiser, steps)
    travel, restart = tuple(travel or (0, 0)), tuple(restart or ())
    if init != "noise" and not restart:
        raise InputError(f"--init {init} is where --restart's rounds begin: give --restart T[,T...] or leave --init out")
    if str(y_path) == "-" or str(out) == "-" or is_recording(y_path):
        if method in ("dps", "smc") or samples > 1 or truth_path is not None or plot is not None or travel != (0, 0) \
                or restart:
            raise InputError("recordings run with --method ddnm or diffpir, one sample, no --truth/--plot/--travel/"
                             "--restart")
        from edgediff import __version__

        generator = f"edgediff {__version__} {method}-{steps} seed={seed} bundle={denoiser.bundle.root.name}"
        run_recording(denoiser, y_path, out, operator=operator, mask=mask_path, mask_label=mask_label, sigma_y=sigma_y,
                      hop=hop, force=force, quiet=quiet, generator=generator, method=method, steps=steps, seed=seed,
                      sampler=sampler, stream={"datatype": datatype, "sample_rate": sample_rate, "scale": scale,
                                               "batch": batch},
                      **({"eta": eta} if method == "ddnm" else {"lam": lam}))
        return
    from edgediff.runtime.atomic import save_npy
    from edgediff.runtime.inverse import build, reconstruct as run
    from edgediff.runtime.inverse.methods import restart_calls

    from edgediff.tools.cli.outputs import check_outputs

    check_outputs({"--out": out, "--plot": plot},
                  inputs={"--y": y_path, "--mask": mask_path, "--matrix": matrix_path, "--truth": truth_path}, force=force)
    if method == "diffpir" and zeta is not None and zeta > 1:
        raise InputError(f"--zeta {zeta}: DiffPIR's share of fresh noise lies in [0, 1]")
    y = load_array(y_path, "--y")
    truth = load_array(truth_path, "--truth")
    op = build(operator, denoiser.sample_shape, mask=load_array(mask_path, "--mask"), factor=factor,
               matrix=load_array(matrix_path, "--matrix"), antialias=not no_antialias)
    y = y[None] if y.shape == op.measurement_shape else y
    op.check_measurement(y)
    if truth is not None:
        if truth.shape == tuple(denoiser.sample_shape):
            truth = truth[None]
        if truth.shape != (len(y), *denoiser.sample_shape):
            raise InputError(f"--truth holds {truth.shape}: expected one frame of {tuple(denoiser.sample_shape)} per "
                             f"measurement, i.e. ({len(y)}, {', '.join(map(str, denoiser.sample_shape))})")
    if method == "smc":
        check_smc_memory(particles, len(y), denoiser)
        total = -(-len(y) // max(1, denoiser.max_batch // particles)) * steps
    else:
        calls = restart_calls(denoiser.schedule, steps, travel, restart, first=init == "noise") \
            if method == "ddnm" and sampler == "ddim" else steps
        total = -(-len(y) // denoiser.max_batch) * calls * samples
    with click.progressbar(length=total, label=f"{method} x{len(y)}", hidden=quiet, show_pos=True) as bar:
        x, res = run(denoiser, y, op, sigma_y, method=method, steps=steps, seed=seed, eta=eta, zeta=zeta, lam=lam,
                     exact=False if dps_approx else None, samples=samples, sampler=sampler, particles=particles,
                     travel=travel, restart=restart, init=None if init == "noise" else init, progress=bar.update)
    draws = x if method == "smc" and samples > 1 else None  # (N, K, ...): K draws from the final particles
    if draws is not None:
        x = draws.mean(axis=1)
    mean = f", mean of {samples} posterior samples" if samples > 1 else ""
    mean += f", walked {travel[0]}:{travel[1]}" if travel != (0, 0) else ""
    mean += (f", restarted at {'/'.join(map(str, restart))}" + (" from LMMSE" if init == "lmmse" else "")) if restart else ""
    if method == "smc":
        mean = (f", {samples} draws from {particles} weighted particles (saved)" if draws is not None
                else f", weighted mean of {particles} particles")
    line = (f"{len(y)} frames{mean}, {res.nfe} NFE each ({res.nfe_equivalent:.0f} NFE-equivalents with backward passes), "
            f"{res.seconds:.2f} s ({1e3 * res.seconds / len(y):.1f} ms/frame) on {denoiser.backend}")
    if truth is not None:
        t = truth.reshape(x.shape).astype(np.float64)
        line += f"; NMSE {nmse_db(x, t):.2f} dB"
    click.echo(line)
    if plot is not None:  # side output first, the reconstruction last
        from edgediff.tools import plots

        plots.reconstruction_figure(truth.reshape(x.shape)[0] if truth is not None else None,
                                    op.take(0, 1).adjoint(y[:1])[0], x[0], plot,
                                    title=f"{operator}, {method}-{res.nfe}")
    save_npy(out, (x if draws is None else draws).astype(np.float32))
    click.echo(f"wrote {out}" + (f", {plot}" if plot else ""))


def check_smc_memory(particles: int, frames: int, denoiser) -> None:
    """Refuse up front particles whose state cannot fit in half of this machine's memory."""
    import math
    import os

    chunk = min(frames, max(1, denoiser.max_batch // particles))
    need = 8 * 8 * particles * chunk * math.prod(denoiser.sample_shape)  # ~8 float64 arrays of the particles
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total // 2:
        raise InputError(f"--particles {particles}: the particles need {need / 1e9:.1f} GB, more than half of this "
                         f"machine's {total / 1e9:.1f} GB: use fewer particles")


def distilled_steps(denoiser, steps: int | None) -> int:
    """The steps to run: a distilled bundle's own (anything else refused), else the asked or 100."""
    distilled = getattr(denoiser, "distilled", None)
    if not distilled:
        return steps or 100
    if steps not in (None, int(distilled["nfe"])):
        raise InputError(f"--steps {steps}: this bundle was distilled for {distilled['nfe']} steps; leave --steps out")
    return int(distilled["nfe"])


def nmse_db(estimate: np.ndarray, truth: np.ndarray) -> float:
    """10 log10(sum ||x_hat - x||^2 / sum ||x||^2) over all frames."""
    return float(10 * np.log10(np.sum((estimate - truth) ** 2) / np.sum(truth**2)))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--y", "y_path", type=click.Path(path_type=Path), required=True,
              help="A recording (NAME.sigmf-meta or 1-D complex .npy), - for raw samples on stdin, or frames (N, 2, L) .npy.")
@click.option("--sigma-y", type=non_negative(), required=True, help="Noise std to remove, user units.")
@click.option("--steps", type=count(1), help="Reverse steps [100; a distilled bundle: its own].")
@click.option("--hop", type=count(1), help="Recordings: samples between frame starts (default: half a frame).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output file, or - for raw samples on stdout.")
@stream_options
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def denoise(ctx, bundle, y_path, sigma_y, steps, hop, seed, out, datatype, sample_rate, scale, batch, force, quiet) -> None:
    """Clean a recording, a raw stream (--y - / --out -) or frames with BUNDLE's prior:
    `reconstruct --operator identity` in short.

    \b
      rtl_sdr -f 100e6 -s 1e6 - | csdr convert_u8_f | edgediff denoise rf-qpsk --y - --out - --sigma-y 0.05 | ..."""
    args = [str(bundle), "--y", str(y_path), "--operator", "identity", "--sigma-y", str(sigma_y),
            "--seed", str(seed), "--out", str(out)] + (["--steps", str(steps)] if steps else []) + \
        (["--hop", str(hop)] if hop else []) + (["--datatype", datatype] if datatype else []) + \
        (["--sample-rate", str(sample_rate)] if sample_rate else []) + (["--scale", str(scale)] if scale else []) + \
        (["--batch", str(batch)] if batch else []) + \
        (["--force"] if force else []) + (["--quiet"] if quiet else [])
    ctx.invoke(reconstruct, **reconstruct.make_context("reconstruct", args, parent=ctx.parent).params)


@cli.command("bench-reconstruct")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--frames", type=count(1, 10_000), default=16, show_default=True, help="Held-out frames per case.")
@click.option("--steps", type=count(1), default=100, show_default=True, help="NFE budget per frame.")
@click.option("--cases", type=CommaList(click.Choice(CASE_NAMES + IMAGING_CASE_NAMES), unique=True),
              help=f"Comma-separated cases. [RF bundles: {','.join(CASE_NAMES)}; radar-rd bundles (imaging, judged by "
                   f"a CFAR detector): {','.join(IMAGING_CASE_NAMES)}]")
@click.option("--no-exact-dps", is_flag=True, help="Skip DPS with torch gradients (needs torch and the run).")
@click.option("--nfe-curve", is_flag=True, help="Instead: NMSE against NFE per frame for every method at several "
              "budgets (SMC at several particle counts) on the first case, LMMSE as a line.")
@click.option("--walked", is_flag=True, help="Add the walked and restarted DDNM+ rows to the case table (separation's "
              "recipe: the mean of 8 walked 10x4, then a round of 8 restarted at each of 0.6/0.5/0.4/0.3 of T; 9600 "
              "calls a frame at --steps 100, about 20 s a frame on 2 cores). --nfe-curve has them already.")
@click.option("--plot", type=click.Path(path_type=Path),
              help="--nfe-curve: the curves as a PNG; radar bundles: the maps of the first case with their detections.")
@click.option("--json", "json_out", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace the JSON file if it exists.")
def bench_reconstruct(bundles, frames, steps, cases, no_exact_dps, nfe_curve, walked, plot, json_out, force) -> None:
    """NMSE of every method and classical baseline on held-out frames of built-in RF datasets; radar-rd
    bundles: the imaging cases (lost chirps), judged by a CA-CFAR detector as well."""
    from edgediff.runtime.atomic import write_json
    from edgediff.tools.bench_reconstruct import CASES, run_benchmark, table
    from edgediff.tools.cli.outputs import check_outputs

    check_outputs({"--json": json_out, "--plot": plot}, force=force)
    if walked and nfe_curve:
        raise InputError("--walked adds the walked rows to the case table; --nfe-curve has them already: give one of the two")
    radar = [b for b in bundles if bundle_dataset(b) == "radar-rd"]
    if radar:
        if len(radar) != len(bundles) or nfe_curve or walked:
            raise InputError("radar-rd bundles run the imaging cases on their own: bench them without RF bundles "
                             "and without --nfe-curve or --walked")
        if cases and not set(cases) <= set(IMAGING_CASE_NAMES):
            raise InputError(f"--cases {','.join(cases)}: a radar-rd bundle runs the imaging cases "
                             f"({','.join(IMAGING_CASE_NAMES)})")
        return bench_imaging(radar, frames, steps, cases or IMAGING_CASE_NAMES, plot, json_out)
    cases = cases or CASE_NAMES
    if set(cases) & set(IMAGING_CASE_NAMES):
        raise InputError(f"--cases {','.join(cases)}: {', '.join(IMAGING_CASE_NAMES)} need a radar-rd bundle")
    if nfe_curve:
        from edgediff.tools.bench import machine
        from edgediff.tools.bench_reconstruct import curve_lines, nfe_curve as curve

        case = "miss75" if list(cases) == list(CASE_NAMES) else cases[0]  # the case unless one is named
        curves = []
        for bundle in bundles:
            curves.append(curve(bundle, frames, case))
            for line in curve_lines(curves[-1]):
                click.echo(line)
        if plot is not None:
            from edgediff.tools import plot_curves

            click.echo(f"wrote {plot_curves.nmse_vs_nfe(curves, plot)}")
        if json_out is not None:
            write_json(json_out, {"machine": machine(), "curves": curves})
            click.echo(f"wrote {json_out}")
        return
    if plot is not None:
        raise InputError("--plot draws the --nfe-curve; the case table is text and JSON")
    names = cases
    assert set(names) <= set(CASES), "CASE_NAMES and the benchmark's CASES drifted apart"
    report: dict[str, Any] = run_benchmark(list(bundles), names, frames, steps, exact_dps=not no_exact_dps,
                                           walked=walked)
    for line in table(report):
        click.echo(line)
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")


def bundle_dataset(bundle: Path) -> str | None:
    """The built-in dataset a bundle was trained on (None for user data); the bundle is checked on load."""
    from edgediff.runtime.bundle import Bundle

    return Bundle.open(bundle).manifest.get("data", {}).get("dataset")


def bench_imaging(bundles: list[Path], frames: int, steps: int, cases: tuple[str, ...], plot: Path | None,
                  json_out: Path | None) -> None:
    from edgediff.runtime.atomic import write_json
    from edgediff.tools.bench import machine
    from edgediff.runtime.backends import load
    from edgediff.tools.bench_imaging import ImagingSetup, imaging_figure, imaging_table, latency_beside, run_imaging_case

    report: dict[str, Any] = {"machine": machine(), "frames": frames, "steps": steps, "imaging": {}}
    for i, bundle in enumerate(bundles):
        setup = ImagingSetup(bundle, frames)
        results = report["imaging"][str(bundle)] = {}
        pair = {f"2D U-Net ({bundle})": setup.denoiser, "1D U-Net (rf-qpsk)": load("rf-qpsk", backend="ort")}
        lat = report.setdefault("latency", {})[str(bundle)] = latency_beside(pair)
        click.echo("per-NFE latency, batch 1, ONNX Runtime, measured in alternation: " + ", ".join(
            f"{n} {ms:.2f} ms" for n, ms in lat["ms_per_nfe"].items()) + f" (2D/1D {1 / list(lat['ratio_to_first'].values())[1]:.2f}x)")
        for j, case in enumerate(cases):
            kept: dict[str, np.ndarray] = {}
            results[case] = run_imaging_case(setup, case, steps, keep=kept)
            for line in imaging_table(setup.name, case, results[case]):
                click.echo(line)
            if plot is not None and i == 0 and j == 0:  # the figure: the first bundle's first case
                imaging_figure(setup, results[case], kept, plot)
                click.echo(f"wrote {plot}")
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")
