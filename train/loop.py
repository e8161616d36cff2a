"""The training loop: DDPM loss, AdamW with warm-up and cosine decay, clipping, EMA, checkpoints.

Randomness is a pure function of (seed, step, rank): every step draws its batch indices, timesteps,
noise and augmentation from a torch generator on the training device seeded from
``numpy.random.SeedSequence([seed, step, rank])``. A resumed run therefore replays
exactly the steps an uninterrupted one would have taken, and reaches the same weights.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Generator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgediff.runtime.atomic import write_json, write_text
from edgediff.runtime.errors import BundleError, InputError
from edgediff.train import checkpoint, datasets, distributed
from edgediff.train.config import RunConfig, current_versions
from edgediff.train.distributed import DistContext
from edgediff.train.init_weights import load_init
from edgediff.train.layers import use_channels_last
from edgediff.train.models import build_model, count_parameters, fit_to_data
from edgediff.train.reference import schedule_tensors
from edgediff.train.rf_torch import FrameGenerator
from edgediff.train.step import ResidentFrames, TrainStep, configure_backends, make_optimizer, resolve as resolve_step

log = logging.getLogger(__name__)

#: With a time budget, the step count is fixed after this many steps (or the warm-up, if longer) ...
PLAN_AFTER = 50
WARM_STEPS = 10
#: ... and a run that still overruns the budget by this factor stops where it is.
OVERRUN = 1.2
LOSS_COLUMNS = ("step", "loss", "lr", "samples_per_s", "eps_mse")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but torch sees no CUDA device: use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise InputError(f"device {name!r} is unknown: expected auto, cpu or cuda")
    return torch.device(name)


def learning_rate(step: int, cfg: Any) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def ema_decay(step: int, target: float) -> float:
    """EMA decay with warm-up, so short runs are not dominated by the random initialisation."""
    return min(target, (1 + step) / (10 + step))


def prepare_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.json").is_file():
            raise InputError(f"--resume: {out} holds no run (no config.json); drop --resume to start a new one")
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: pass --resume to continue it, or choose a new --out")


def fit(
    config: RunConfig | None, out: Path, *, resume: bool = False, device: str = "auto",
    ctx: DistContext = DistContext(), progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the run in ``out``; returns the summary also written to ``summary.json``.

    With ``resume`` the run's own config.json is used and ``config`` may be None.
    """
    out = Path(out)
    dev = resolve_device(device)
    if ctx.is_main:  # other ranks would race rank 0's first write
        prepare_run_dir(out, resume)
    if resume:
        config = RunConfig.load(out)
    elif config is None:
        raise InputError("a new run needs a config")
    distributed.setup(ctx, dev)
    try:
        summary = _fit(config, out, resume, dev, ctx, progress)
    except BaseException:
        distributed.teardown(ctx, finished=False)
        raise
    distributed.teardown(ctx)
    return summary


