"""``edgediff train``: fit the epsilon network on a built-in dataset or the user's recordings."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgediff.tools.cli import cli
from edgediff.tools.cli.types import SEED, CommaList, Finite, count, positive
from edgediff.train.datasets import BUILTINS

#: The step ceiling of a run that --max-seconds bounds and --steps does not.
UNTIL_THE_BUDGET = 1_000_000_000

#: Per-dataset defaults, used where an option is not given on the command line.
DEFAULTS = {
    "points": {"model": "mlp", "steps": 4000, "batch": 512, "lr": 2e-3, "normalise": "none", "schedule": "linear",
               "prediction": "eps", "loss_weight": "none", "augment": "none"},
    # the recipe the priors study chose (README): v prediction, min-SNR-5 weighting, cosine schedule,
    # a random carrier phase per draw (RF captures carry an arbitrary phase)
    "signals": {"model": "unet1d", "steps": 2000, "batch": 32, "lr": 2e-3, "normalise": "rms", "schedule": "cosine",
                "prediction": "v", "loss_weight": "min-snr", "augment": "phase"},
    # range-Doppler maps (radar-rd): the signals' recipe on a 2D U-Net, 32 x 32 cells by default; no phase
    # rotation (a map's I/Q pair is a complex cell, rotating it is a valid augmentation too, but kept off)
    "images": {"model": "unet2d", "steps": 2000, "batch": 32, "lr": 2e-3, "normalise": "rms", "schedule": "cosine",
               "prediction": "v", "loss_weight": "min-snr", "augment": "none"},
}
#: On a GPU a batch of 32 leaves the chip idle: signals default to the priors' batch there (same lr).
CUDA_SIGNAL_BATCH = 512


@cli.command()
@click.option("--dataset", type=click.Choice(BUILTINS), help="A built-in dataset (default rf-qpsk).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), help="Your .npy/.npz array or SigMF recording.")
@click.option("--sigmf-frame", type=count(8, 1 << 20), help="Frame length L cut from a SigMF recording (also the built-in L). [256]")
@click.option("--hop", type=count(1, 1 << 20), help="Hop between SigMF frames (default: L, no overlap).")
@click.option("--n", "n_frames", type=count(16, 10_000_000), default=20000, show_default=True, help="Built-in frames to generate.")
@click.option("--model", type=click.Choice(["unet1d", "unet2d", "mlp"]),
              help="Network (default: unet1d for signals, unet2d for radar maps, mlp for points).")
@click.option("--width", type=count(1, 4096), help="U-Net base width or MLP width. [32 / 256]")
@click.option("--attn-levels", type=CommaList(count(0, 7), unique=True),
              help="U-Net levels (0 = full length) with attention after every residual block, e.g. 1,2; the "
                   "lowest level's middle attention is always there. With --init-from a run without them, the "
                   "network is grown (the new attention starts as the identity). [none]")
@click.option("--schedule", type=click.Choice(["linear", "cosine"]), help="Noise schedule. [cosine signals / linear points]")
@click.option("--prediction", type=click.Choice(["eps", "v"]), help="Training target (exported as eps). [v / eps]")
@click.option("--loss-weight", type=click.Choice(["none", "min-snr"]), help="Per-timestep weights. [min-snr / none]")
@click.option("--augment", type=click.Choice(["none", "phase"]), help="Random carrier phase per draw (I/Q). [phase / none]")
@click.option("--T", "T", type=count(2, 100_000), default=1000, show_default=True, help="Diffusion steps.")
@click.option("--steps", type=count(1), help="Optimizer steps; with --max-seconds, at most this many. "
                                             "[2000 signals / 4000 points; with --max-seconds, as many as fit]")
@click.option("--batch", type=count(1, 1 << 20), help="Global batch size. [32 signals / 512 points]")
@click.option("--lr", type=positive(10.0), help="Peak learning rate. [2e-3]")
@click.option("--ema", type=Finite(0.0, 1.0, max_open=True), default=0.999, show_default=True, help="EMA decay of the exported weights.")
@click.option("--normalise", type=click.Choice(["rms", "none"]), help="Scale data to unit RMS. [rms signals / none points]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--checkpoint-every", type=count(1), default=250, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to create.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest intact checkpoint.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--init-from", type=click.Path(path_type=Path),
              help="Start from these weights: a run directory, its .safetensors, or a bundle / shipped prior (fine-tuning).")
@click.option("--max-seconds", type=positive(1e7),
              help="Training time budget: fixes the step count after the warm-up (the learning rate anneals over it).")
@click.option("--frames", type=click.Choice(["auto", "resident", "generated"]), default="auto", show_default=True,
              help="Built-in data made on the device each step (generated) or a set held there (resident); auto: generated on CUDA.")
@click.option("--graphs/--no-graphs", default=None, help="Capture the step as one CUDA graph. [on for CUDA]")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast. [on for CUDA; off on the CPU, where it pays with AMX-BF16 (about 1.6x)]")
@click.option("--fused/--no-fused", default=None, help="Fused AdamW kernels. [on for CUDA]")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (minutes of compilation first).")
@click.option("--channels-last", is_flag=True,
              help="Run the U-Net's 1D convolutions as channels-last 2D ones (cuDNN's bf16 layout; bench-train compares).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(dataset, data_path, sigmf_frame, hop, n_frames, model, width, attn_levels, schedule, prediction, loss_weight,
          augment, T, steps, batch, lr, ema, normalise, seed, checkpoint_every, out, resume, device, init_from, max_seconds, frames,
          graphs, amp, fused, compile_, channels_last, quiet) -> None:
    """Fit the epsilon network with the DDPM loss; writes config.json, weights.safetensors (EMA),
    checkpoints/ and loss.csv into --out. Runs under `torchrun --nproc_per_node=N` too.

    On a CUDA device the step runs as one CUDA graph over frames generated on the device (built-in
    sets), with bf16 autocast and fused AdamW, and signals default to batch 512."""
    from edgediff.runtime.errors import InputError
    from edgediff.train.distributed import DistContext
    from edgediff.train.evaluate import describe_errors
    from edgediff.train.loop import fit
    from edgediff.train.together import closing_line

    ctx = DistContext.from_env(os.environ)
    if dataset and data_path:
        raise InputError("--dataset and --data were both given: choose a built-in dataset or your file")
    step_options = (init_from, max_seconds, graphs, amp, fused, attn_levels)
    if resume and (any(v is not None for v in step_options) or compile_ or channels_last):
        raise InputError("--resume continues the run as configured: drop --init-from, --max-seconds, --attn-levels "
                         "and the step options")
    if max_seconds is not None and steps is None:
        steps = UNTIL_THE_BUDGET  # the time budget alone decides how many steps: fit plans them after the warm-up
    config = None if resume else build_config(
        dataset or (None if data_path else "rf-qpsk"), data_path, sigmf_frame, hop, n_frames, model, width,
        schedule, T, steps, batch, lr, ema, normalise, seed, checkpoint_every, prediction, loss_weight, augment,
        cuda=_cuda_requested(device), attn_levels=attn_levels)
    if config is not None:
        config = with_speed_options(config, init_from, max_seconds, frames, graphs, amp, fused, compile_, channels_last)
    summary = fit(config, out, resume=resume, device=device, ctx=ctx, progress=not quiet)
    if not ctx.is_main:
        return
    click.echo(closing_line(summary, out))
    if "score_rel_l2" in summary:
        click.echo(f"score error vs exact mixture (relative L2): {describe_errors(summary['score_rel_l2'])}")


def _cuda_requested(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def with_speed_options(config, init_from, max_seconds, frames, graphs, amp, fused, compile_, channels_last=False):
    """The run config with the options that decide how (not what) the run trains."""
    from dataclasses import replace

    from edgediff.runtime.bundle import SHIPPED_NAME, resolve

    if init_from is not None:
        source = Path(init_from)
        if not source.exists() and SHIPPED_NAME.match(str(init_from)):
            source = resolve(str(init_from))  # a shipped prior by its short name
        if source.is_dir() and (source / "weights.safetensors").is_file():
            source = source / "weights.safetensors"  # a run directory: its EMA weights
        init_from = str(source)
    return replace(config, train=replace(config.train, init_from=init_from, max_seconds=max_seconds, frames=frames,
                                         graphs=graphs, amp=amp, fused=fused, compile=compile_,
                                         channels_last=channels_last))


def build_config(dataset, data_path, frame, hop, n_frames, model, width, schedule, T, steps, batch, lr, ema,
                 normalise, seed, checkpoint_every, prediction=None, loss_weight=None, augment=None, cuda=False,
                 attn_levels=None):
    """Turn options into the typed run config (the only place where options become dataclasses)."""
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.schedule import NoiseSchedule
    from edgediff.train.config import RunConfig, TrainConfig
    from edgediff.train.datasets import DataConfig
    from edgediff.train.models import MLPConfig, UNet1DConfig
    from edgediff.train.unet2d import UNet2DConfig

    points = dataset == "gmm2d" or (model == "mlp")
    images = dataset == "radar-rd" or model == "unet2d"
    d = DEFAULTS["points" if points else "images" if images else "signals"]

    def pick(value, key):
        if value is None and key == "batch" and cuda and not points:
            return CUDA_SIGNAL_BATCH
        return d[key] if value is None else value

    model = pick(model, "model")
    levels = tuple(attn_levels or ())
    if model == "unet1d":
        model_config = UNet1DConfig(base_width=32 if width is None else width, attn_levels=levels)
    elif model == "unet2d":
        model_config = UNet2DConfig(base_width=32 if width is None else width, attn_levels=levels)
    elif levels:
        raise InputError("--attn-levels is for the U-Nets, and this run trains the MLP: drop it, "
                         "or choose --model unet1d")
    else:
        model_config = MLPConfig(width=256 if width is None else width)
    return RunConfig(
        model=model_config,
        schedule=NoiseSchedule.linear(T=T) if pick(schedule, "schedule") == "linear" else NoiseSchedule.cosine(T=T),
        data=DataConfig(dataset=dataset, path=str(data_path) if data_path else None, n=n_frames,
                        length=(32 if images else 256) if frame is None else frame, hop=hop, seed=seed,
                        normalise=pick(normalise, "normalise")),
        train=TrainConfig(steps=pick(steps, "steps"), batch=pick(batch, "batch"), lr=pick(lr, "lr"), ema=ema,
                          seed=seed, checkpoint_every=checkpoint_every, prediction=pick(prediction, "prediction"),
                          loss_weight=pick(loss_weight, "loss_weight"),
                          # user files may not be I/Q with an arbitrary phase: rotate them only when asked
                          augment=augment or ("none" if data_path else d["augment"])),
    )
