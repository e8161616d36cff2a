"""``edgediff plot ...``: figures that show what the theory says, one PNG per subcommand."""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgediff.tools.cli import cli
from edgediff.tools.arrays import load_array
from edgediff.tools.cli.types import SEED, CommaList, count, positive, within

def OUT(f: Any) -> Any:
    """--out PNG and --force for a plot command; the output is checked before any work starts."""

    @functools.wraps(f)
    def wrapper(*args: Any, force: bool, **kwargs: Any) -> Any:
        from edgediff.tools.cli.outputs import check_output

        check_output("--out", kwargs["out"], force, suffix=".png")
        return f(*args, **kwargs)

    wrapper = click.option("--force", is_flag=True, help="Replace the PNG if it exists.")(wrapper)
    return click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")(wrapper)


@cli.group()
def plot() -> None:
    """Draw schedules, the forward process, score fields, samples, trajectories and loss curves."""


def _schedule(kind: str, T: int) -> Any:
    from edgediff.runtime import NoiseSchedule

    return NoiseSchedule.linear(T=T) if kind == "linear" else NoiseSchedule.cosine(T=T)


def _learned(bundle: Path | None, run: Path | None) -> tuple[Any, Any]:
    """A denoiser-protocol callable and its schedule, from a bundle (ONNX Runtime) or a run (torch)."""
    if bundle is not None:
        from edgediff.runtime import load

        d = load(bundle, backend="ort")
        return d, d.schedule
    if run is not None:
        from edgediff.train.run import load_run
        from edgediff.train.torch_engine import TorchEngine

        config, model = load_run(run)
        engine = TorchEngine(model)
        return (lambda x, t: engine(x, np.asarray(t, dtype=np.float32))), config.schedule
    return None, None


@plot.command("score-field")
@OUT
@click.option("--bundle", type=click.Path(path_type=Path), help="A gmm2d bundle: learned score beside the exact one.")
@click.option("--run", type=click.Path(path_type=Path), help="A gmm2d run (torch) instead of a bundle.")
@click.option("--sigma", "sigmas", type=positive(1e6), multiple=True, default=(0.3, 3.0), show_default=True,
              help="Noise levels sqrt((1 - abar) / abar) to draw.")
@click.option("--schedule", "kind", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True)
def score_field(out, bundle, run, sigmas, kind) -> None:
    """Score of the 2D Gaussian mixture as arrows at several noise levels."""
    from edgediff.tools import plots

    learned, schedule = _learned(bundle, run)
    click.echo(f"wrote {plots.score_field(schedule or _schedule(kind, 1000), tuple(sigmas), out, learned)}")


@plot.command("forward")
@OUT
@click.option("--dataset", type=click.Choice(["rf-qpsk", "rf-chirp", "rf-mix"]), default="rf-qpsk", show_default=True)
@click.option("--length", type=count(8, 1 << 16), default=256, show_default=True)
@click.option("--t", "ts", type=CommaList(count(0, 100_000)), default="0,50,150,300,600,999", show_default=True,
              help="Comma-separated timesteps, each in 0..T-1.")
@click.option("--T", "T", type=count(2, 100_000), default=1000, show_default=True)
def forward(out, dataset, length, ts, T) -> None:
    """An RF frame corrupted by the forward process, linear and cosine schedules side by side."""
    from edgediff.train.datasets import builtin, fit_normalisation
    from edgediff.tools import plots

    frames = builtin(dataset, 64, length, seed=0)
    frame = frames[0] / fit_normalisation(frames, "rms").scale
    within("--t", ts, 0, T - 1, f"the timesteps of a {T}-step schedule")
    steps = tuple(ts)
    named = {"linear": _schedule("linear", T), "cosine": _schedule("cosine", T)}
    click.echo(f"wrote {plots.forward_process(frame.astype(np.float64), named, steps, out)}")


