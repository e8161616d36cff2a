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
from edgediff.tools.cli.types import Finite


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
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (CUDA only). [on for CUDA]")
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
@click.option("--sample-steps", type=click.IntRange(1, 1000), default=50, show_default=True, help="DDIM steps per point.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the curve here (default RUN/curve.json).")
def curve_cmd(run, n, points, device, sample_steps, json_out) -> None:
    """Sample every snapshot of RUN with the sample defaults and measure it (EVM, LSD, W1) against held-out frames."""
    from edgediff.tools import priors as p

    finals = (100, 250) if sample_steps == 50 else ()
    rows = p.curve(run, device=device, n=n, steps=sample_steps, max_points=points, final_steps=finals)
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
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (CUDA only). [on for CUDA]")
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
    from edgediff.tools import plot_curves
    from edgediff.tools.cli.outputs import check_output
    from edgediff.train.config import RunConfig

    check_output("--out", out, force, suffix=".png")
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
    click.echo(f"wrote {plot_curves.study_curves(curves, out, offsets)}")


@priors.command("adopt")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("priors"), show_default=True, help="The shipped priors.")
@click.option("--n", type=click.IntRange(64, 100_000), default=512, show_default=True, help="Frames each side is measured on.")
@click.option("--atol", type=Finite(1e-7, 1e-2), help="The export's parity gate, absolute (recorded). [the export's: 1e-4]")
@click.option("--rtol", type=Finite(0.0, 1e-2), help="The parity gate, relative (recorded). [the export's: 1e-5]")
@click.option("--device", "device", help="Where the stage trained, in the ledger's words (\"H200, 270 s beside 4 runs\"). "
              "[from its summary: device, minutes, steps, batch, lr, start]")
@click.option("--dry-run", is_flag=True, help="Measure both and say which way it would go; change nothing.")
def adopt_cmd(runs, out, n, atol, rtol, device, dry_run) -> None:
    """Export each stage RUN, measure it against the shipped prior (sample default) and replace that
    prior when the stage is better; adopted stages go into priors/ledger.json. A gain within one draw
    (under 0.3 dB of EVM, 0.05 dB of LSD for rf-chirp, a point of rf-mix's score) must hold at sampler
    seeds 1 and 2 too, both measured again."""
    from edgediff.tools.priors_adopt import adopt

    for run in runs:
        adopt(run, out, n, log=click.echo, tolerance=(atol, rtol), device=device, dry_run=dry_run)


@priors.command("cost")
@click.argument("variants", nargs=-1)
@click.option("--json", "json_out", type=click.Path(path_type=Path), required=True, help="Write the costs here.")
@click.option("--rounds", type=click.IntRange(1, 100), default=5, show_default=True, help="Rounds of alternating timings.")
@click.option("--repeats", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Calls per variant, batch and round.")
@click.option("--force", is_flag=True, help="Replace the JSON if it exists.")
def cost_cmd(variants, json_out, rounds, repeats, force) -> None:
    """What each study variant (VARIANTS: default all) costs on this CPU: per-NFE latency (ONNX Runtime,
    batch 1 and 16, timed side by side), parameters, FLOPs and bundle megabytes."""
    from edgediff.runtime.atomic import write_json
    from edgediff.tools import study_cost as sc
    from edgediff.tools.cli.outputs import check_output

    check_output("--json", json_out, force, suffix=".json")
    report = sc.measure(list(variants) or None, rounds=rounds, repeats=repeats, log=click.echo)
    write_json(json_out, report)
    click.echo(f"wrote {json_out}")


@priors.command("cost-plot")
@click.option("--cost", "cost_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The JSON of `edgediff priors cost`.")
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/gpu"), show_default=True,
              help="Where the study runs are (their curve.json).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")
@click.option("--force", is_flag=True, help="Replace the PNG if it exists.")
def cost_plot_cmd(cost_path, runs, out, force) -> None:
    """Quality against latency: each study run's last EVM beside its variant's cost."""
    from edgediff.tools import plot_curves
    from edgediff.tools import study_cost as sc
    from edgediff.tools.cli.outputs import check_output

    check_output("--out", out, force, suffix=".png")
    cost = sc.read_cost(cost_path)
    rows = sc.quality_rows(cost, runs)
    for r in rows:
        click.echo(f"{r['name']}: EVM {r['evm_median_db']:.1f} dB after {r['frames_seen'] / 1e6:.1f} M frames; "
                   f"{sc.table_line(r['name'], r).strip()}")
    click.echo(f"wrote {plot_curves.quality_vs_latency(rows, cost['limits'], cost['variants'][cost['baseline']]['latency_ms'], out)}")


