"""The prepared GPU session: continue every shipped prior where it stopped, in one ten-minute call.

``edgediff priors continue`` is the one command a session with a lent GPU runs (README, "Training the
priors on a GPU"). In that call it

1. measures training throughput, today's loop against the fast one, compiled and not (``bench-train``),
   briefly: the compiled variant also fills the compile cache for the stages of the same U-Net;
2. starts one training process per prior, side by side on the GPU, each a new *stage* that starts
   from the prior's newest weights: a run of an earlier stage under ``--runs`` when one is there,
   else the shipped bundle itself (its weights read back from model.onnx and proved on its
   reference). A stage is the GPU recipe (:data:`GPU_STAGE`: generated frames, torch.compile and CUDA
   graphs, bf16, fused AdamW, a large batch with the learning rate scaled) under a time budget; optional study
   runs (other widths, from scratch) share the GPU and the budget;
3. measures each run's learning curve on the GPU (EVM / LSD of the EMA snapshots);
4. packs the runs (configs, EMA weights, loss, curves, logs) into parts under 16 MiB for the trip
   back (:mod:`edgediff.tools.priors_pack`).

Here, ``edgediff priors unpack`` restores the runs and ``edgediff priors adopt``
(:mod:`edgediff.tools.priors_adopt`) evaluates them against the shipped bundles, exports the better
ones into ``priors/`` and records the stage in ``priors/ledger.json``, which tells the next GPU
session where each prior stands.

``--dry-run`` runs the same plan at a toy size on the CPU (seconds per stage, tiny batches and
curves): the suite runs it, so GPU minutes are never spent on a typo.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from edgediff.runtime.atomic import write_json
from edgediff.runtime.errors import InputError

#: The priors continued by default, and the ledger that records their stages.
CONTINUED = ("rf-qpsk", "rf-qpsk-fast", "rf-mix", "rf-chirp")
LEDGER = Path(__file__).resolve().parents[1] / "priors" / "ledger.json"
#: A GPU stage: batch 1024 (2x the last GPU stage at 512), its learning rate scaled by sqrt(2), a short
#: warm-up, EMA weights, snapshots for the curve. Late in training updates count more than batch size:
#: rf-qpsk gained 1.1 dB from 1.5 M frames at batch 128 (12 000 updates), 1.0 dB from 2.7 M at 512
#: (5 310) and 0.26 dB from 1.9 M at 4096 (470, 200 of them warm-up), so the stages trade some frames/s
#: (a graph at 512 ran 0.7x the rate at 4096 on an H200) for updates.
#: Frames are generated on the GPU; ``n_frames`` only sets a scratch run's normalisation (a continued
#: prior keeps its bundle's or run's), so it stays small: processes start training together.
GPU_STAGE = {"batch": 1024, "lr": 3e-4 * math.sqrt(2), "warmup": 50, "ema": 0.9995, "snapshot_every": 500,
             "checkpoint_every": 2000, "log_every": 100, "n_frames": 20000}
#: Study variants (``--study``), trained from scratch beside the stages: name -> U-Net changes.
STUDY = {"qpsk-w32": {"base_width": 32}, "qpsk-w40": {"base_width": 40}, "qpsk-w48": {"base_width": 48},
         "qpsk-w64": {"base_width": 64}, "qpsk-w32-deep": {"blocks_per_level": 2},
         "qpsk-w32-attn2": {"attn_levels": (2,)}}
STUDY_LR = 2e-3 * math.sqrt(2)  # the recipes' rate at 512, scaled to the stage's batch
#: Grown variants (``--study``): a prior's newest weights grown by attention after every residual block
#: of more U-Net levels (``attn_levels``, train/unet.py; the new attention starts as the identity),
#: trained beside the prior's own stage from the same weights, at the same rate and budget: that
#: lever's A/B. The QPSK priors' error is phase wander made at t = 400-600 (docs/priors.md, "Where
#: the error lies"), where a frame's common phase must be carried across its symbols: level 2 (64 cells) is one
#: cell a symbol for rf-qpsk-fast, two for rf-qpsk; the middle already attends over 32. Level 2 costs
#: 1.08x the FLOPs (levels 1 and 2: 1.28x, and 1.8x the CPU training time). Their stage runs are
#: ``NAME-sK`` like the prior's and adopt alike.
#: rf-chirp's pulses come out short, their extent decided at t = 800-900 (-10 to -16 dB a sample) and
#: moved neither by frames seen nor by the loss's weighting on the CPU (docs/priors.md, "rf-chirp's
#: short pulses"): attention at level 2 lets every 4-sample cell weigh the whole frame's energy there.
GROWN = {"rf-qpsk-attn": ("rf-qpsk", {"attn_levels": (2,)}),
         "rf-qpsk-fast-attn": ("rf-qpsk-fast", {"attn_levels": (2,)}),
         "rf-chirp-attn": ("rf-chirp", {"attn_levels": (2,)})}


def prior_of(variant: str) -> str:
    """The prior a stage of ``variant`` would replace: a grown twin's own prior, else the variant itself."""
    return GROWN[variant][0] if variant in GROWN else variant


