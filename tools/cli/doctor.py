"""``edgediff doctor``: what this machine offers the runtime, and what each bundle can run on here."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgediff.tools.cli import cli


@cli.command()
@click.argument("bundles", required=False, type=click.Path(path_type=Path))
def doctor(bundles) -> None:
    """Print Python, numpy, ONNX Runtime and its providers, TensorRT, CUDA, the GPU and whether this is
    a Jetson; with BUNDLES (a bundle, a folder of bundles or a shipped prior's name), what each can run on
    here and why not.
    Always exits 0: a machine without a GPU is a valid answer."""
    from edgediff.tools.doctor import bundle_support, environment, find_bundles

    env = environment()
    click.echo(f"python      {env['python']} on {env['machine']} ({env['system']})")
    click.echo(f"jetson      {env['jetson'] or 'no'}")
    click.echo(f"cpu         {os.cpu_count()} cores; {', '.join(env['cpu_features']) or 'no feature of note'}")
    for line in env["cpu_advice"]:
        click.echo(f"            {line}")
    click.echo(f"numpy       {env['numpy']}")
    if env.get("onnxruntime"):
        click.echo(f"onnxruntime {env['onnxruntime']}: {', '.join(env['onnxruntime_providers'])}")
    else:
        click.echo("onnxruntime not installed (pip install 'edgediff[ort]')")
    click.echo(f"tensorrt    {env['tensorrt'] or env.get('tensorrt_reason')}")
    cuda = env.get("cuda")
    if cuda:
        click.echo(f"cuda        driver {cuda['driver']}, runtime {cuda['runtime']}; GPU {cuda['gpu']} "
                   f"({cuda['compute_capability']}, {cuda['memory_gb']:.1f} GB)")
    else:
        click.echo(f"cuda        {env.get('cuda_reason')}")
    if bundles is None:
        return
    from edgediff.runtime.bundle import resolve
    from edgediff.runtime.errors import EdgediffError

    try:  # a shipped prior's short name (`edgediff doctor rf-qpsk`), as every other command takes it
        bundles = resolve(bundles)
    except EdgediffError as exc:
        click.echo(f"no bundle: {exc}")
        return
    found = find_bundles(bundles)
    if not found:
        click.echo(f"no bundle under {bundles}")
    for path in found:
        report = bundle_support(path, env)
        if "error" in report:
            click.echo(f"bundle {path}: unusable: {report['error']}")
            continue
        click.echo(f"bundle {path} ({report['schedule']}, frames {tuple(report['sample_shape'])}):")
        for engine, status in report["engines"].items():
            click.echo(f"  {'ok ' if status == 'ok' else 'no '} {engine}" + ("" if status == "ok" else f": {status}"))
