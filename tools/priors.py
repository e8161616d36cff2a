"""The shipped priors: their training recipes, the recipe study, learning curves and export.

A recipe is a frozen :class:`PriorRecipe`; :func:`run_config` turns it into the run config that
``edgediff train`` would build. ``edgediff priors train NAME`` trains one (optionally to a time
budget, which fixes the step count after the warm-up), ``edgediff priors curve RUN`` samples every
EMA snapshot of a run with the ``sample`` defaults and measures it against held-out frames, and
``edgediff priors export`` writes the bundles that live in ``priors/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgediff.runtime.errors import InputError

#: Where the shipped bundles live, relative to the repository root (resolved by short name).
PRIORS_DIR = Path(__file__).resolve().parents[1] / "priors"


@dataclass(frozen=True)
class PriorRecipe:
    dataset: str
    prediction: str = "v"
    loss_weight: str = "min-snr"
    schedule: str = "cosine"
    width: int = 32
    stem_kernel: int = 3
    batch: int = 512
    lr: float = 2e-3
    warmup: int = 300
    ema: float = 0.999
    steps: int = 200_000  # the cap; a time budget fixes the real count after the warm-up
    n_frames: int = 200_000
    augment: str = "phase"
    seed: int = 0
    init: str | None = None  # a later stage: starts from the EMA weights of this recipe's run


#: The recipe study on rf-qpsk: each variant changes one lever from the one before it. Run side by
#: side on one H200 (7 processes, 400 s each, bf16 autocast); ``steps`` is what the budget reached.
STUDY = {
    "qpsk-eps-linear": PriorRecipe("rf-qpsk", prediction="eps", loss_weight="none", schedule="linear", steps=3394),
    "qpsk-v-minsnr-linear": PriorRecipe("rf-qpsk", schedule="linear", steps=3492),
    "qpsk-v-minsnr-cosine": PriorRecipe("rf-qpsk", steps=3513),
    "qpsk-v-minsnr-cosine-stem33": PriorRecipe("rf-qpsk", stem_kernel=33, steps=3349),
}
#: Later stages of the best variant, each starting from the EMA weights of the one before.
STAGES = {
    # alone on the GPU for 170 s at a lower peak rate
    "qpsk-stage2": PriorRecipe("rf-qpsk", lr=5e-4, warmup=100, steps=3539, init="qpsk-v-minsnr-cosine"),
    # on 2 CPU cores (one thread): smaller batches, more updates for the same compute
    "qpsk-stage3": PriorRecipe("rf-qpsk", lr=2.5e-4, warmup=100, batch=128, steps=12000, init="qpsk-stage2"),
    # back on one H100 (300 s, bf16, beside two distillations): large batches at a low peak rate
    "qpsk-stage4": PriorRecipe("rf-qpsk", lr=3e-4, warmup=100, steps=5310, init="qpsk-stage3"),
    # rf-mix on 2 CPU cores (two threads, 57 minutes: the step count a 3300 s budget fixed), from the
    # first run's EMA weights (read back from its shipped bundle: the same numbers)
    "mix-stage2": PriorRecipe("rf-mix", lr=2.5e-4, warmup=100, batch=128, steps=15122, init="rf-mix"),
}
#: What the second radar stage's 50-minute budget reached on 2 CPU cores (one thread).
RADAR_STAGE2_STEPS = 4688
#: The other priors, trained with the study's best recipe beside it (same GPU session).
RECIPES = {
    "rf-chirp": PriorRecipe("rf-chirp", steps=3396),
    "rf-mix": PriorRecipe("rf-mix", steps=3476),
    "rf-qpsk-fast": PriorRecipe("rf-qpsk-fast", steps=3538),
    "gmm2d": PriorRecipe("gmm2d", prediction="eps", loss_weight="none", schedule="linear", width=256, batch=512,
                         warmup=100, steps=4000, n_frames=20000, augment="none"),
    # range-Doppler maps on 2 CPU cores (one thread, ~100 maps/s): the shipped run was set for 8105 steps
    # (a 90-minute budget) and stopped at its step-1500 checkpoint; the second stage starts from there
    "radar-rd": PriorRecipe("radar-rd", batch=64, n_frames=50000, augment="none", warmup=100, steps=1500),
    "radar-rd-stage2": PriorRecipe("radar-rd", batch=64, n_frames=50000, augment="none", warmup=100,
                                   steps=RADAR_STAGE2_STEPS, init="radar-rd"),
}
#: Shipped bundle name -> the recipe whose run it is exported from.
SHIPPED = {"rf-qpsk": "qpsk-stage4", "rf-chirp": "rf-chirp", "rf-mix": "mix-stage2", "rf-qpsk-fast": "rf-qpsk-fast",
           "gmm2d": "gmm2d", "radar-rd": "radar-rd-stage2"}
#: Shipped few-step students: name -> (teacher's shipped name, distillation settings), built by
#: ``make priors`` like the rest. Empty: the 4-step student of rf-chirp (one H100, 270 s, ~1000
#: steps a stage at batch 256, lr 1e-4) missed the distillation target (mean-PSD LSD 2.15 dB against
#: its teacher's 1.42 at DDIM-50 on 4096 frames; the bound is 0.5 dB), so none ships. Its settings:
#: {"rf-chirp-d4": ("rf-chirp", {"nfe": 4, "start_steps": 64, "steps_per_stage": 1000, "batch": 256, "lr": 1e-4})}
DISTILLED: dict[str, tuple[str, dict]] = {}
#: SDE-DPM-Solver++'s 25 steps for QPSK frames: dense where the phase is decided and where the receiver noise lives.
SDE_GRID = "999-700:3,700-300:12,300-150:3,150-0:7"


class OwnGrid(NamedTuple):
    """A shipped prior's own grid (runtime/grids.py; manifest "sampling") and the sampler it is the default for."""
    spec: str
    why: str
    method: str = "ddim"


