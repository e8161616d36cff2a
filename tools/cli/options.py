"""Options shared by the commands that run a bundle, and the one place they become a denoiser."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

import click

log = logging.getLogger(__name__)


def _decorated(f: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    """``f`` with click options applied so that the first listed shows first in --help."""
    for option in reversed(options):
        f = option(f)
    return f


def engine_options(f: Callable[..., Any] | None = None, *, self_test: bool = True) -> Any:
    """The engine options, as ``@engine_options``; ``@engine_options(self_test=False)`` leaves out
    ``--no-self-test`` for a command that never self-tests on load (verify: its first check is that replay)."""
    if f is None:
        return functools.partial(engine_options, self_test=self_test)
    options = [
        click.option("--backend", type=click.Choice(["auto", "ort", "trt", "torch"]), default="auto", show_default=True,
                     help="Engine: TensorRT plan, ONNX Runtime, or the torch reference."),
        click.option("--device", help="ort: cpu|cuda|tensorrt; trt/torch: cuda or cuda:N (default: auto)."),
        click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
                     help="ONNX Runtime CPU threads (0: min(2, cores))."),
        click.option("--no-spin", is_flag=True, help="Turn off ONNX Runtime thread spinning (less CPU, more latency)."),
        click.option("--cuda-graph", is_flag=True, help="TensorRT: capture the engine call in a CUDA graph."),
        click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Training run for the torch backend."),
        *([click.option("--no-self-test", is_flag=True,
                        help="Skip running reference.npz through the engine on load (only for a bundle you trust).")]
          if self_test else []),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
                     help="The ONNX model ONNX Runtime runs: fp32, or the bundle's fp16 / int8 model (edgediff export int8)."),
    ]
    return _decorated(f, options)


def load_denoiser(bundle: Path, *, backend: str, device: str | None, threads: int, no_spin: bool, cuda_graph: bool,
                  run_dir: Path | None, no_self_test: bool = False, precision: str = "fp32") -> Any:
    from edgediff.runtime.backends import load

    denoiser = load(bundle, backend=backend, device=device, threads=threads, spinning=not no_spin,
                    cuda_graph=cuda_graph, run_dir=run_dir, self_test=not no_self_test, precision=precision)
    log.info("using %s: %s", denoiser.provider, denoiser.reason)
    return denoiser


def walk_options(method: str, start: str, travel_use: str, restart_use: str) -> Callable[..., Any]:
    """--travel L:R and --restart T,... for DDNM+ (``method`` names it in the help), with where each paid."""
    from edgediff.tools.cli.types import RESTART, TRAVEL

    return lambda f: _decorated(f, [
        click.option("--travel", type=TRAVEL, metavar="L:R",
                     help=f"{method}: DDNM+'s time-travel trick: after every L steps noise back and walk them again, "
                          f"R times (about 1 + R times the calls{travel_use})."),
        click.option("--restart", type=RESTART, metavar="T[,T...]",
                     help=f"{method}: then one round per timestep T, --samples passes (walked with --travel where "
                          f"given) restarted at T from {start} so far, their mean the next ({restart_use})."),
    ])


def stream_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Raw streams (--y - / --out -) and the frames per engine call of recordings and streams."""
    from edgediff.runtime.recording import STREAM_TYPES
    from edgediff.tools.cli.types import count, positive

    options = [
        click.option("--datatype", type=click.Choice(STREAM_TYPES),
                     help="Raw streams: interleaved I/Q sample type (SigMF names). [cf32_le; to stdout: the input's]"),
        click.option("--sample-rate", type=positive(1e15),
                     help="Raw input: sample rate in Hz (for the real-time factor and SigMF output)."),
        click.option("--scale", type=positive(1e30),
                     help="Raw input: the stream's RMS per real component (input units); default: a running estimate."),
        click.option("--batch", type=count(1, 1 << 16), help="Recordings and streams: frames per engine call [up to 64; "
                     "fewer: lower latency]."),
    ]
    return _decorated(f, options)


GRID_HELP = ("Place the sampler's steps yourself, in `export grid`'s form HI-LO:K,... (K steps from t HI down "
             "toward LO): e.g. --sampler sde-dpmpp2m --grid 999-400:6,400-100:7,100-0:7. [the bundle's own grid, "
             "where it is for the sampler asked, else --spacing]")


def grid_timesteps(spec: str | None, T: int) -> tuple[int, ...] | None:
    """``--grid SPEC`` as the bundle's timesteps (one-line errors from ``runtime.grids``), or None."""
    from edgediff.runtime.grids import from_spec

    return None if spec is None else tuple(int(v) for v in from_spec(spec, T))