@plot.command("schedule")
@OUT
@click.option("--T", "T", type=count(2, 100_000), default=1000, show_default=True)
def schedule_cmd(out, T) -> None:
    """abar_t, SNR and beta_t for the linear and cosine schedules."""
    from edgediff.tools import plots

    click.echo(f"wrote {plots.schedules({'linear': _schedule('linear', T), 'cosine': _schedule('cosine', T)}, out)}")


@plot.command("samples")
@OUT
@click.option("--samples", type=click.Path(path_type=Path), help="Generated samples (.npy).")
@click.option("--bundle", type=click.Path(path_type=Path), help="Sample this bundle instead (DDIM).")
@click.option("--n", type=count(1, 10_000), default=64, show_default=True)
@click.option("--steps", type=count(1), default=50, show_default=True)
@click.option("--dataset", type=click.Choice(["gmm2d", "rf-qpsk", "rf-qpsk-fast", "rf-chirp", "rf-mix"]),
              help="Training frames to compare with, and the receiver's view (default: the bundle's dataset).")
def samples_cmd(out, samples, bundle, n, steps, dataset) -> None:
    """Generated against training frames: an I/Q trace, the receiver's view (the blind constellation and
    its EVM for QPSK, the instantaneous frequency for chirps) and the power spectral density."""
    from edgediff.runtime.errors import InputError
    from edgediff.train.datasets import builtin
    from edgediff.tools import plots

    if samples is None and bundle is None:
        raise InputError("give --samples FILE.npy or --bundle DIR")
    if samples is not None:
        x = load_array(samples, "--samples", ndim=(2, 3))
        if x.ndim == 3 and x.shape[1] != 2:
            raise InputError(f"--samples {samples}: shape {x.shape}: expected I/Q frames (N, 2, L) or points (N, 2)")
        if x.ndim == 2 and x.shape[1] != 2:
            raise InputError(f"--samples {samples}: shape {x.shape}: expected points (N, 2) or I/Q frames (N, 2, L)")
    else:
        from edgediff.runtime import load
        from edgediff.runtime.generate import SampleRequest, generate

        d = load(bundle, backend="ort")
        x = generate(d, SampleRequest(n=n, steps=steps)).x
        dataset = dataset or d.bundle.manifest.get("data", {}).get("dataset")
    reference = builtin(dataset, len(x), x.shape[-1] if x.ndim == 3 else 0, seed=12345) if dataset else None
    click.echo(f"wrote {plots.samples_figure(x, reference, out, title=f'{len(x)} generated frames vs training', dataset=dataset)}")


@plot.command("trajectory")
@OUT
@click.option("--tweedie", type=click.Path(path_type=Path), help="From `edgediff sample --tweedie`.")
@click.option("--bundle", type=click.Path(path_type=Path), help="Sample this bundle instead (DDIM).")
@click.option("--steps", type=count(1), default=50, show_default=True)
@click.option("--every", type=count(1), default=10, show_default=True)
def trajectory_cmd(out, tweedie, bundle, steps, every) -> None:
    """Tweedie x0_hat along the reverse process."""
    from edgediff.runtime.errors import InputError
    from edgediff.tools import plots

    if tweedie is not None:
        ts, x0 = _read_tweedie(tweedie)
    elif bundle is not None:
        from edgediff.runtime import load
        from edgediff.runtime.generate import SampleRequest, generate

        d = load(bundle, backend="ort")
        run = generate(d, SampleRequest(n=64 if len(d.sample_shape) == 1 else 1, steps=steps, tweedie_every=every))
        ts, x0 = run.tweedie_t, run.tweedie
    else:
        raise InputError("give --tweedie FILE.npz or --bundle DIR")
    click.echo(f"wrote {plots.trajectory(ts, x0, out)}")


