"""``edgediff evaluate``: generated frames against held-out frames, judged by spectrum, envelope and symbols."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from edgediff.runtime.bundle import label
from edgediff.tools.cli import cli
from edgediff.tools.cli.outputs import check_outputs
from edgediff.tools.cli.types import SEED, count, non_negative
from edgediff.tools.cli.options import GRID_HELP, engine_options, grid_timesteps, load_denoiser


def reference_frames(denoiser, data: Path | None, n: int, held_out_seed: int | None = None) -> tuple[np.ndarray, str]:
    """Held-out frames and the dataset name they stand for: ``--data`` or the bundle's built-in dataset, drawn
    at ``held_out_seed`` (default: the data seed the bundle's run trained at)."""
    from edgediff.runtime.errors import InputError
    from edgediff.tools.arrays import load_array
    from edgediff.tools.evaluate import reference

    dataset = (denoiser.bundle.manifest.get("data") or {}).get("dataset")
    if data is not None and held_out_seed is not None:
        raise InputError("--held-out-seed draws the built-in held-out frames; --data gives your own: drop one of them")
    seed = _data_seed(denoiser, held_out_seed)
    if data is not None:
        ref = load_array(data, "--data")
        if ref.ndim != len(denoiser.sample_shape) + 1 or ref.shape[1:] != tuple(denoiser.sample_shape) or not np.isfinite(ref).all():
            raise InputError(f"--data {data}: shape {ref.shape}: expected finite frames (N, {', '.join(map(str, denoiser.sample_shape))})")
        return ref.astype(np.float32), dataset or "user"
    if dataset is None:
        raise InputError(f"{denoiser.bundle.root}: trained on the user's data (no built-in dataset): "
                         "pass --data FILE.npy with held-out frames (N, 2, L)")
    if dataset == "radar-rd":
        from edgediff.train.datasets import DataConfig, held_out

        return held_out(DataConfig(dataset=dataset, length=denoiser.sample_shape[1], seed=seed), n), dataset
    if len(denoiser.sample_shape) != 2 or denoiser.sample_shape[0] != 2:
        raise InputError(f"{denoiser.bundle.root}: samples of shape {denoiser.sample_shape} are not I/Q frames: "
                         "evaluate judges RF bundles (gmm2d is judged by `edgediff bench`)")
    return reference(dataset, n, denoiser.sample_shape[1], seed), dataset


def second_reference(denoiser, data: Path | None, dataset: str, n: int,
                     held_out_seed: int | None = None) -> np.ndarray | None:
    """N more held-out frames of a built-in I/Q dataset (the distances' floor), from the next data seed after
    the held-out frames'; none for ``--data``."""
    from edgediff.tools.evaluate import reference

    if data is not None or len(denoiser.sample_shape) != 2:
        return None
    return reference(dataset, n, denoiser.sample_shape[1], _data_seed(denoiser, held_out_seed) + 1)


def flow_levels(flow_t: tuple[int, ...], denoise_curve: bool, dataset: str, T: int) -> tuple[int, ...]:
    """The levels the chirp (rf-mix) or duty (rf-chirp) flow samples down from: ``--flow-t``'s (sorted),
    or the default seven."""
    from edgediff.runtime.errors import InputError
    from edgediff.tools.chirp_flow import FLOW_LEVELS

    if not flow_t:
        return FLOW_LEVELS
    if not denoise_curve or dataset not in ("rf-mix", "rf-chirp"):
        raise InputError("--flow-t sets the levels of --denoise-curve's chirp flow (rf-mix) or pulse flow (rf-chirp): "
                         "give --denoise-curve on one of those, or drop --flow-t")
    bad = [t for t in flow_t if not 1 <= t < T]
    if bad:
        raise InputError(f"--flow-t {bad[0]}: expected a timestep in 1..{T - 1} (the bundle's schedule has T = {T})")
    return tuple(sorted(set(flow_t)))


def _data_seed(denoiser, held_out_seed: int | None = None) -> int:
    """The data seed the held-out frames are drawn at: ``--held-out-seed``'s, else the bundle's run's."""
    if held_out_seed is not None:
        return held_out_seed
    return int((denoiser.bundle.manifest.get("data") or {}).get("seed", 0))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=16, max=100_000), default=512, show_default=True,
              help="Generated and held-out frames.")
@click.option("--data", type=click.Path(path_type=Path), help="Held-out frames (.npy, N x 2 x L) instead of the built-in set.")
@click.option("--evm/--no-evm", default=None, help="Blind EVM (default: for PSK datasets).")
@click.option("--psk", type=click.Choice(["rf-qpsk", "rf-qpsk-fast"]), help="Receiver format for --data frames.")
@click.option("--sampler", type=click.Choice(["ddim", "dpmpp2m", "sde-dpmpp2m", "unipc"]),
              help="The sampler (as in `sample`). [the bundle's own, if its grid names one; else ddim; ddim when --eta is given]")
@click.option("--steps", type=count(1), help="Sampler steps (default: the sampler's, DDIM 50).")
@click.option("--eta", type=non_negative(10.0), help="DDIM: [1; a distilled bundle: its own]")
@click.option("--spacing", type=click.Choice(["trailing", "leading", "linspace"]),
              help="Where DDIM's steps land (as in `sample`). [the bundle's own grid, if it carries one; else trailing]")