@priors.command("progress")
@click.option("--ledger", "ledger_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The ledger to read. [priors/ledger.json]")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the score-against-frames panels here (PNG).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the figures here.")
@click.option("--force", is_flag=True, help="Replace the PNG or JSON if it exists.")
def progress_cmd(ledger_path, plot, json_out, force) -> None:
    """Each shipped prior against its target: score against frames seen (the ledger's stages), the trend
    per doubling of frames, what it projects in frames and GPU hours, and the GPU and CPU time spent."""
    from edgediff.runtime.atomic import write_json
    from edgediff.tools import plot_curves
    from edgediff.tools import priors_progress as pg
    from edgediff.tools.cli.outputs import check_outputs
    from edgediff.tools.priors_continue import LEDGER, read_ledger

    check_outputs({"--plot": plot, "--json": json_out}, force=force)
    found = pg.progress(read_ledger(ledger_path or LEDGER))
    for line in pg.table(found):
        click.echo(line)
    if plot is not None:  # first: a missing matplotlib then leaves no JSON behind either
        click.echo(f"wrote {plot_curves.progress_curves(found, plot)}")
    if json_out is not None:
        write_json(json_out, pg.as_json(found))
        click.echo(f"wrote {json_out}")


@priors.command("figures")
@click.option("--prior", "names", multiple=True, help="Only the figures that read this shipped prior (repeat). [all]")
@click.option("--figure", "figure_names", multiple=True,
              help="Only the figure called this (repeat; --list names them), e.g. after a fix to its command. [all]")
@click.option("--stale", "stale_only", is_flag=True,
              help="Only the figures not yet measured with today's shipped priors (docs/bench/figures.json).")
@click.option("--list", "list_only", is_flag=True, help="Print the commands, their expected time and what they were "
                                                        "last measured with; run nothing.")
@click.option("--mark", is_flag=True, help="Record the chosen figures as measured with today's shipped priors (those "
                                           "of --prior only, when given): for figures run by hand; run nothing.")
def figures_cmd(names, figure_names, stale_only, list_only, mark) -> None:
    """Measure again what the README reports from the shipped priors (after `priors adopt`): each
    figure's own command, one after the other, writing into docs/; the prose is yours to update.
    Each figure measured is recorded with the priors it read, so --stale finds what is left."""
    from edgediff.runtime.errors import InputError
    from edgediff.tools import figures as fg

    if mark and list_only:
        raise InputError("--mark records and --list only prints: give one of them")
    chosen = fg.select(list(names), list(figure_names))
    why = fg.stale(chosen)
    if stale_only:
        chosen = [f for f in chosen if f.name in why]
    if mark:
        fg.mark(chosen, priors=list(names) or None)
        click.echo(f"recorded {len(chosen)} figures as measured with today's "
                   f"{', '.join(names) if names else 'shipped priors'} in {fg.RECORD}")
        return
    last = fg.last_seconds(chosen)
    took = (f" (the last runs here of {len(last)} of them: {sum(last.values()) / 60:.0f} min)" if last else "")
    click.echo(f"{len(chosen)} figures, about {sum(f.minutes for f in chosen):.0f} min on 2 CPU cores{took}"
               f"{'' if stale_only else f'; {sum(f.name in why for f in chosen)} stale'}")
    if list_only:
        for f in chosen:
            ran = f" (last run {last[f.name] / 60:.0f} min)" if f.name in last else ""
            click.echo(f"{f.name:>24}  {f.minutes:>4g} min{ran}  [{', '.join(f.priors)}] {f.section}: edgediff {' '.join(f.args)}")
            click.echo(f"{'':>24}  {'stale: ' + why[f.name] if f.name in why else 'current'}")
        return
    done = fg.run(chosen, log=click.echo)  # whole outputs in out/figures/NAME.log
    failed = [name for name, d in done.items() if d["exit"]]
    click.echo(f"{len(done) - len(failed)} of {len(done)} figures measured in {sum(d['seconds'] for d in done.values()) / 60:.0f} min"
               + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)