def _read_tweedie(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """t (S,) and x0_hat (S, N, ...) from an `edgediff sample --tweedie` file."""
    import zipfile

    from edgediff.runtime.errors import InputError
    from edgediff.tools.arrays import check_array

    if not path.is_file():
        raise InputError(f"--tweedie {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            ts, x0 = np.asarray(data["t"]), np.asarray(data["x0_hat"])
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        raise InputError(f"--tweedie {path}: not a trajectory from `edgediff sample --tweedie` ({type(exc).__name__})") from None
    check_array(ts, f"--tweedie {path} (t)", ndim=(1,))
    check_array(x0, f"--tweedie {path} (x0_hat)", ndim=(3, 4))
    if len(ts) != len(x0):
        raise InputError(f"--tweedie {path}: {len(ts)} timesteps for {len(x0)} trajectory points")
    return ts, x0


@plot.command("loss")
@click.argument("run", type=click.Path(path_type=Path))
@OUT
def loss_cmd(run, out) -> None:
    """The training loss curve from RUN/loss.csv."""
    from edgediff.runtime.errors import BundleError
    from edgediff.tools import plots

    path = Path(run) / "loss.csv"
    if not path.is_file():
        raise BundleError(f"{path}: missing; is {run} a training run?")
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        steps = np.array([int(r["step"]) for r in rows])
        losses = np.array([float(r["loss"]) for r in rows])
    except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a loss log of edgediff train ({type(exc).__name__}); is {run} a training run?") from None
    if len(rows) == 0 or not np.isfinite(losses).all():
        raise BundleError(f"{path}: holds no finite loss rows yet; train longer or check the run")
    click.echo(f"wrote {plots.loss_curve(steps, losses, out, title=f'training loss, {run}')}")


@plot.command("constellation")
@click.argument("bundle", type=click.Path(path_type=Path))
@OUT
@click.option("--n", "n", type=count(1, 10_000), default=64, show_default=True, help="Frames per panel.")
@click.option("--samples", type=click.Path(path_type=Path), help="Generated frames (.npy) instead of sampling BUNDLE.")
@click.option("--data", type=click.Path(path_type=Path), help="Held-out frames (.npy) instead of the built-in set.")
@click.option("--psk", type=click.Choice(["rf-qpsk", "rf-qpsk-fast"]), help="Receiver format (default: the dataset's).")
@click.option("--seed", type=SEED, default=0, show_default=True)
def constellation(bundle, out, n, samples, data, psk, seed) -> None:
    """Blindly demodulated constellations of generated and held-out frames, side by side."""
    from edgediff.runtime import load
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.generate import SampleRequest, generate
    from edgediff.runtime.receivers import blind_receive
    from edgediff.tools import plots
    from edgediff.tools.cli.evaluate import reference_frames
    from edgediff.tools.arrays import load_array
    from edgediff.tools.evaluate import PSK_DATASETS, psk_format
    from edgediff.train import rf

    denoiser = load(bundle, backend="ort")
    ref, dataset = reference_frames(denoiser, data, n)
    fmt_name = psk or dataset
    if fmt_name not in PSK_DATASETS:
        raise InputError(f"dataset {dataset!r} is not PSK: a constellation needs one of {', '.join(PSK_DATASETS)} "
                         "(give --psk FORMAT for your own frames)")
    if samples is not None:
        gen = load_array(samples, "--samples")
        if gen.ndim != 3 or gen.shape[1:] != tuple(denoiser.sample_shape) or not np.isfinite(gen).all():
            raise InputError(f"--samples {samples}: shape {gen.shape}: expected finite frames (N, 2, L) of this bundle")
        gen = gen[:n]
    else:
        gen = generate(denoiser, SampleRequest(n=n, seed=seed)).x
    fmt = psk_format(fmt_name)
    panels = []
    for label, frames in (("generated", gen), ("held-out", ref)):
        res = blind_receive(rf.from_iq(frames).astype(np.complex128), fmt)
        panels.append((f"{label} ({len(frames)} frames)", res.symbols, res.evm_db))
    click.echo(f"wrote {plots.constellation_figure(panels, out, title=f'{denoiser.bundle.root.name}: blind receiver')}")
