"""``edgediff priors``: train the shipped priors from their recipes, measure learning curves, export.

The recipes live in :mod:`edgediff.tools.priors`; ``make priors`` runs ``edgediff priors build``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click

from edgediff.tools.cli import cli


@cli.group()
def priors() -> None:
    """Train, measure and export the shipped priors (rf-qpsk, rf-chirp, rf-mix, rf-qpsk-fast, gmm2d)."""


@priors.command("train")
@click.argument("name")
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/priors"), show_default=True)
@click.option("--seconds", type=click.FloatRange(min=1.0), help="Time budget: fixes the step count after the warm-up.")
@click.option("--steps", type=click.IntRange(min=1), help="Step count (default: the recipe's).")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--frames", type=click.IntRange(min=16), help="Training frames generated (default: the recipe's).")
@click.option("--batch", type=click.IntRange(min=1), help="Batch size (default: the recipe's).")
@click.option("--amp", is_flag=True, help="bf16 autocast (CUDA only).")
@click.option("--quiet", is_flag=True)
def train_cmd(name, runs, seconds, steps, snapshot_every, device, frames, batch, amp, quiet) -> None:
    """Train recipe NAME into RUNS/NAME."""
    from dataclasses import replace

    from edgediff.tools import priors as p
    from edgediff.train.loop import fit

    r = p.recipe(name)
    r = replace(r, steps=steps or r.steps, n_frames=frames or r.n_frames, batch=batch or r.batch)
    summary = fit(p.run_config(r, max_seconds=seconds, snapshot_every=snapshot_every, amp=amp, runs=runs), runs / name,
                  device=device, progress=not quiet)
    click.echo(f"{name}: {summary['steps']} steps in {summary['seconds']:.0f} s, {summary['samples_per_s']:.0f} samples/s, "
               f"final loss {summary['final_loss'] if summary['final_loss'] is None else format(summary['final_loss'], '.4f')} "
               f"on {summary['device']}")


@priors.command("curve")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--n", type=click.IntRange(min=16), default=256, show_default=True, help="Frames per point.")
@click.option("--points", type=click.IntRange(min=1), default=12, show_default=True, help="Snapshots measured at most.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the curve here (default RUN/curve.json).")
def curve_cmd(run, n, points, device, json_out) -> None:
    """Sample every snapshot of RUN with the sample defaults and measure it (EVM, LSD, W1) against held-out frames."""
    from edgediff.tools import priors as p

    rows = p.curve(run, device=device, n=n, max_points=points, final_steps=(100, 250))
    for row in rows:
        row.update(p.loss_at(run, row["step"]))
    p.write_json(json_out or run / "curve.json", rows)
    for i in range(len(rows)):
        click.echo(p.summary_line(run.name, rows[: i + 1]))


@priors.command("study")
@click.argument("names", nargs=-1)
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/priors"), show_default=True)
@click.option("--seconds", type=click.FloatRange(min=1.0), required=True, help="Training time budget of each run.")
@click.option("--snapshot-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--n", type=click.IntRange(min=16), default=256, show_default=True, help="Frames per curve point.")
@click.option("--frames", type=click.IntRange(min=16), help="Training frames generated (default: each recipe's).")
@click.option("--batch", type=click.IntRange(min=1), help="Batch size (default: each recipe's).")
def study_cmd(names, runs, seconds, snapshot_every, device, n, frames, batch) -> None:
    """Train recipes NAMES side by side on one device (one process each), then measure their curves."""
    from edgediff.tools import priors as p

    names = names or tuple(p.STUDY) + ("rf-chirp", "rf-mix", "rf-qpsk-fast")
    for name in names:
        p.recipe(name)
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name in names:
        cmd = [sys.executable, "-m", "edgediff", "priors", "train", name, "--runs", str(runs), "--seconds", str(seconds),
               "--snapshot-every", str(snapshot_every), "--device", device, "--quiet"]
        if device.startswith("cuda"):
            cmd.append("--amp")
        cmd += ["--frames", str(frames)] if frames else []
        cmd += ["--batch", str(batch)] if batch else []
        procs[name] = subprocess.Popen(cmd, env=env, stdout=open(runs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
    start = time.perf_counter()
    for name, proc in procs.items():
        code = proc.wait()
        tail = (runs / f"{name}.log").read_text().strip().splitlines()[-1:]
        click.echo(f"{name}: exit {code} after {time.perf_counter() - start:.0f} s: {tail[0] if tail else ''}")
    for name in names:
        run = runs / name
        if not (run / "weights.safetensors").is_file():
            click.echo(f"{name}: no weights, skipped")
            continue
        try:
            rows = p.curve(run, device=device, n=n, final_steps=(100, 250))
        except Exception as exc:  # one broken run must not cost the others their curves
            click.echo(f"{name}: curve failed: {type(exc).__name__}: {exc}")
            continue
        for row in rows:
            row.update(p.loss_at(run, row["step"]))
        p.write_json(run / "curve.json", rows)
        for i in range(len(rows)):
            click.echo(p.summary_line(name, rows[: i + 1]))


@priors.command("build")
@click.argument("names", nargs=-1)
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/priors"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("priors"), show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="bf16 autocast (CUDA only), as the shipped GPU stages used.")
@click.option("--quiet", is_flag=True)
def build_cmd(names, runs, out, device, amp, quiet) -> None:
    """Train (what is missing) and export the shipped priors NAMES (default: all) into OUT/NAME.

    Hours per prior on 2 CPU cores, minutes on a GPU; runs already trained to their recipe's step
    count are kept, so an interrupted build resumes where it stopped."""
    from edgediff.tools import priors as p

    p.build(list(names) or [*p.SHIPPED, *p.DISTILLED], runs, out, device=device, amp=amp, progress=not quiet, log=click.echo)


@priors.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")
@click.option("--force", is_flag=True, help="Replace the PNG if it exists.")
def plot_cmd(runs, out, force) -> None:
    """EVM against training frames seen, from each RUN's curve.json (stages placed after their init)."""
    import json

    from edgediff.runtime.errors import BundleError
    from edgediff.tools import plots
    from edgediff.tools.cli.outputs import check_output
    from edgediff.train.config import RunConfig

    check_output("--out", out, force)
    curves, offsets, seen = {}, {}, {}
    for run in runs:
        path = run / "curve.json"
        if not path.is_file():
            raise BundleError(f"{path}: missing; measure the run first with `edgediff priors curve {run}`")
        config = RunConfig.load(run)
        rows = json.loads(path.read_text())
        for row in rows:
            row["samples_seen"] = row["step"] * config.train.batch
        curves[run.name] = rows
        seen[run.name] = config.train.steps * config.train.batch
        init = config.train.init_from
        if init:
            parent = Path(init).parent.name
            offsets[run.name] = offsets.get(parent, 0) + seen.get(parent, 0)
    offsets = {k: v / 1e6 for k, v in offsets.items()}
    click.echo(f"wrote {plots.study_curves(curves, out, offsets)}")