#: Shipped priors with their own grid: name -> OwnGrid.
GRIDS = {
    "rf-qpsk-fast": OwnGrid(SDE_GRID,
                            "rf-qpsk's solver and grid at half DDIM-50's calls: with stage 16, better than DDIM-50 on "
                            "its own grid in EVM (0.34 dB), p90, share below -15 dB and LSD at three seeds on 2048 frames "
                            "(README, placing the solver's steps)",
                            "sde-dpmpp2m"),
    "rf-qpsk": OwnGrid(SDE_GRID,
                       "SDE-DPM-Solver++ at half DDIM-50's calls: 12 of 25 steps in t 700-300, where a frame's phase is "
                       "decided, keep the EVM, 7 below t = 150 keep each frame's own receiver noise; better than DDIM-50 "
                       "on its own grid in EVM, p90 and LSD at three seeds on 2048 frames (README, placing the solver's steps)",
                       "sde-dpmpp2m"),
    "rf-chirp": OwnGrid("999-800:12,800-150:18,150-0:20",
                        "DDIM-50 with 20 of 50 steps below t = 150, where each pulse's own receiver noise lives, and 12 "
                        "in t 999-800: IF-linearity error 0.00515 against the data's 0.00516 (uniform: 0.0042, frames "
                        "too clean), LSD 0.54 / 0.95 / 0.53 at seeds 0-2 on 4096 frames (README, rf-chirp on its own grid)"),
    "rf-mix": OwnGrid("999-950:4,950-800:18,800-400:12,400-0:16",
                      "a frame's kind is decided at t 950-800: 18 of 50 steps there (uniform: 7) keep more chirps; "
                      "SDE-DPM-Solver++ on them keeps more again, and sharper QPSK frames, than DDIM did on the same "
                      "grid at two seeds (README, rf-mix samples on its own grid)",
                      "sde-dpmpp2m"),
}
ALL = {**RECIPES, **STUDY, **STAGES}


def replace_width(r: PriorRecipe, width: int) -> PriorRecipe:
    from dataclasses import replace

    return replace(r, width=width)


