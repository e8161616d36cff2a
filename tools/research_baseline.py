"""The usual way against ours, in one run: a research-repository torch eager loop vs edgediff on ORT.

    python -m edgediff.tools.research_baseline BUNDLE [--repeats 3] [--run DIR]

Both sample the same network (the bundle's exporting run, ``--run``, or where neither is here the bundle's
own model.onnx read back, as ``edgediff bench`` does) with DDPM-T and DDIM-50 at batch 1; the
torch loop is :func:`edgediff.train.reference.sample`, tensors and model calls all in torch eager.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="The torch network's weights (as in `bench`).")
def main(bundle: Path, repeats: int, run_dir: Path | None) -> None:
    from edgediff.runtime import load
    from edgediff.tools import bench
    ort = load(bundle, backend="ort")
    weights, note = bench.torch_weights(bundle, run_dir)
    if note:
        click.echo(note)
    torch_d = load(bundle, backend="torch", run_dir=weights)
    T = ort.schedule.T
    click.echo(f"machine: {bench.machine()}")
    for method, steps in (("ddpm", None), ("ddim", 50)):
        label = f"{method}-{steps or T}"
        n = 1 if steps is None else repeats
        ours = bench.end_to_end(ort, 1, method, steps, n)["median"]
        theirs = bench.research_loop(torch_d, method, steps, 1, n)["median"]
        click.echo(f"{label}: torch eager research loop {theirs:.3f} s/sample, edgediff on onnxruntime "
                   f"{ours:.3f} s/sample: {theirs / ours:.2f}x faster")


if __name__ == "__main__":
    main()
