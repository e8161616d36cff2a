"""``edgediff sample``: draw samples from a bundle on any engine, write them atomically."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.options import GRID_HELP, engine_options, grid_timesteps, load_denoiser
from edgediff.tools.cli.types import SEED, count, non_negative, positive


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--n", "n", type=count(1), default=16, show_default=True, help="Number of samples.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpmpp2m", "sde-dpmpp2m", "unipc"]),
              help="ddim (with --eta), ddpm, the deterministic multistep solvers DPM-Solver++(2M) "
                   "and UniPC, or the stochastic SDE-DPM-Solver++(2M). [the bundle's own, if its grid names one "
                   "(`edgediff export grid --sampler`); else ddim; ddim when --eta is given]")
@click.option("--steps", type=count(1), help="Sampler steps (DDPM: all T; DDIM: 50; dpmpp2m/unipc: 15; sde-dpmpp2m: 20).")
@click.option("--eta", type=non_negative(10.0),
              help="DDIM stochasticity: 1 is the DDPM posterior on the strided steps (robust to model error), "
                   "0 the deterministic sampler. [1; a distilled bundle: its own, 0]")
@click.option("--spacing", type=click.Choice(["trailing", "leading", "linspace"]),
              help="Where DDIM's steps land. [the bundle's own grid at its step count, if it carries one "
                   "(`edgediff export grid`); else trailing]")
@click.option("--grid", "grid_spec", help=GRID_HELP)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch", type=count(1), help="Samples per engine call (default: the engine's largest batch).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output file (.npy, or a SigMF base name).")
@click.option("--format", "fmt", type=click.Choice(["npy", "sigmf"]), default="npy", show_default=True)
@click.option("--sample-rate", type=positive(1e15), default=1.0, show_default=True, help="SigMF core:sample_rate (Hz).")
@click.option("--tweedie", type=click.Path(path_type=Path), help="Also save Tweedie x0_hat along the trajectory (.npz).")
@click.option("--every", type=count(1), default=10, show_default=True, help="Keep x0_hat every K steps (with --tweedie).")
@click.option("--plot", type=click.Path(path_type=Path), help="Also draw the samples into this PNG.")
@click.option("--force", is_flag=True, help="Replace output files that exist.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def sample(bundle, n, sampler, steps, eta, spacing, grid_spec, seed, batch, out, fmt, sample_rate, tweedie, every, plot, force,
           quiet, **engine) -> None:
    """Sample BUNDLE: N frames in batches, in the training data's units, written atomically."""
    from edgediff.runtime.atomic import save_npy, save_npz
    from edgediff.runtime.generate import SampleRequest, for_bundle, generate
    from edgediff.tools.cli.outputs import check_outputs
    from edgediff.tools.sigmf_io import sigmf_paths

    main = dict(zip(("--out", "--out (meta)"), sigmf_paths(out))) if fmt == "sigmf" else {"--out": out}
    check_outputs({**main, "--tweedie": tweedie, "--plot": plot}, force=force)
    denoiser = load_denoiser(bundle, **engine)
    request = SampleRequest(n=n, method=sampler, steps=steps, eta=eta, seed=seed, batch=batch, spacing=spacing,
                            grid=grid_timesteps(grid_spec, denoiser.schedule.T), tweedie_every=every if tweedie else 0)
    # a distilled bundle brings its own steps and eta; a bundle with its own grid, its grid
    request, grid = for_bundle(request, denoiser.distilled, denoiser.sampling)
    request.check(denoiser.schedule.T, denoiser.max_batch)
    check_memory(n, denoiser.sample_shape, request, denoiser.schedule.T)
    per_batch = min(batch or denoiser.max_batch, n)
    total = -(-n // per_batch) * request.nfe(denoiser.schedule.T)
    sampler = request.method
    with click.progressbar(length=total, label=f"{sampler} x{n}", hidden=quiet, show_pos=True) as bar:
        run = generate(denoiser, request, progress=bar.update)
    placed = f" grid={grid_spec}" if grid_spec else " grid=bundle" if grid is not None and not denoiser.distilled else ""
    generator = (f"edgediff {denoiser.bundle.manifest.get('edgediff')} {sampler}-{run.nfe}{placed} eta={request.eta} seed={seed} "
                 f"batch={per_batch} backend={denoiser.backend}")
    written: tuple = ()
    # side outputs first, the main output last: a failure never leaves samples without their plot
    if tweedie is not None and run.tweedie is not None:
        save_npz(tweedie, t=run.tweedie_t, x0_hat=run.tweedie)
        written += (tweedie,)
    if plot is not None:
        from edgediff.tools import plots

        dataset = (denoiser.bundle.manifest.get("data") or {}).get("dataset")
        plots.samples_figure(run.x, None, plot, title=f"{n} samples of {denoiser.bundle.root.name}, {sampler}-{run.nfe}",
                             dataset=dataset)
        written += (plot,)
    if fmt == "sigmf":
        from edgediff.tools.sigmf_io import write_sigmf

        written = tuple(write_sigmf(out, run.x, generator, f"edgediff samples from {bundle}", sample_rate)) + written
    else:
        save_npy(out, run.x)
        written = (out,) + written
    click.echo(f"{n} samples, {run.nfe} NFE each ({n * run.nfe} network calls in {run.batches} batches), "
               f"{run.seconds:.2f} s, {run.samples_per_s:.1f} samples/s on {denoiser.backend} ({denoiser.provider})")
    click.echo("wrote " + ", ".join(str(p) for p in written))


def check_memory(n: int, shape: tuple[int, ...], request, T: int) -> None:
    """Refuse up front a request whose samples (and trajectories) cannot fit in this machine's memory."""
    import math
    import os

    from edgediff.runtime.errors import InputError

    per_sample = 4 * math.prod(shape) * (1 + (request.nfe(T) // max(1, request.tweedie_every) + 1
                                              if request.tweedie_every else 0))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    limit = total // 2
    if n * per_sample > limit:
        raise InputError(f"--n {n}: the samples need {n * per_sample / 1e9:.1f} GB, more than half of this machine's "
                         f"{total / 1e9:.1f} GB: ask for at most {limit // per_sample} per run")