DRY = {"batch": 8, "snapshot_every": 5, "checkpoint_every": 10, "log_every": 5, "warmup": 2, "n_frames": 256}


@dataclass(frozen=True)
class Stage:
    name: str  # the prior (or study variant)
    run: Path  # the run directory this stage trains into
    config: Any  # its RunConfig (prepared as config.json; trained with `edgediff train --resume`)
    init: str | None  # where its weights start


def read_ledger(path: Path = LEDGER) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ledger ({exc}); restore it from git") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the ledger is not a JSON object; restore it from git")
    return data


def stage_number(name: str, run: Path) -> int | None:
    """K for a stage run ``NAME-sK`` of prior ``name``, else None."""
    tail = run.name[len(name) + 2:]
    return int(tail) if run.name.startswith(f"{name}-s") and tail.isdigit() else None


def newest_stage(name: str, runs: Path, files: tuple[str, ...] = ("weights.safetensors",),
                 skip: frozenset[str] | set[str] = frozenset()) -> Path | None:
    """The stage run of ``name`` under ``runs`` with the highest K that holds all of ``files`` and is
    not one of ``skip`` (run names)."""
    local = [r for r in runs.glob(f"{name}-s[0-9]*") if stage_number(name, r) is not None
             and r.name not in skip and all((r / f).is_file() for f in files)]
    return max(local, key=lambda r: stage_number(name, r) or 0, default=None)


def declined(ledger: dict[str, Any], name: str) -> set[str]:
    """The stage runs of prior ``name`` that ``priors adopt`` measured and kept out (the ledger's
    ``declined``): the next stage starts from what ships, not from them, and takes a new number."""
    return {str(d.get("run")) for d in ledger.get(name, {}).get("declined", [])}


def newest_weights(name: str, runs: Path, ledger: dict[str, Any]) -> tuple[int, str]:
    """(next stage number, where its weights start): the newest local stage run that was not declined,
    else the shipped bundle."""
    from edgediff.runtime.bundle import SHIPPED_DIR

    entry = ledger.get(name, {})
    stages = entry.get("stages", [])
    # past every stage recorded, adopted or declined, by count and by name: a stage adopted from elsewhere
    # (rf-chirp-s3 after an unadopted s2) or one measured and declined must not have its name taken again
    done = max([len(stages)] + [stage_number(name, Path(str(s.get("run", "")))) or 0
                                for s in [*stages, *entry.get("declined", [])]])
    run = newest_stage(name, runs, skip=declined(ledger, name))
    if run is not None:
        return max(done, stage_number(name, run) or 0) + 1, str(run / "weights.safetensors")
    return done + 1, str(SHIPPED_DIR / name)


#: What of a stage run travels to the next GPU call: its weights and the units they learnt.
CARRIED = ("config.json", "weights.safetensors")


