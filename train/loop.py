"""The training loop: DDPM loss, AdamW with warm-up and cosine decay, clipping, EMA, checkpoints.

Randomness is a pure function of (seed, step, rank): every step draws its batch indices, timesteps
and noise from ``numpy.random.default_rng([seed, step, rank])``. A resumed run therefore replays
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
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgediff.runtime.atomic import write_json, write_text
from edgediff.runtime.errors import InputError
from edgediff.train import checkpoint, datasets, distributed
from edgediff.train.config import RunConfig, current_versions
from edgediff.train.distributed import DistContext
from edgediff.train.models import build_model, count_parameters, fit_to_data
from edgediff.train.reference import q_sample, schedule_tensors

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("step", "loss", "lr", "samples_per_s")


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
        return _fit(config, out, resume, dev, ctx, progress)
    finally:
        distributed.teardown(ctx)


def _fit(config: RunConfig, out: Path, resume: bool, dev: torch.device, ctx: DistContext, progress: bool) -> dict[str, Any]:
    cfg = config.train
    data, norm = datasets.load(config.data)
    model_config = fit_to_data(config.model, tuple(data.shape[1:]))
    config = replace(config, model=model_config, normalisation=norm, versions=current_versions())
    if cfg.batch % ctx.world_size:
        raise InputError(f"--batch {cfg.batch} is not divisible by the {ctx.world_size} processes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(config.model).to(dev)  # validates the config before anything is written
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, rows = 0, []
    if resume:
        start, rows = _restore(out, model, ema, optimizer, dev)
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.local_rank] if dev.type == "cuda" else None)

    sched = schedule_tensors(config.schedule, torch.float32, dev)
    x_all = torch.from_numpy(data).to(dev)
    local_batch = cfg.batch // ctx.world_size
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and ctx.is_main), unit="step",
               desc=f"train {config.data.dataset or Path(str(config.data.path)).name}", dynamic_ncols=True,
               mininterval=0.2 if sys.stderr.isatty() else 10.0)
    window: list[float] = []
    t_start = t_window = time.perf_counter()
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step, ctx.rank])
        idx = torch.from_numpy(rng.integers(0, len(data), local_batch)).to(dev)
        t = torch.from_numpy(rng.integers(0, config.schedule.T, local_batch)).to(dev)
        noise = torch.from_numpy(rng.standard_normal((local_batch, *config.sample_shape), dtype=np.float32)).to(dev)
        # the DDPM loss: || eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2
        x_t = q_sample(sched, x_all[idx], t, noise)
        loss = torch.mean((net(x_t, t.to(torch.float32)) - noise) ** 2)
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        _update_ema(ema, model, ema_decay(step, cfg.ema))
        window.append(float(loss.detach()))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            rate = len(window) * cfg.batch / max(now - t_window, 1e-9)
            mean_loss = distributed.mean_across(ctx, float(np.mean(window)), dev)
            rows.append((done, mean_loss, lr, rate))
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            window, t_window = [], now
            if ctx.is_main:
                write_text(out / "loss.csv", _csv(rows))
        bar.update(1)
        if ctx.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _checkpoint(out, done, model, ema, optimizer, rows)
    bar.close()
    seconds = time.perf_counter() - t_start
    return _summarise(config, out, model, ema, rows, start, seconds, dev, ctx)


def _update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value, alpha=1 - decay)
            else:
                ema[name].copy_(value)


def _restore(out: Path, model: nn.Module, ema: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
             dev: torch.device) -> tuple[int, list[tuple]]:
    found = checkpoint.load_latest(out / "checkpoints")
    if found is None:
        log.warning("no intact checkpoint in %s: starting from step 0", out)
        return 0, []
    model.load_state_dict(found["model"])
    for k, v in found["ema"].items():
        ema[k].copy_(v.to(dev))
    optimizer.load_state_dict(found["optimizer"])
    step = int(found["state"]["step"])
    rows = [tuple(r) for r in found["state"].get("loss_rows", []) if r[0] <= step]
    log.info("resumed from %s (step %d)", found["path"], step)
    return step, rows


def _checkpoint(out: Path, step: int, model: nn.Module, ema: dict[str, torch.Tensor],
                optimizer: torch.optim.Optimizer, rows: list[tuple]) -> None:
    checkpoint.save_checkpoint(out / "checkpoints", step, model.state_dict(), ema, optimizer,
                               {"loss_rows": [list(r) for r in rows]})
    checkpoint.save_weights(out / "weights.safetensors", ema, {"kind": "ema", "step": str(step)})


def _csv(rows: list[tuple]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOSS_COLUMNS)
    for step, loss, lr, rate in rows:
        writer.writerow([step, f"{loss:.6f}", f"{lr:.6e}", f"{rate:.1f}"])
    return buf.getvalue()


def _summarise(config: RunConfig, out: Path, model: nn.Module, ema: dict[str, torch.Tensor], rows: list[tuple],
               start: int, seconds: float, dev: torch.device, ctx: DistContext) -> dict[str, Any]:
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
    }
    if config.data.dataset == "gmm2d" and ctx.is_main:
        from edgediff.train.evaluate import gmm_score_errors

        summary["score_rel_l2"] = gmm_score_errors(model, ema, config, dev)
    if ctx.is_main:
        write_json(out / "summary.json", summary)
    return summary