def recipe(name: str) -> PriorRecipe:
    if name not in ALL:
        raise InputError(f"recipe {name!r} is unknown: expected one of {', '.join(ALL)}")
    return ALL[name]


def run_config(r: PriorRecipe, *, max_seconds: float | None = None, snapshot_every: int = 0, amp: bool | None = None,
               runs: Path = Path("runs/priors")):
    """The run config of a recipe (what ``edgediff train`` with the same options builds)."""
    from edgediff.runtime.schedule import NoiseSchedule
    from edgediff.train.config import RunConfig, TrainConfig
    from edgediff.train.datasets import DataConfig
    from edgediff.train.models import MLPConfig, UNet1DConfig
    from edgediff.train.unet2d import UNet2DConfig

    points, maps = r.dataset == "gmm2d", r.dataset == "radar-rd"
    if points:
        model: Any = MLPConfig(width=r.width)
    elif maps:
        model = UNet2DConfig(base_width=r.width)
    else:
        model = UNet1DConfig(base_width=r.width, stem_kernel=r.stem_kernel)
    return RunConfig(
        model=model,
        schedule=NoiseSchedule.cosine(T=1000) if r.schedule == "cosine" else NoiseSchedule.linear(T=1000),
        data=DataConfig(dataset=r.dataset, n=r.n_frames, length=32 if maps else 256, seed=r.seed,
                        normalise="none" if points else "rms"),
        train=TrainConfig(steps=r.steps, batch=r.batch, lr=r.lr, warmup=r.warmup, ema=r.ema, seed=r.seed,
                          checkpoint_every=1000, log_every=50, prediction=r.prediction, loss_weight=r.loss_weight,
                          augment=r.augment, max_seconds=max_seconds, amp=amp, snapshot_every=snapshot_every,
                          init_from=str(runs / r.init / "weights.safetensors") if r.init else None),
    )


def chain(name: str) -> list[str]:
    """The recipes to train, in order, for ``name`` (its ``init`` stages first)."""
    names = [name]
    while recipe(names[0]).init:
        names.insert(0, str(recipe(names[0]).init))
    return names


def build(names: list[str], runs: Path, out: Path, *, device: str = "auto", amp: bool | None = None,
          progress: bool = True, log: Any = print) -> list[Path]:
    """Train every missing run of the shipped priors ``names`` (stages in order), then export each
    into ``out/NAME``. A run whose weights exist with the recipe's step count is kept as it is."""
    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle
    from edgediff.export.manifest import set_sampling
    from edgediff.runtime import grids
    from edgediff.train.config import RunConfig
    from edgediff.train.loop import fit

    for name in names:
        if name not in SHIPPED and name not in DISTILLED:
            raise InputError(f"prior {name!r} is unknown: expected one of {', '.join([*SHIPPED, *DISTILLED])}")
    written = []
    for name in names:
        teacher = DISTILLED[name][0] if name in DISTILLED else name
        for stage in chain(SHIPPED[teacher]):
            run = runs / stage
            r = recipe(stage)
            if (run / "weights.safetensors").is_file() and RunConfig.load(run).train.steps == r.steps:
                log(f"{stage}: trained ({r.steps} steps), kept")
                continue
            summary = fit(run_config(r, amp=amp, runs=runs), run, device=device, progress=progress)
            log(f"{stage}: {summary['steps']} steps in {summary['seconds']:.0f} s on {summary['device']}")
        run = runs / SHIPPED[teacher]
        if name in DISTILLED:
            run = _distilled(runs, name, device, progress, log)
        out.mkdir(parents=True, exist_ok=True)
        manifest = export_bundle(run, out / name, OnnxExportOptions(force=True))
        if name in GRIDS:
            own = GRIDS[name]
            set_sampling(out / name, grids.record(own.spec, int(manifest["schedule"]["T"]), own.why, own.method))
        written.append(out / name)
        log(f"{name}: bundle {out / name}")
    return written