def carry(runs: Path, out: Path, names: tuple[str, ...] | None = None,
          ledger: dict[str, Any] | None = None) -> list[Path]:
    """Copy the newest stage run of each prior under ``runs`` (config and EMA weights only: checkpoints
    and snapshots stay here; runs the ledger lists as declined stay too) into ``out``, for a device
    call's ``carry`` (64 MiB in all): the next ``priors continue --runs out`` starts each prior from
    there. Returns the copied runs."""
    import shutil

    from edgediff.runtime.atomic import atomic_directory

    ledger = read_ledger() if ledger is None else ledger
    found = [newest_stage(name, runs, CARRIED, skip=declined(ledger, prior_of(name)))
             for name in ((*CONTINUED, *GROWN) if names is None else names)]
    found = [run for run in found if run is not None]
    if found and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder to carry the runs into")
    for run in found:  # all checked before any is copied: a refused carry leaves no half-filled folder
        if (out / run.name).exists():
            raise InputError(f"{out / run.name} exists: carry into an empty folder")
    copied = []
    if found:
        out.mkdir(parents=True, exist_ok=True)
    for run in found:
        with atomic_directory(out / run.name) as tmp:  # each run whole or not at all
            for f in CARRIED:
                shutil.copyfile(run / f, tmp / f)
        copied.append(out / run.name)
    return copied


def plan(names: list[str], runs: Path, seconds: float, *, study: list[str], dry_run: bool = False,
         ledger: dict[str, Any] | None = None) -> list[Stage]:
    """The stages of one GPU call (and the study runs), their configs written nowhere yet."""
    from edgediff.tools import priors

    ledger = read_ledger() if ledger is None else ledger
    stages = []
    for name in names:
        if name not in CONTINUED:
            raise InputError(f"prior {name!r} is not continued on the GPU: expected one of {', '.join(CONTINUED)}")
        number, init = newest_weights(name, runs, ledger)
        stages.append(_stage(name, runs, number, name, init, seconds, dry_run, {}))
    for variant in study:
        if variant in GROWN:
            prior, changes = GROWN[variant]
            number, init = newest_weights(prior, runs, ledger)
            own = newest_stage(variant, runs, skip=declined(ledger, prior))  # a grown run here already: train it on
            if own is not None:
                number, init = max(number, (stage_number(variant, own) or 0) + 1), str(own / "weights.safetensors")
            stages.append(_stage(variant, runs, number, prior, init, seconds, dry_run, changes))
            continue
        if variant not in STUDY:
            raise InputError(f"study variant {variant!r} is unknown: expected one of {', '.join([*STUDY, *GROWN])}")
        config = _config(priors.PriorRecipe("rf-qpsk"), seconds, STUDY_LR, None, dry_run)
        config = replace(config, model=replace(config.model, **STUDY[variant]))
        stages.append(Stage(variant, runs / variant, config, None))
    return stages


def _stage(name: str, runs: Path, number: int, prior: str, init: str, seconds: float, dry_run: bool,
           changes: dict[str, Any]) -> Stage:
    """A stage of ``prior`` that trains the network its weights are (a grown one stays grown), changed by
    ``changes``. Its seed is its stage number: a step's frames and noise come from (seed, step, rank),
    so a stage at its parent's seed would replay the parent's frames step for step (the GPU stages up to
    stage 11 all ran at seed 0); a grown twin shares its prior's stage number, so both see the same frames."""
    from edgediff.tools import priors

    r = replace(priors.recipe(priors.SHIPPED[prior]), init=None, seed=number)
    config = _config(r, seconds, GPU_STAGE["lr"], init, dry_run)
    config = replace(config, model=replace(network_of(init) or config.model, **changes))
    return Stage(name, runs / f"{name}-s{number}", config, init)


def network_of(init: str) -> Any:
    """The U-Net config of a stage's starting weights: a run's (its config.json) or a bundle's manifest;
    None for weights without either (the recipe's network is assumed)."""
    from edgediff.runtime.bundle import Bundle
    from edgediff.train.bundle_weights import is_bundle
    from edgediff.train.config import RunConfig
    from edgediff.train.models import config_from_dict

    if is_bundle(init):
        return config_from_dict(Bundle.open(init).manifest["model"]["config"])
    return RunConfig.load(Path(init).parent).model if (Path(init).parent / "config.json").is_file() else None


