"""``edgediff verify``: check an engine against the torch reference (stored and, where present, live)."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.types import SEED, count
from edgediff.tools.cli.options import engine_options, load_denoiser


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--steps", type=count(1), default=20, show_default=True, help="Steps of the end-to-end sampling check.")
@click.option("--n", "n", type=count(1, 4096), default=4, show_default=True, help="Samples in the end-to-end check.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@engine_options(self_test=False)  # its first check replays reference.npz: no self-test to skip
def verify(bundle, steps, n, seed, **engine) -> None:
    """Check BUNDLE's engine against reference.npz, and against the torch model where torch is installed.
    Exits 2 (one line on stderr) when a check is beyond tolerance."""
    from edgediff.runtime.errors import EdgediffError
    from edgediff.tools.verify import format_case, verify as run_verify

    # its first check replays reference.npz at a bound at least as tight as the load's self-test, and reports
    # what it found: the self-test would run the same batch once more (37 s of an ARM64 board's emulation)
    denoiser = load_denoiser(bundle, **engine, no_self_test=True)
    report = run_verify(denoiser, steps=steps, n=n, seed=seed, run_dir=engine.get("run_dir"))
    click.echo(f"verify {bundle} on {denoiser.backend} ({denoiser.provider}), tolerance {report.precision}")
    for case in report.cases:
        click.echo("  " + format_case(case))
    for note in report.notes:
        click.echo(f"  note: {note}")
    failed = [c["name"] for c in report.cases if not c["passed"]]
    if failed:
        raise EdgediffError(f"verify failed: {len(failed)} of {len(report.cases)} checks beyond tolerance "
                            f"({failed[0]}, ...); rebuild the engine or re-export the bundle")
    click.echo(f"passed: {len(report.cases)} checks")
