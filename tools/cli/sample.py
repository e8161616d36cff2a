"""``edgediff sample``: draw samples from a bundle on any engine, write them atomically."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.options import engine_options, load_denoiser


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--n", "n", type=int, default=16, show_default=True, help="Number of samples.")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpmpp2m", "unipc"]), default="ddim", show_default=True,
              help="ddim (with --eta), ddpm, or the deterministic multistep solvers DPM-Solver++(2M) and UniPC.")
@click.option("--steps", type=int, help="Sampler steps (DDPM: all T; DDIM: 50; dpmpp2m/unipc: 15).")
@click.option("--eta", type=float, default=1.0, show_default=True,
              help="DDIM stochasticity: 1 is the DDPM posterior on the strided steps (robust to model error), "
                   "0 the deterministic sampler.")
@click.option("--spacing", type=click.Choice(["trailing", "leading", "linspace"]), default="trailing", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch", type=int, help="Samples per engine call (default: the engine's largest batch).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output file (.npy, or a SigMF base name).")
@click.option("--format", "fmt", type=click.Choice(["npy", "sigmf"]), default="npy", show_default=True)
@click.option("--sample-rate", type=float, default=1.0, show_default=True, help="SigMF core:sample_rate (Hz).")
@click.option("--tweedie", type=click.Path(path_type=Path), help="Also save Tweedie x0_hat along the trajectory (.npz).")
@click.option("--every", type=int, default=10, show_default=True, help="Keep x0_hat every K steps (with --tweedie).")
@click.option("--plot", type=click.Path(path_type=Path), help="Also draw the samples into this PNG.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def sample(bundle, n, sampler, steps, eta, spacing, seed, batch, out, fmt, sample_rate, tweedie, every, plot, quiet,
           **engine) -> None:
    """Sample BUNDLE: N frames in batches, in the training data's units, written atomically."""
    from edgediff.runtime.atomic import save_npy, save_npz
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.generate import SampleRequest, generate

    for path in (out, tweedie, plot):
        if path is not None and not path.parent.exists():
            raise InputError(f"output directory {path.parent} does not exist: create it first")
    request = SampleRequest(n=n, method=sampler, steps=steps, eta=eta, seed=seed, batch=batch, spacing=spacing,
                            tweedie_every=every if tweedie else 0)
    denoiser = load_denoiser(bundle, **engine)
    request.check(denoiser.schedule.T, denoiser.max_batch)
    per_batch = min(batch or denoiser.max_batch, n)
    total = -(-n // per_batch) * request.nfe(denoiser.schedule.T)
    with click.progressbar(length=total, label=f"{sampler} x{n}", hidden=quiet, show_pos=True) as bar:
        run = generate(denoiser, request, progress=bar.update)
    generator = (f"edgediff {denoiser.bundle.manifest.get('edgediff')} {sampler}-{run.nfe} eta={eta} seed={seed} "
                 f"batch={per_batch} backend={denoiser.backend}")
    if fmt == "sigmf":
        from edgediff.tools.sigmf_io import write_sigmf

        written = write_sigmf(out, run.x, generator, f"edgediff samples from {bundle}", sample_rate)
    else:
        save_npy(out, run.x)
        written = (out,)
    if tweedie is not None and run.tweedie is not None:
        save_npz(tweedie, t=run.tweedie_t, x0_hat=run.tweedie)
        written += (tweedie,)
    if plot is not None:
        from edgediff.tools import plots

        plots.samples_figure(run.x, None, plot, title=f"{n} samples, {sampler}-{run.nfe}")
        written += (plot,)
    click.echo(f"{n} samples, {run.nfe} NFE each ({n * run.nfe} network calls in {run.batches} batches), "
               f"{run.seconds:.2f} s, {run.samples_per_s:.1f} samples/s on {denoiser.backend} ({denoiser.provider})")
    click.echo("wrote " + ", ".join(str(p) for p in written))
