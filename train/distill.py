"""Progressive distillation (Salimans & Ho 2022): a student that takes one DDIM step where its teacher
took two, halved stage by stage down to 4 or 8 steps.

Why this method: it needs only the teacher's own deterministic DDIM (eta = 0) steps, each stage is
plain regression (no new loss to tune, unlike consistency distillation's distance and boundary
conditions), and the student keeps the teacher's network and its ``x_t, t -> eps`` interface, so it
exports, verifies and runs like any bundle.

One stage, from 2N teacher steps to N student steps (trailing grids: the student's grid is every
second point of the teacher's, ending at t = -1, where abar = 1):

1. x0 from the training data, t = grid_N[i], z_t = alpha_t x0 + sigma_t eps;
2. two teacher DDIM steps z_t -> z_t' -> z_t'' (t' = grid_2N[2i + 1], t'' = grid_N[i + 1]);
3. the target x~ that takes z_t to z_t'' in one DDIM step:
   x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
   (x~ = z_t'' itself at the last step, where sigma_t'' = 0);
4. loss = max(SNR_t, 1) ||x0_hat_student(z_t) - x~||^2 ("truncated SNR" weighting), with the student's
   x0_hat from its eps by Tweedie; AdamW, EMA; the EMA student teaches the next stage.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgediff.runtime.atomic import write_json, write_text
from edgediff.runtime.errors import InputError
from edgediff.runtime.sampling import timesteps
from edgediff.train import checkpoint, datasets
from edgediff.train.run import load_run

log = logging.getLogger(__name__)

NFE_CHOICES = (4, 8)


@dataclass(frozen=True)
class DistillConfig:
    nfe: int = 4
    start_steps: int = 64  # the original teacher's DDIM steps; halved until nfe
    steps_per_stage: int = 1500
    batch: int = 64
    lr: float = 1e-4
    ema: float = 0.995
    seed: int = 0
    max_seconds: float | None = None  # a time budget, shared equally by the stages

    def __post_init__(self) -> None:
        if self.nfe not in NFE_CHOICES:
            raise InputError(f"--nfe {self.nfe}: expected one of {', '.join(map(str, NFE_CHOICES))}")
        ratio = self.start_steps / self.nfe
        if self.start_steps <= self.nfe or ratio != 2 ** round(math.log2(ratio)):
            raise InputError(f"--start-steps {self.start_steps}: expected nfe x a power of two (e.g. 64)")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"--max-seconds {self.max_seconds}: expected a positive number of seconds")
        if self.steps_per_stage < 1 or self.batch < 1 or not self.lr > 0 or not 0 <= self.ema < 1:
            raise InputError("distillation settings out of range: steps, batch >= 1, lr > 0, ema in [0, 1)")

    @property
    def stages(self) -> list[int]:
        """Student step counts, one per stage (64 -> [32, 16, 8, 4] for nfe 4)."""
        out, n = [], self.start_steps // 2
        while n >= self.nfe:
            out.append(n)
            n //= 2
        return out


def _ddim(model: nn.Module, z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, abar1: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step per sample z_t -> z_t_next; ``abar1`` is abar with a leading 1 so that
    ``abar1[t + 1]`` is abar_t and t = -1 (the clean end of a trailing grid) gives abar = 1."""
    shape = (-1, *[1] * (z.ndim - 1))
    a_t, a_n = abar1[t + 1].reshape(shape), abar1[t_next + 1].reshape(shape)
    eps = model(z, t.to(torch.float32))
    x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps


def distill(teacher_run: Path, out: Path, cfg: DistillConfig = DistillConfig(), progress: bool = True,
            device: str = "cpu") -> dict[str, Any]:
    """Distil ``teacher_run`` into ``out`` (a run directory whose config records the student's grid)."""
    from edgediff.train.loop import resolve_device

    dev = resolve_device(device)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: choose a new --out")
    config, teacher = load_run(teacher_run, dev)  # an eps network, whatever the run was trained on
    if config.distilled:
        raise InputError(f"{teacher_run} is already distilled ({config.distilled['nfe']} steps): distil its teacher instead")
    data, _ = datasets.load(config.data)
    x_all = torch.from_numpy(data).to(dev)
    abar1 = torch.tensor(np.concatenate([[1.0], config.schedule.alphas_bar]), dtype=torch.float32, device=dev)
    T = config.schedule.T
    torch.manual_seed(cfg.seed)
    rows, done, start = [], [], time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    student = teacher
    for stage, n in enumerate(cfg.stages):
        teacher = copy.deepcopy(student).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        grid_2n = timesteps(T, 2 * n, "trailing").tolist() + [-1]
        budget = cfg.max_seconds / len(cfg.stages) if cfg.max_seconds else None
        loss, steps = _stage(student, teacher, x_all, grid_2n, abar1, cfg, stage, rows, progress, budget)
        done.append(steps)
        log.info("stage %d: %d -> %d steps, final loss %.4g", stage, 2 * n, n, loss)
    grid = timesteps(T, cfg.nfe, "trailing").tolist()
    distilled = {"nfe": cfg.nfe, "timesteps": grid, "sampler": "ddim", "eta": 0.0, "teacher": str(teacher_run),
                 "start_steps": cfg.start_steps, "steps_per_stage": cfg.steps_per_stage, "batch": cfg.batch, "lr": cfg.lr,
                 "max_seconds": cfg.max_seconds, "stage_steps": done}
    state = _raw_state(student)
    write_json(out / "config.json", replace(config, distilled=distilled).to_dict())
    checkpoint.save_weights(out / "weights.safetensors", state, {"kind": "distilled", "nfe": str(cfg.nfe)})
    write_text(out / "loss.csv", "stage,step,loss\n" + "".join(f"{a},{b},{c:.6f}\n" for a, b, c in rows))
    summary = {"nfe": cfg.nfe, "stages": cfg.stages, "steps": done, "device": str(dev),
               "seconds": round(time.perf_counter() - start, 1),
               "final_loss": rows[-1][2] if rows else None}
    write_json(out / "summary.json", summary)
    return summary


def _raw_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The network's own weights (inside the eps view, when the run was trained on v)."""
    return (model.net if hasattr(model, "net") and hasattr(model, "prediction") else model).state_dict()


def _stage(student: nn.Module, teacher: nn.Module, x_all: torch.Tensor, grid_2n: list[int], abar1: torch.Tensor,
           cfg: DistillConfig, stage: int, rows: list[tuple], progress: bool,
           budget: float | None) -> tuple[float, int]:
    """One halving: train ``student`` (in place, EMA kept in it at the end) on its teacher's 2-step targets,
    for ``cfg.steps_per_stage`` steps or until ``budget`` seconds have passed."""
    student.train()
    params = [p for p in student.parameters()]
    for p in params:
        p.requires_grad_(True)
    ema = {k: v.detach().clone() for k, v in student.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    n = (len(grid_2n) - 1) // 2
    dev = x_all.device
    grid = torch.tensor(grid_2n, device=dev)
    window: list[float] = []
    began, done = time.perf_counter(), 0
    bar = tqdm(range(cfg.steps_per_stage), disable=not progress, desc=f"distil {2 * n}->{n}", unit="step")
    for step in bar:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, stage, step]).generate_state(1)[0]))
        x0 = x_all[torch.randint(0, len(x_all), (cfg.batch,), generator=g).to(dev)]
        i = torch.randint(0, n, (cfg.batch,), generator=g).to(dev)
        # 1. z_t at the student's grid points (one t per sample)
        t, t_mid, t_next = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
        shape = (-1, *[1] * (x0.ndim - 1))
        a_t, a_n = abar1[t + 1].reshape(shape), abar1[t_next + 1].reshape(shape)
        z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * torch.randn(x0.shape, generator=g).to(dev)
        # 2. two teacher steps; 3. the one-step target x~ (z_t'' itself where t'' = -1, sigma = 0)
        with torch.no_grad():
            z2 = _ddim(teacher, _ddim(teacher, z, t, t_mid, abar1), t_mid, t_next, abar1)
            ratio = (1 - a_n).sqrt() / (1 - a_t).sqrt()
            target = torch.where((t_next < 0).reshape(shape), z2, (z2 - ratio * z) / (a_n.sqrt() - ratio * a_t.sqrt()))
        # 4. truncated-SNR weighted x0 regression
        eps = student(z, t.to(torch.float32))
        x0_hat = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        weight = torch.clamp(a_t / (1 - a_t), min=1.0)
        loss = torch.mean(weight * (x0_hat - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for k, v in student.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v, alpha=1 - decay)
        window.append(float(loss.detach()))
        done = step + 1
        over = budget is not None and time.perf_counter() - began > budget
        if done % 50 == 0 or done == cfg.steps_per_stage or over:
            rows.append((stage, done, float(np.mean(window))))
            bar.set_postfix(loss=f"{np.mean(window):.4f}", refresh=False)
            window = []
        if over:
            break
    student.load_state_dict(ema)
    student.eval()
    return (rows[-1][2] if rows else float("nan")), done
