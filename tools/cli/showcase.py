"""``edgediff showcase``: the shipped priors at work on held-out frames, against LMMSE (end of ``make demo``)."""

from __future__ import annotations

from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.types import count


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="Folder for reconstruction.png and separation.png.")
@click.option("--frames", type=count(2, 1000), default=16, show_default=True, help="Held-out frames per case.")
@click.option("--steps", type=count(1, 1000), default=100, show_default=True, help="Diffusion steps (alpha-RGS: twice).")
@click.option("--force", is_flag=True, help="Replace the two figures if they exist.")
def showcase(out, frames, steps, force) -> None:
    """Fill 50 % lost QPSK samples and pull QPSK from under a chirp 6 dB stronger with the shipped priors,
    each against LMMSE and judged by a receiver: one line and one constellation figure per case."""
    from edgediff.runtime.errors import InputError
    from edgediff.tools import showcase as sc
    from edgediff.tools.cli.outputs import check_outputs

    if not out.is_dir():
        raise InputError(f"--out {out}: no such folder: create it first")
    figures = {"reconstruction": out / "reconstruction.png", "separation": out / "separation.png"}
    check_outputs({f"--out ({p.name})": p for p in figures.values()}, force=force)
    rec = sc.reconstruction(frames, steps)
    sc.figure(rec, figures["reconstruction"], "50 % of the samples lost: blind receiver on the reconstructions")
    sep = sc.separation(frames, -6.0, steps)
    sc.figure(sep, figures["separation"], "QPSK under a chirp 6 dB stronger: blind receiver on the SOI estimates")
    click.echo(sc.reconstruction_line(rec))
    click.echo(sc.separation_line(sep))
    click.echo(f"wrote {figures['reconstruction']}, {figures['separation']}")
