"""``edgediff separate``: a signal of interest and an interferer, apart, with one diffusion prior each."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from edgediff.tools.arrays import load_array
from edgediff.tools.cli import cli
from edgediff.tools.cli.options import engine_options, load_denoiser, walk_options
from edgediff.tools.cli.types import RESTART, SEED, TRAVEL, Finite, count, non_negative, positive


@cli.command()
@click.option("--soi", type=click.Path(path_type=Path), required=True, help="Prior of the signal of interest (bundle or name).")
@click.option("--interference", type=click.Path(path_type=Path), help="Prior of the interferer (bundle or name).")
@click.option("--y", "y_path", type=click.Path(path_type=Path), required=True, help="Mixtures (N, 2, L) .npy, user units.")
@click.option("--sigma-y", type=non_negative(), required=True, help="Noise std beyond the two sources, user units.")
@click.option("--method", type=click.Choice(["auto", "joint-ddnm", "joint-diffpir", "alpha-rgs", "joint-smc"]),
              default="auto", show_default=True,
              help="auto: alpha-rgs below -4.5 dB SINR (from the source powers), joint-ddnm above; joint-smc: "
                   "sequential Monte Carlo over both priors (--particles x steps NFE per source).")
@click.option("--particles", type=count(1, 1 << 16), default=16, show_default=True, help="joint-smc: particles per frame.")
@click.option("--steps", type=count(1, 100_000),
              help="Reverse steps (joint) or iterations (alpha-rgs): network calls per source [100; alpha-rgs 200].")
@click.option("--samples", type=count(1, 1000), default=1, show_default=True,
              help="Joint methods: average K posterior samples (seeds SEED..SEED+K-1).")
@walk_options("joint-ddnm", "the SOI", "; 10:4 at 0 dB against rf-qpsk-fast: README, Separation",
              "600,500,400,300 at 0 dB against rf-qpsk-fast: README, Separation")
@click.option("--soi-power", type=positive(), help="SOI power in the mixture, mean |s|^2 per complex sample.")
@click.option("--interference-power", type=positive(), help="Interferer power, mean |b|^2 per complex sample.")
@click.option("--init", type=click.Choice(["auto", "lmmse", "wiener"]), default="auto", show_default=True,
              help="alpha-rgs start: LMMSE from both priors' stats.npz, or the scalar Wiener gain; joint-ddnm with "
                   "--restart: lmmse restarts from LMMSE in place of drawing its own first samples.")
@click.option("--omega", type=positive(100.0), default=1.0, show_default=True, help="alpha-rgs: interference prior weight.")
@click.option("--eta", type=Finite(0.0, 1.0), default=0.5, show_default=True, help="joint-ddnm: share of fresh noise.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="SOI estimate (.npy), user units.")
@click.option("--out-interference", type=click.Path(path_type=Path), help="Interference estimate (.npy).")
@click.option("--plot", type=click.Path(path_type=Path), help="Mixture, estimates and spectra of the first frame (PNG).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def separate(soi, interference, y_path, sigma_y, method, particles, steps, samples, travel, restart, soi_power,
             interference_power, init, omega, eta, seed, out, out_interference, plot, force, quiet, **engine) -> None:
    """Separate mixtures y = s + b + n into the signal of interest s and the interferer b.

    Source powers (mean |x|^2 per complex sample, user units): both given are used as they are; one
    given, the other is what the mixture's power leaves; none given, each prior's training power,
    refused when the mixture is more than 3 dB away from their sum."""
    from edgediff.runtime.atomic import save_npy
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.inverse.separate import (DEFAULT_STEPS, SOI_DOMINATES_DB, check_pair, choose_method,
                                                   lmmse_separation, restart_calls, separate as run,
                                                   source_amplitudes)
    from edgediff.tools.cli.outputs import check_outputs

    if interference is None:
        raise InputError("--interference is missing: separation needs a prior for the interferer too "
                         "(a bundle or a shipped name such as rf-chirp)")
    check_outputs({"--out": out, "--out-interference": out_interference, "--plot": plot}, inputs={"--y": y_path},
                  force=force)
    if method not in ("alpha-rgs", "auto") and init == "lmmse" and not (method == "joint-ddnm" and restart):
        raise InputError(f"--init lmmse applies to alpha-rgs, and to joint-ddnm with --restart; --method {method} "
                         "starts from noise")
    travel, restart = tuple(travel) if travel else (0, 0), tuple(restart or ())
    y = load_array(y_path, "--y", ndim=(2, 3))
    d_s, d_b = load_denoiser(soi, **engine), load_denoiser(interference, **engine)
    check_pair(d_s, d_b)
    y = y[None] if y.ndim == 2 else y
    if y.shape[1:] != tuple(d_s.sample_shape):
        raise InputError(f"--y holds frames of {y.shape[1:]}: the priors expect {tuple(d_s.sample_shape)}")
    amp = source_amplitudes(y, sigma_y, d_s.normalisation.scale, d_b.normalisation.scale, soi_power, interference_power)
    chosen, sinr_db = choose_method(amp)
    asked = method
    if method == "auto":
        method = chosen
        click.echo(f"--method auto: {method} (SINR {sinr_db:+.1f} dB from the source powers)")
    given = [name for name, v in (("--travel", travel != (0, 0)), ("--restart", restart)) if v]
    if given and method != "joint-ddnm":
        why = f"--method auto chose {method} at SINR {sinr_db:+.1f} dB" if asked == "auto" else \
            f"--method {method} has no steps to walk again"
        raise InputError(f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to joint-ddnm (DDNM+'s "
                         f"time-travel trick and restarts), and {why}: drop {' and '.join(given)} or give --method "
                         "joint-ddnm")
    if sinr_db >= SOI_DOMINATES_DB:
        click.echo(f"note: at SINR {sinr_db:+.1f} dB the SOI dominates: a matched filter on the mixture alone may lose "
                   "fewer bits than a separation, which can lose whole frames (bench-separate at +6 dB); it buys "
                   "the waveform's MSE there, and --samples 4 averages most of those losses away", err=True)
    steps = steps or DEFAULT_STEPS[method]
    start = None
    if method == "alpha-rgs" or (method == "joint-ddnm" and restart and init == "lmmse"):
        stats = (d_s.bundle.stats(), d_b.bundle.stats())
        if init == "lmmse" and None in stats:
            raise InputError("--init lmmse needs stats.npz in both bundles (re-export them with this edgediff)")
        if init != "wiener" and None not in stats:
            start = lmmse_separation(y, sigma_y, amp, *stats)
    per_call = min(d_s.max_batch, d_b.max_batch)
    if method == "joint-smc":
        total = steps * -(-len(y) // max(1, per_call // particles))
    else:
        calls = restart_calls(d_s.schedule, steps, travel, restart, first=start is None) \
            if method == "joint-ddnm" else steps
        total = calls * (samples if method != "alpha-rgs" else 1) * (-(-len(y) // per_call))
    with click.progressbar(length=total, label=f"{method} x{len(y)}", hidden=quiet, show_pos=True) as bar:
        res = run(d_s, d_b, y, sigma_y, amp, method=method, steps=steps, samples=samples, seed=seed, eta=eta,
                  init=start, omega=omega, particles=particles, travel=travel, restart=restart,
                  progress=bar.update)
    if not (np.isfinite(res.soi).all() and np.isfinite(res.interference).all()):
        raise InputError("the separation diverged (non-finite values): lower --omega or give the source powers")
    click.echo(f"{len(y)} mixtures, {method}, {res.nfe_per_source} NFE per source per frame, {res.seconds:.2f} s "
               f"({1e3 * res.seconds / len(y):.1f} ms/frame); amplitudes {amp.a_s:.3g} / {amp.a_b:.3g} ({amp.source})")
    if plot is not None:
        from edgediff.tools import plots

        plots.separation_figure(y[0], res.soi[0], res.interference[0], plot, title=f"{method}-{res.nfe_per_source}")
    if out_interference is not None:
        save_npy(out_interference, res.interference.astype(np.float32))
    save_npy(out, res.soi.astype(np.float32))
    click.echo("wrote " + ", ".join(str(p) for p in (out, out_interference, plot) if p is not None))


@cli.command("bench-separate")
@click.option("--soi", type=click.Path(path_type=Path), default=Path("rf-qpsk"), show_default=True)
@click.option("--interference", "interferers", type=click.Path(path_type=Path), multiple=True,
              default=(Path("rf-chirp"), Path("rf-qpsk-fast")), show_default=True)
@click.option("--frames", type=count(1, 100_000), default=100, show_default=True, help="Frames per SINR point.")
@click.option("--steps", type=count(1, 100_000), default=100, show_default=True,
              help="Joint steps; alpha-RGS runs twice as many iterations (NFE per source).")
@click.option("--sinr", "sinrs", type=Finite(-60.0, 60.0), multiple=True,
              help="SINR points in dB (default -24..+6 by 3: LMMSE's BER crosses 1e-1 and 1e-3 in it).")
@click.option("--smc-particles", type=click.IntRange(0, 1 << 12), default=0, show_default=True,
              help="Add joint SMC with this many particles per frame (half the joint steps; NFE = particles x steps / 2).")
@click.option("--samples", type=click.IntRange(1, 1 << 12), default=1, show_default=True,
              help="Add joint DDNM+ averaging this many posterior samples (their mean; NFE = samples x steps).")
@click.option("--travel", type=TRAVEL, metavar="L:R",
              help="Add joint DDNM+ with the time-travel trick L:R (and, with --samples, the mean of that many "
                   "of its samples).")
@click.option("--restart", type=RESTART, metavar="T[,T...]",
              help="Add joint DDNM+ (walked with --travel where given) averaging --samples samples, then one round "
                   "per timestep T restarted there from the SOI so far.")
@click.option("--frame-seed", type=click.IntRange(0, 1 << 20), default=0, show_default=True,
              help="Which held-out frames: 0 is the benchmark's; choose recipes (--restart, --travel) on another "
                   "seed's frames, then score them on 0's.")
@click.option("--row", "only", multiple=True, metavar="TEXT",
              help="Run only the diffusion rows whose name holds TEXT (repeatable); the baselines always run. A "
                   "restarted row draws the same without its walked mean's row (it draws that mean itself).")
@click.option("--json", "json_out", type=click.Path(path_type=Path))
@click.option("--plot", type=click.Path(path_type=Path), help="BER and MSE against SINR (PNG).")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
def bench_separate(soi, interferers, frames, steps, sinrs, smc_particles, samples, travel, restart, frame_seed, only,
                   json_out, plot, force) -> None:
    """BER and SOI MSE against SINR: joint diffusion and alpha-RGS against matched filter, LMMSE and fixed filter."""
    from edgediff.runtime.atomic import write_json
    from edgediff.tools.bench_separate import SINRS, run_benchmark, table
    from edgediff.tools.cli.outputs import check_outputs

    check_outputs({"--json": json_out, "--plot": plot}, force=force)
    report = run_benchmark(str(soi), [str(i) for i in interferers], frames, steps,
                           tuple(int(round(s)) for s in sinrs) or SINRS, progress=lambda m: click.echo(m, err=True),
                           smc_particles=smc_particles, samples=samples, travel=tuple(travel) if travel else (0, 0),
                           restart=tuple(restart or ()), frame_seed=frame_seed,
                           only=tuple(only))
    for line in table(report):
        click.echo(line)
    if plot is not None:
        from edgediff.tools import plot_curves

        click.echo(f"wrote {plot_curves.separation_curves(report, plot)}")
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")