def _fit(config: RunConfig, out: Path, resume: bool, dev: torch.device, ctx: DistContext, progress: bool) -> dict[str, Any]:
    steps = fit_steps(config, out, resume, dev, ctx, progress)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def fit_steps(config: RunConfig, out: Path, resume: bool, dev: torch.device, ctx: DistContext = DistContext(),
              progress: bool = False) -> Generator[int, None, dict[str, Any]]:
    """The run as a generator: sets up at the first ``next``, yields the step number after every
    optimizer step, returns the summary. Whoever drives it decides what runs between two steps and on
    which CUDA stream (:mod:`edgediff.train.together` interleaves several runs); :func:`fit` drives
    one to the end."""
    data, norm = datasets.load(config.data)
    model_config = fit_to_data(config.model, tuple(data.shape[1:]))
    train_cfg, options = resolve_step(config.train, config.data, dev, ctx.enabled)
    config = replace(config, model=model_config, normalisation=norm, versions=current_versions(), train=train_cfg)
    cfg = config.train
    if cfg.batch % ctx.world_size:
        raise InputError(f"--batch {cfg.batch} is not divisible by the {ctx.world_size} processes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(config.model).to(dev)  # validates the config before anything is written
        if cfg.init_from:  # a later stage: start from an earlier run's (EMA) weights, or a bundle's
            config = load_init(model, cfg.init_from, config)
    if config.normalisation != norm:  # the units the starting weights learnt win: rescale the resident set to them
        data = (data * np.float32(norm.scale / config.normalisation.scale)).astype(np.float32)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, options, dev)
    start, rows = 0, []
    if resume:
        start, rows = _restore(out, model, ema, optimizer, dev)
    if options.channels_last and not use_channels_last(model):  # before compiling: the layout is part of the program
        log.info("channels_last: this network has no 1D convolutions, it trains as before")
    net: nn.Module = torch.compile(model) if options.compile else model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.local_rank] if dev.type == "cuda" else None)

    configure_backends(dev)
    local_batch = cfg.batch // ctx.world_size
    train_step = TrainStep(net, model, optimizer, ema, schedule_tensors(config.schedule, torch.float32, dev),
                                frame_source(config, data, local_batch, dev), config, local_batch, dev, options,
                                tuple(data.shape[1:]))
    del data
    generator = torch.Generator(device=dev)
    plan_at = max(cfg.warmup, PLAN_AFTER)  # where a time budget becomes a step count
    planning = bool(cfg.max_seconds) and start <= plan_at  # the step count is not known yet
    bar = tqdm(total=None if planning else cfg.steps, initial=start, disable=not (progress and ctx.is_main), unit="step",
               desc=f"train {config.data.dataset or Path(str(config.data.path)).name}", dynamic_ncols=True,
               mininterval=0.2 if sys.stderr.isatty() else 10.0)
    log.info("training on %s: %s frames, %s steps", dev, cfg.frames, options.describe())
    t_start = t_window = time.perf_counter()
    step_no, t_warm, window = start, None, 0
    while step_no < cfg.steps:
        now = time.perf_counter()
        elapsed = now - t_start
        if step_no == start + WARM_STEPS:
            _sync(dev)
            t_warm = now = time.perf_counter()  # speed is measured from here: the first steps pay for kernel selection
        if cfg.max_seconds and step_no == plan_at and t_warm is not None:
            # a time budget becomes a step count once the speed is known; from here on the run is
            # exactly the run with --steps N (the warm-up so far did not depend on N)
            _sync(dev)
            now = time.perf_counter()
            elapsed = now - t_start
            rate = distributed.mean_across(ctx, (step_no - start - WARM_STEPS) / max(now - t_warm, 1e-9), dev)
            cfg = replace(cfg, steps=int(min(cfg.steps, step_no + 1 + rate * max(0.0, cfg.max_seconds - elapsed))))
            config = replace(config, train=cfg)
            train_step.cfg = cfg
            bar.total = cfg.steps
            if ctx.is_main:
                write_json(out / "config.json", config.to_dict())
        if cfg.max_seconds and elapsed >= OVERRUN * cfg.max_seconds:
            break
        # every draw of this step comes from (seed, step, rank): a resumed run replays it exactly
        generator.manual_seed(step_seed(cfg.seed, step_no, ctx.rank))
        lr = learning_rate(step_no, cfg)
        train_step(generator, lr, ema_decay(step_no, cfg.ema))
        window += 1
        step_no += 1
        if step_no % cfg.log_every == 0 or step_no == cfg.steps:
            means = train_step.take_metrics()  # reads the device: the only sync of a logging window
            now = time.perf_counter()
            rate = window * cfg.batch / max(now - t_window, 1e-9)
            mean_loss = distributed.mean_across(ctx, means[0], dev)
            mean_eps = distributed.mean_across(ctx, means[1], dev)
            rows.append((step_no, mean_loss, lr, rate, mean_eps))
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            window, t_window = 0, now
            if ctx.is_main:
                write_text(out / "loss.csv", _csv(rows))
        bar.update(1)
        if ctx.is_main and cfg.snapshot_every and step_no % cfg.snapshot_every == 0:
            (out / "snapshots").mkdir(exist_ok=True)
            checkpoint.save_weights(out / "snapshots" / f"step_{step_no:08d}.safetensors", ema,
                                    {"kind": "ema", "step": str(step_no)})
        if ctx.is_main and (step_no % cfg.checkpoint_every == 0 or step_no == cfg.steps):
            _checkpoint(out, step_no, model, ema, optimizer, rows)
        yield step_no
    bar.close()
    _sync(dev)
    seconds = time.perf_counter() - t_start
    if step_no < cfg.steps:  # ran past the time budget's safety margin: the run ends where it got to
        log.warning("time budget overrun: stopped at step %d of %d", step_no, cfg.steps)
        config = replace(config, train=replace(cfg, steps=step_no))
        if ctx.is_main:
            write_json(out / "config.json", config.to_dict())
            _checkpoint(out, step_no, model, ema, optimizer, rows)
    program = {"options": options.describe(), "frames": cfg.frames, "cuda_graph": train_step.graph is not None}
    return _summarise(config, out, model, ema, rows, start, seconds, dev, ctx, program)