def _distilled(runs: Path, name: str, device: str, progress: bool, log: Any) -> Path:
    """The run of the distilled prior ``name``, distilled from its teacher's run when missing."""
    from edgediff.train.distill import DistillConfig, distill

    teacher, settings = DISTILLED[name]
    run = runs / name
    if (run / "weights.safetensors").is_file():
        log(f"{name}: distilled, kept")
        return run
    summary = distill(runs / SHIPPED[teacher], run, DistillConfig(**settings), progress=progress, device=device)
    log(f"{name}: distilled to {summary['nfe']} steps in {summary['seconds']:.0f} s on {summary['device']}")
    return run


def snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of a run's EMA snapshots, oldest first, plus its final weights."""
    found = []
    for p in sorted((run_dir / "snapshots").glob("step_*.safetensors")):
        m = re.match(r"step_(\d+)\.safetensors$", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return found


def curve(run_dir: Path, *, device: str = "cpu", n: int = 256, steps: int = 50, seed: int = 0,
          max_points: int = 12, final_steps: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Snapshots (at most ``max_points``, evenly picked, and the final weights) sampled with the
    ``sample`` defaults (DDIM, eta 1, ``steps`` trailing steps, seed ``seed``) and measured against
    ``n`` held-out frames. The final weights are also measured at each of ``final_steps``."""
    from edgediff.runtime.generate import SampleRequest, generate
    from edgediff.tools.evaluate import evaluate_frames, reference
    from edgediff.train.checkpoint import load_weights
    from edgediff.train.config import RunConfig
    from edgediff.train.run import model_with_weights
    from edgediff.train.torch_engine import RunDenoiser

    config = RunConfig.load(run_dir)
    ref = reference(config.data.dataset, n, config.data.length, config.data.seed)
    snaps = snapshots(run_dir)
    every = max(1, -(-len(snaps) // max(1, max_points)))
    points = snaps[::-1][::every][::-1] + [(config.train.steps, run_dir / "weights.safetensors")]
    rows, seen = [], set()
    for step, path in points:
        if step in seen:
            continue
        seen.add(step)
        denoiser = RunDenoiser(config, model_with_weights(config, load_weights(path), device), device)
        for k in (steps,) + (final_steps if path.name == "weights.safetensors" else ()):
            run = generate(denoiser, SampleRequest(n=n, steps=k, seed=seed))
            rows.append({"step": step, "sample_steps": k, **evaluate_frames(run.x, ref, str(config.data.dataset))})
    return rows


def loss_at(run_dir: Path, step: int) -> dict[str, float]:
    """The logged loss row nearest ``step`` (loss and plain eps MSE)."""
    import csv

    if not (run_dir / "loss.csv").is_file():
        return {}
    with open(run_dir / "loss.csv") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    best = min(rows, key=lambda r: abs(int(r["step"]) - step))
    return {"loss": float(best["loss"]), "eps_mse": float(best["eps_mse"]) if best.get("eps_mse") else float("nan")}


def write_json(path: Path, obj: Any) -> None:
    from edgediff.runtime.atomic import write_json as atomic_write

    atomic_write(path, obj)


def summary_line(name: str, rows: list[dict[str, Any]]) -> str:
    last = rows[-1]
    gen = last["generated"]
    evm = gen.get("evm")
    extra = f", EVM median {evm['median_db']:.1f} dB, {100 * evm['share_below_15db']:.0f}% < -15 dB" if evm else ""
    if gen.get("chirp_linearity_median") is not None:
        extra += f", chirp IF error {gen['chirp_linearity_median']:.4f}"
    if gen.get("pulse_duty_median") is not None:
        extra += f", pulses on {100 * gen['pulse_duty_median']:.0f}% (data {100 * last['held_out']['pulse_duty_median']:.0f}%)"
    return (f"{name}: step {last['step']} ({last['sample_steps']} sampling steps): LSD {last['psd_lsd_db']:.2f} dB, "
            f"W1 {last['envelope_w1']:.3f}{extra}")
