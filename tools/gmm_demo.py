"""Sample the project's 2D Gaussian mixture with its exact denoiser, DDPM-1000 against DDIM-50.

A check of the runtime with no network in the way: the mode shares of the samples should match the
mixture weights. Run ``python -m edgediff.tools.gmm_demo``.
"""

from __future__ import annotations

import time

import click
import numpy as np

from edgediff.runtime import GMM2D, GaussianMixtureDenoiser, NoiseSchedule, sample


@click.command()
@click.option("--n", default=20000, show_default=True, help="Samples per sampler.")
@click.option("--seed", default=0, show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True)
def main(n: int, seed: int, schedule: str) -> None:
    sched = NoiseSchedule.linear() if schedule == "linear" else NoiseSchedule.cosine()
    gmm = GaussianMixtureDenoiser.from_spec(sched, GMM2D)
    click.echo(f"mixture weights      {np.array2string(gmm.weights, precision=3)}")
    for method, steps in (("ddpm", None), ("ddim", 50)):
        start = time.perf_counter()
        res = sample(gmm, sched, (n, 2), method=method, steps=steps, rng=np.random.default_rng(seed))
        seconds = time.perf_counter() - start
        shares = gmm.mode_shares(res.x)
        label = f"{method}-{res.nfe}"
        click.echo(
            f"{label:<9} shares  {np.array2string(shares, precision=3)}  "
            f"max |share - weight| {np.abs(shares - gmm.weights).max():.4f}  ({seconds:.1f} s, {res.nfe} NFE)"
        )


if __name__ == "__main__":
    main()