@click.option("--grid", "grid_spec", help=GRID_HELP)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--held-out-seed", type=SEED,
              help="Draw the built-in held-out frames at this data seed, e.g. the shipped prior's, to judge a stage "
                   "on the same frames as the prior it would replace (as `priors adopt` does). [the data seed "
                   "the bundle's run trained at]")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--denoise-curve", is_flag=True,
              help="Also noise the held-out frames to 8 levels, denoise each in one call and sample each down "
                   "from its level, judged by the blind receiver (PSK): tells the network's denoising from the "
                   "sampling path's errors; on rf-mix also the chirp share sampled down from 7 levels up to pure noise; on "
                   "rf-chirp only the pulses' duty sampled down from those 7 levels.")
@click.option("--flow-t", "flow_t", type=int, multiple=True,
              help="With --denoise-curve on rf-mix or rf-chirp: a level (timestep) the held-out frames are sampled "
                   "down from; repeat for several. [500 700 800 850 900 950 999]")
@click.option("--force", is_flag=True, help="Replace the JSON file if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@engine_options
def evaluate(bundle, n, data, evm, psk, sampler, steps, eta, spacing, grid_spec, seed, held_out_seed, json_out,
             denoise_curve, flow_t, force, quiet, **engine) -> None:
    """Sample N frames from BUNDLE and compare them with N held-out frames: mean-PSD log-spectral
    distance, envelope Wasserstein-1, blind EVM (PSK) and chirp IF linearity (chirps); radar maps:
    targets per map, sidelobe level, noise floor and clutter share under a CA-CFAR detector."""
    from edgediff.runtime.atomic import write_json
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.generate import SampleRequest, for_bundle, generate, grid_label
    from edgediff.tools.evaluate import PSK_DATASETS, describe, evaluate_frames

    check_outputs({"--json": json_out}, inputs={"--data": data}, force=force)
    denoiser = load_denoiser(bundle, **engine)
    ref, dataset = reference_frames(denoiser, data, n, held_out_seed)
    if psk is not None:
        dataset = psk if data is not None else dataset
    if evm and dataset not in PSK_DATASETS:
        raise InputError(f"--evm: dataset {dataset!r} is not a PSK dataset (EVM needs one of "
                         f"{', '.join(PSK_DATASETS)}; for your own frames give --psk FORMAT)")
    if denoise_curve and dataset not in (*PSK_DATASETS, "rf-chirp"):
        raise InputError(f"--denoise-curve: dataset {dataset!r} is neither a PSK dataset (judged by the blind receiver: "
                         f"one of {', '.join(PSK_DATASETS)}; for your own frames give --psk FORMAT) nor rf-chirp "
                         "(judged by its pulses)")
    levels = flow_levels(flow_t, denoise_curve, dataset, denoiser.schedule.T)
    request, grid = for_bundle(SampleRequest(n=n, method=sampler, steps=steps, eta=eta, seed=seed, spacing=spacing,
                                             grid=grid_timesteps(grid_spec, denoiser.schedule.T)),
                               denoiser.distilled, denoiser.sampling)
    request.check(denoiser.schedule.T, denoiser.max_batch)
    total = -(-n // min(denoiser.max_batch, n)) * request.nfe(denoiser.schedule.T)
    with click.progressbar(length=total, label=f"sampling {n}", hidden=quiet, show_pos=True) as bar:
        run = generate(denoiser, request, progress=bar.update)
    if len(denoiser.sample_shape) == 3:  # range-Doppler maps: judged by a detector
        from edgediff.tools.evaluate_maps import describe_maps, evaluate_maps

        report, lines = evaluate_maps(run.x, ref), describe_maps
    else:
        report = evaluate_frames(run.x, ref, dataset, evm=evm is not False,
                                 second=second_reference(denoiser, data, dataset, n, held_out_seed))
        lines = describe
    report["sampler"] = {"method": request.method, "steps": run.nfe, "eta": request.eta, "seed": seed,
                         "backend": denoiser.backend}
    if grid_spec:
        report["sampler"]["grid"] = grid_spec
    elif (grid is not None or request.method == "ddim") and not denoiser.distilled:
        report["sampler"]["grid"] = grid_label(request, grid)
    report["bundle"] = label(denoiser.bundle.root)
    if held_out_seed is not None:
        report["held_out_seed"] = held_out_seed
    if grid_spec:
        click.echo(f"{request.method}-{run.nfe} on the given grid ({grid_spec})")
    elif grid is not None and not denoiser.distilled:
        name = "DDIM" if request.method == "ddim" else request.method
        click.echo(f"{name}-{run.nfe} on the bundle's own grid ({denoiser.sampling.get('spec') or 'its timesteps'}; "
                   "--spacing trailing for the uniform one)")
    for line in lines(report):
        click.echo(line)
    if denoise_curve and dataset == "rf-chirp":
        from edgediff.tools.chirp_flow import describe_duty_flow, duty_flow

        report["duty_flow"] = duty_flow(denoiser, ref, levels, seed=seed)
        for line in describe_duty_flow(report["duty_flow"], report["held_out"]["pulse_duty_median"]):
            click.echo(line)
    elif denoise_curve:
        from edgediff.tools.denoise_curve import denoise_curve as curve, describe_curve

        report["denoise_curve"] = curve(denoiser, ref, dataset, seed=seed)
        for line in describe_curve(report["denoise_curve"]):
            click.echo(line)
        if dataset == "rf-mix":
            from edgediff.tools.chirp_flow import chirp_flow, describe_flow

            report["chirp_flow"] = chirp_flow(denoiser, ref, levels, seed=seed)
            for line in describe_flow(report["chirp_flow"], report["held_out"]["chirp_share"]):
                click.echo(line)
    if json_out is not None:
        write_json(json_out, report)
        click.echo(f"wrote {json_out}")
