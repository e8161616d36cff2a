"""``edgediff distill``: a few-step student of a trained run (progressive distillation)."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.types import SEED, count, positive


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--nfe", type=click.Choice(["4", "8"]), required=True, help="Steps of the student.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory of the student.")
@click.option("--start-steps", type=count(8, 4096), default=64, show_default=True,
              help="The teacher's DDIM steps at the first stage (NFE x a power of two).")
@click.option("--steps-per-stage", type=count(1), default=1500, show_default=True, help="Optimizer steps per halving.")
@click.option("--batch", type=count(1, 1 << 16), default=64, show_default=True)
@click.option("--lr", type=positive(1.0), default=1e-4, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--max-seconds", type=positive(1e7), help="Time budget, shared equally by the stages (stops a stage early).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def distill(run, nfe, out, start_steps, steps_per_stage, batch, lr, seed, max_seconds, device, quiet) -> None:
    """Distil RUN into a student that samples in --nfe deterministic DDIM steps (Salimans & Ho 2022);
    export it like any run: its bundle records the timesteps, and sample/verify/reconstruct use them."""
    from edgediff.train.distill import DistillConfig, distill as run_distill

    cfg = DistillConfig(nfe=int(nfe), start_steps=start_steps, steps_per_stage=steps_per_stage, batch=batch, lr=lr, seed=seed,
                        max_seconds=max_seconds)
    summary = run_distill(run, out, cfg, progress=not quiet, device=device)
    click.echo(f"distilled {run} into {out}: {' -> '.join(str(s) for s in [cfg.start_steps, *cfg.stages])} steps "
               f"in {summary['seconds']:.0f} s, "
               f"final loss {summary['final_loss']:.4g}; export it with `edgediff export onnx {out} --out BUNDLE`")
