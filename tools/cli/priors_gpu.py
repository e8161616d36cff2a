"""`edgediff priors` for a GPU session: `continue` (the prepared call: benchmark, stages, curves,
packing), `train-together` (several stages in one process), and around the call `carry` (what it
takes along) and `unpack` (what it brings back)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgediff.tools.cli.priors import priors


@priors.command("train-together")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def train_together_cmd(runs, device) -> None:
    """Resume prepared RUNS in one process, one step of each in turn, each on its own CUDA stream
    (their kernels can overlap where processes take turns); each run's log in RUN/train.log."""
    from edgediff.runtime.errors import InputError
    from edgediff.train.together import fit_together

    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError(f"runs {', '.join(names)}: two share a name; each run's log and result go by its name")
    for run in runs:
        if not (run / "config.json").is_file():
            raise InputError(f"{run}: no config.json: prepare the run first (edgediff train ... or priors continue)")
    results = fit_together(list(runs), device, log=click.echo)
    failed = sorted(n for n, r in results.items() if "error" in r)
    if failed:
        raise click.exceptions.Exit(1)


#: A dry run's stages train this long at most: it proves the plan, not the priors.
DRY_SECONDS = 5.0


@priors.command("continue")
@click.argument("names", nargs=-1)
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/gpu"), show_default=True,
              help="Where the stage runs are trained (earlier stages found here are continued).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for what travels back: parts and reports.")
@click.option("--seconds", type=click.FloatRange(min=1.0, max=3600.0), default=360.0, show_default=True,
              help="Training time budget of every stage (side by side; a stage stops at 1.2x at the latest).")
@click.option("--bench-seconds", type=click.FloatRange(min=0.0, max=600.0), default=8.0, show_default=True,
              help="Timed seconds per throughput variant first (0: no benchmark).")
@click.option("--study", "study", multiple=True,
              help="Also train a study variant (repeat): from scratch qpsk-w32, -w40, -w48, -w64, -w32-deep, -w32-attn2; "
                   "grown from a prior's newest weights, beside its stage: rf-qpsk-attn, rf-qpsk-fast-attn, rf-chirp-attn.")
@click.option("--curve-n", type=click.IntRange(16, 100_000), default=512, show_default=True, help="Frames per curve point.")
@click.option("--device", default="cuda", show_default=True)
@click.option("--together", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Train the stages in one process, a CUDA stream each (on), one process each (off), or as the "
                   "benchmark's four-models-at-once variant says (auto).")
@click.option("--channels-last", "channels_last", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Run the stages' convolutions channels-last (on), in torch's layout (off), or as the benchmark's "
                   "fast-compile-cl against fast-compile says (auto).")
@click.option("--dry-run", is_flag=True, help="The same plan at a toy size on the CPU: seconds per stage, tiny batches.")
def continue_cmd(names, runs, out, seconds, bench_seconds, study, curve_n, device, together, channels_last,
                 dry_run) -> None:
    """The prepared GPU session: benchmark, continue every shipped prior (NAMES: default all) from its
    newest weights side by side, measure their curves, pack the runs into OUT for the trip back."""
    import json

    from edgediff.runtime.atomic import write_json
    from edgediff.tools import priors_continue as pc
    from edgediff.tools import priors_pack
    from edgediff.tools.priors import summary_line

    priors_pack.refuse_earlier_parts(out)
    if dry_run:  # a toy size: seconds per stage, whatever the real call's budget
        device, curve_n, seconds = "cpu", min(curve_n, 16), min(seconds, DRY_SECONDS)
    out.mkdir(parents=True, exist_ok=True)
    stages = pc.plan(list(names) or list(pc.CONTINUED), runs, seconds, study=list(study), dry_run=dry_run)
    pc.prepare(stages)
    t0 = time.perf_counter()
    for st in stages:
        click.echo(f"{st.name}: stage {st.run} from {st.init or 'scratch'}, batch {st.config.train.batch}, "
                   f"lr {st.config.train.lr:.2e}, {seconds:.0f} s")
    report = {}
    if bench_seconds > 0:
        report = _bench(out / "bench-train.json", device, bench_seconds, dry_run)
        stages, why = pc.step_fallback(stages, report, pc.DRY["n_frames"] if dry_run else pc.FALLBACK_FRAMES)
        if why:
            click.echo(why)
            pc.rewrite(stages)
    if _decide(channels_last, lambda: pc.channels_last_pays(report)):
        stages = pc.with_channels_last(stages)
        pc.rewrite(stages)
    if _decide(together, lambda: pc.together_pays(report)):
        pc.launch_together(stages, device, out / "together.log", log=click.echo)
    else:
        pc.launch(stages, device, log=click.echo)
    pc.curves(stages, device, curve_n, points=2 if dry_run else 6, sample_steps=4 if dry_run else 50, log=click.echo)
    summary = {}
    for st in stages:
        path = st.run / "curve.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        if rows:
            click.echo(summary_line(st.name, rows))
        summary[st.name] = {"run": str(st.run), "init": st.init, "curve": rows[-1:] if rows else None}
    write_json(out / "summary.json", summary)
    parts = priors_pack.pack([st.run for st in stages], [out / "bench-train.json", out / "summary.json", out / "together.log"], out)
    click.echo(f"packed {len(stages)} runs into {', '.join(p.name for p in parts)} in {out} "
               f"({time.perf_counter() - t0:.0f} s since the plan)")