def _config(r: Any, seconds: float, lr: float, init: str | None, dry_run: bool) -> Any:
    from edgediff.tools import priors

    g = {**GPU_STAGE, **(DRY if dry_run else {})}
    r = replace(r, batch=g["batch"], lr=lr, warmup=g["warmup"], ema=g["ema"],
                n_frames=g.get("n_frames", r.n_frames), steps=1_000_000)
    config = priors.run_config(r, max_seconds=seconds, snapshot_every=g["snapshot_every"])
    train = replace(config.train, checkpoint_every=g["checkpoint_every"], log_every=g["log_every"], init_from=init,
                    frames="generated", graphs=None, amp=None, fused=None, compile=None)
    return replace(config, train=train)


def prepare(stages: list[Stage]) -> None:
    """Write each stage's config.json into its (new) run directory."""
    for s in stages:
        if s.run.exists() and any(s.run.iterdir()):
            raise InputError(f"{s.run} exists and is not empty: adopt or remove it before the next stage")
        s.run.mkdir(parents=True, exist_ok=True)
        write_json(s.run / "config.json", s.config.to_dict())


#: Training frames held on the device when the stages fall back to today's step (the recipes' count).
FALLBACK_FRAMES = 200_000


def _failure(bench: dict[str, Any], name: str) -> str | None:
    """Why the benchmark's variant ``name`` failed (an error, or a loss that is not finite), or None."""
    row = next((r for r in bench.get("rows", []) if r.get("variant", {}).get("name") == name), None)
    if row is None or (not row.get("error") and row.get("loss_finite", True)):
        return None
    return row.get("error") or f"loss {row.get('mean_loss')}"


def step_fallback(stages: list[Stage], bench: dict[str, Any],
                  frames: int = FALLBACK_FRAMES) -> tuple[list[Stage], str | None]:
    """The stages to train, and why they changed, rather than failing for the whole call:
    when the benchmark's ``fast`` step failed on this device, every stage trains with ``today``'s
    step instead (eager, a resident set of generated frames, default AdamW, bf16 autocast: the program
    the shipped priors were trained with on GPUs); when only ``fast-compile`` failed, the stages keep
    the fast step without torch.compile."""
    fast, compiled = _failure(bench, "fast"), _failure(bench, "fast-compile")
    if fast is None and compiled is None:
        return stages, None
    changed = []
    for s in stages:
        if fast is None:
            config = replace(s.config, train=replace(s.config.train, compile=False))
        else:
            config = replace(s.config, train=replace(s.config.train, frames="resident", graphs=False, fused=False,
                                                     compile=False), data=replace(s.config.data, n=frames))
        changed.append(replace(s, config=config))
    if fast is None:
        return changed, f"torch.compile failed in the benchmark ({compiled}): the stages train the fast step uncompiled"
    return changed, f"the fast step failed in the benchmark ({fast}): every stage trains with today's step instead"


def _side_by_side(bench: dict[str, Any], name: str, base: str) -> tuple[float, float] | str:
    """The frames/s of the benchmark's variants ``name`` and ``base``, or why they cannot be compared."""
    rows = {r.get("variant", {}).get("name"): r for r in bench.get("rows", [])}
    if name not in rows or base not in rows:
        return f"the benchmark did not compare {name} with {base}"
    for n in (name, base):
        why = _failure(bench, n) or ("no frames/s" if "frames_per_s" not in rows[n] else None)
        if why:
            return f"{n} failed in the benchmark: {why}"
    return rows[name]["frames_per_s"], rows[base]["frames_per_s"]


#: Four models of the stages' compiled step on four streams (bench-train's ``fast-compile-x4``) must
#: move at least this much more than one alone for the stages to train in one process: it pays for the
#: process's serial start (each stage's set-up and compilation in turn, where processes overlap them).
TOGETHER_GAIN = 1.3


def together_pays(bench: dict[str, Any]) -> tuple[bool, str]:
    """Whether the stages should train in one process (:mod:`edgediff.train.together`), and why, from
    the benchmark's ``fast-compile-x4`` against ``fast-compile`` (the same step, one model)."""
    measured = _side_by_side(bench, "fast-compile-x4", "fast-compile")
    if isinstance(measured, str):
        return False, f"stages train one process each ({measured})"
    many, one = measured
    gain = many / one
    words = f"four models on four streams moved {many:.0f} frames/s against one's {one:.0f} ({gain:.2f}x)"
    if gain >= TOGETHER_GAIN:
        return True, f"stages train together in one process, a stream each: {words}"
    return False, f"stages train one process each: {words}, under the {TOGETHER_GAIN}x that one process needs"