def _sync(dev: torch.device) -> None:
    """Wait for the device: host clocks measure GPU work only after this."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def frame_source(config: RunConfig, data: np.ndarray, batch: int, dev: torch.device) -> ResidentFrames | FrameGenerator:
    """Where a step's clean frames come from: the resident set on the device, or the generator there."""
    if config.train.frames == "generated":
        return FrameGenerator(str(config.data.dataset), batch, config.data.length, config.normalisation.scale, dev)
    return ResidentFrames(torch.from_numpy(data).to(dev), batch)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _restore(out: Path, model: nn.Module, ema: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             dev: torch.device) -> tuple[int, list[tuple]]:
    """Load the newest checkpoint that is intact and fits this run's model; start over only if there is none."""
    found_any = False
    for found in checkpoint.intact(out / "checkpoints"):
        found_any = True
        try:
            model.load_state_dict(found["model"])
            ema_loaded = {k: v.to(dev) for k, v in found["ema"].items()}
            if ema_loaded.keys() != ema.keys() or any(ema_loaded[k].shape != ema[k].shape for k in ema):
                raise ValueError("EMA weights of another model")
            saved = found["optimizer"]
            # the checkpoint's numbers, this run's kernels: fused/capturable/foreach and the lr's type stay ours
            keep = ("fused", "capturable", "foreach", "lr")
            saved["param_groups"] = [{**g, **{k: live[k] for k in keep if k in live}}
                                     for g, live in zip(saved["param_groups"], optimizer.param_groups)]
            optimizer.load_state_dict(saved)
        except (RuntimeError, ValueError, KeyError) as exc:
            log.warning("checkpoint %s does not fit this run's model (%s); trying an older one", found["path"].name,
                        str(exc).splitlines()[0][:160])
            continue
        for k, v in ema_loaded.items():
            ema[k].copy_(v)
        step = int(found["state"]["step"])
        rows = [tuple(r) for r in found["state"].get("loss_rows", []) if r[0] <= step]
        log.info("resumed from %s (step %d)", found["path"], step)
        return step, rows
    if found_any:
        raise BundleError(f"{out}/checkpoints: no checkpoint fits the model in config.json; restore config.json or "
                          "start a new run")
    log.warning("no intact checkpoint in %s: starting from step 0", out)
    return 0, []


def _checkpoint(out: Path, step: int, model: nn.Module, ema: dict[str, torch.Tensor],
                optimizer: torch.optim.Optimizer, rows: list[tuple]) -> None:
    checkpoint.save_checkpoint(out / "checkpoints", step, model.state_dict(), ema, optimizer,
                               {"loss_rows": [list(r) for r in rows]})
    checkpoint.save_weights(out / "weights.safetensors", ema, {"kind": "ema", "step": str(step)})


def _csv(rows: list[tuple]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOSS_COLUMNS)
    for step, loss, lr, rate, *rest in rows:
        eps_mse = f"{rest[0]:.6f}" if rest else ""
        writer.writerow([step, f"{loss:.6f}", f"{lr:.6e}", f"{rate:.1f}", eps_mse])
    return buf.getvalue()


def _summarise(config: RunConfig, out: Path, model: nn.Module, ema: dict[str, torch.Tensor], rows: list[tuple],
               start: int, seconds: float, dev: torch.device, ctx: DistContext, program: dict[str, Any]) -> dict[str, Any]:
    steps_run = config.train.steps - start
    tail = [r[1] for r in rows[-max(1, len(rows) // 10):]]
    digests = distributed.gather_digests(ctx, distributed.weights_digest(model.state_dict()), dev)
    summary: dict[str, Any] = {
        "steps": config.train.steps,
        "steps_this_session": steps_run,
        "seconds": round(seconds, 2),
        "samples_per_s": round(steps_run * config.train.batch / max(seconds, 1e-9), 1),
        "final_loss": float(np.mean(tail)) if tail else None,
        "parameters": count_parameters(model),
        "device": str(dev),
        "processes": ctx.world_size,
        "ranks_identical": len(set(digests)) == 1,
        "weights_digest": digests[0],
        "step_program": program,
    }
    if config.data.dataset == "gmm2d" and ctx.is_main:
        from edgediff.train.evaluate import gmm_score_errors

        summary["score_rel_l2"] = gmm_score_errors(model, ema, config, dev)
    if ctx.is_main:
        write_json(out / "summary.json", summary)
    return summary