def _decide(choice: str, measured) -> bool:
    """on / off as asked; auto as the benchmark says (its reason printed)."""
    if choice != "auto":
        return choice == "on"
    yes, why = measured()
    click.echo(why)
    return yes


def _bench(json_out: Path, device: str, seconds: float, dry_run: bool) -> dict:
    from edgediff.runtime.atomic import write_json
    from edgediff.tools import bench_train as bt
    from edgediff.tools import priors as p
    from edgediff.tools import priors_continue as pc
    from edgediff.train.loop import resolve_device

    dev = resolve_device("cpu" if dry_run else device)
    cuda = dev.type == "cuda"
    # fast-compile at the stages' batch: its compilation is cached for the stages of the same U-Net; then
    # four models of it at once, each on its own stream: what several priors in one process would move
    # and the same compiled step with its convolutions channels-last: the stages take it where it pays
    batch = pc.GPU_STAGE["batch"]
    names = (("today:batch=8", "fast:batch=8", "fast-compile:batch=8,compile=off", "fast-compile-cl:batch=8,compile=off",
              "fast-compile-x4:batch=8,compile=off,copies=2") if dry_run else
             ("today", "fast", f"fast-compile:batch={batch}", f"fast-compile-cl:batch={batch}", "fast-compile-x4"))
    variants = [bt.parse_variant(v, cuda) for v in names]
    # a few steps of each under the profiler afterwards: where the device time goes (traces kept beside)
    report = bt.bench(variants, p.run_config(p.PriorRecipe("rf-qpsk")), dev, seconds=seconds, warmup=4 if dry_run else 10,
                      n_resident=256 if dry_run else 20000, profile=1 if dry_run else 5,
                      traces=json_out.parent / "profile", log=click.echo)
    write_json(json_out, report)
    return report


@priors.command("carry")
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/gpu"), show_default=True,
              help="Where the stage runs are.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/carry"), show_default=True,
              help="A new folder for the device call to carry.")
def carry_cmd(runs, out) -> None:
    """Before a GPU call: the newest stage run of each prior (config and weights only) into OUT, which
    the device call carries and continues with `make gpu-priors GPU_RUNS=OUT`."""
    from edgediff.tools import priors_continue as pc

    copied = pc.carry(runs, out)
    size = sum(f.stat().st_size for run in copied for f in run.iterdir()) / 2**20
    for run in copied:
        click.echo(f"carry {run}")
    click.echo(f"{len(copied)} runs, {size:.1f} MiB in {out}" if copied else f"no stage runs under {runs}: the call starts from the shipped priors")


@priors.command("unpack")
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs/gpu"), show_default=True)
@click.option("--replace", is_flag=True, help="Replace runs (and reports) of the same names from an earlier call, whole.")
def unpack_cmd(parts, runs, replace) -> None:
    """Restore the runs a GPU session packed (its runs.tar.partNN files) under RUNS; an earlier call's
    run of the same name is refused unless --replace."""
    from edgediff.tools.priors_pack import unpack

    for run in unpack(list(parts), runs, replace_existing=replace):
        click.echo(f"restored {run}")