#: The stages' compiled step with its convolutions in channels-last memory (bench-train's
#: ``fast-compile-cl``) must move at least this much more than ``fast-compile`` for the stages to take
#: it: one 8-second timing each, side by side; a gain within a few per cent is not worth a new program.
CHANNELS_LAST_GAIN = 1.1


def channels_last_pays(bench: dict[str, Any]) -> tuple[bool, str]:
    """Whether the stages should run their convolutions channels-last, and why, from the benchmark's
    ``fast-compile-cl`` against ``fast-compile`` (the same compiled step at the stages' batch)."""
    measured = _side_by_side(bench, "fast-compile-cl", "fast-compile")
    if isinstance(measured, str):
        return False, f"convolutions in torch's layout ({measured})"
    cl, plain = measured
    gain = cl / plain
    words = f"channels-last moved {cl:.0f} frames/s against {plain:.0f} ({gain:.2f}x)"
    if gain >= CHANNELS_LAST_GAIN:
        return True, f"stages run their convolutions channels-last: {words}"
    return False, f"convolutions in torch's layout: {words}, under the {CHANNELS_LAST_GAIN}x asked"


def with_channels_last(stages: list[Stage]) -> list[Stage]:
    """The stages with their convolutions channels-last (``train.channels_last``)."""
    return [replace(s, config=replace(s.config, train=replace(s.config.train, channels_last=True))) for s in stages]


def launch_together(stages: list[Stage], device: str, log_path: Path, log: Callable[[str], Any] = print) -> int:
    """Train every stage in one process (``edgediff priors train-together``), a CUDA stream each; each
    stage's log in its run's train.log, the process's own output in ``log_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "edgediff", "priors", "train-together", *[str(s.run) for s in stages], "--device", device]
    start = time.perf_counter()
    with open(log_path, "w") as out:
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    for s in stages:
        log(f"{s.name}: {_last_line(s.run / 'train.log')}")
    log(f"train-together: exit {code} after {time.perf_counter() - start:.0f} s")
    return code


def _last_line(log_file: Path) -> str:
    lines = log_file.read_text().strip().splitlines() if log_file.is_file() else []
    return lines[-1] if lines else "no log"


def rewrite(stages: list[Stage]) -> None:
    """Replace each prepared stage's config.json (nothing has trained there yet)."""
    for s in stages:
        write_json(s.run / "config.json", s.config.to_dict())


def launch(stages: list[Stage], device: str, log: Callable[[str], Any] = print) -> dict[str, int]:
    """Train every stage at once, one process each (``edgediff train --resume`` on its prepared run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = {}
    for s in stages:
        cmd = [sys.executable, "-m", "edgediff", "train", "--out", str(s.run), "--resume", "--quiet", "--device", device]
        procs[s.name] = subprocess.Popen(cmd, env=env, stdout=open(s.run / "train.log", "w"), stderr=subprocess.STDOUT)
    start, codes = time.perf_counter(), {}
    for s in stages:
        codes[s.name] = procs[s.name].wait()
        log(f"{s.name}: exit {codes[s.name]} after {time.perf_counter() - start:.0f} s: {_last_line(s.run / 'train.log')}")
    return codes


def curves(stages: list[Stage], device: str, n: int, points: int, sample_steps: int,
           log: Callable[[str], Any] = print) -> None:
    """Each trained run's learning curve (``edgediff priors curve``), all runs at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    procs = {}
    for s in stages:
        if not (s.run / "weights.safetensors").is_file():
            log(f"{s.name}: no weights, no curve")
            continue
        cmd = [sys.executable, "-m", "edgediff", "priors", "curve", str(s.run), "--device", device, "--n", str(n),
               "--points", str(points), "--sample-steps", str(sample_steps)]
        procs[s.name] = subprocess.Popen(cmd, env=env, stdout=open(s.run / "curve.log", "w"), stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        code = proc.wait()
        run = next(s.run for s in stages if s.name == name)
        log(f"{name}: curve exit {code}: {_last_line(run / 'curve.log')}")
