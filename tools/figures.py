"""What the README reports from the shipped priors, and the commands that measure it again.

A new prior (``edgediff priors adopt``) makes every figure measured with the old one stale. Each
:class:`Figure` here is one README measurement: the ``edgediff`` command that makes it (the README's
own command, writing into ``docs/``), the shipped priors it reads and the README section that quotes
it. ``edgediff priors figures --prior NAME`` runs, one after the other, exactly the figures that
read NAME, so a session that adopts a prior re-measures what changed in one unattended command and
then edits the prose. The int8 gate's figures are not here: ``adopt`` re-runs that gate and writes it
into the bundle's manifest. Speed figures are not either: new weights do not change the network's
cost.

Each figure measured through :func:`run` is recorded in ``docs/bench/figures.json`` with the priors it
read (their stage and model hash) and its command, so ``edgediff priors figures --stale`` names what a later adoption
left behind, and a session that ran out of time picks up where it stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgediff.runtime.atomic import write_json
from edgediff.runtime.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
#: Which shipped priors each figure was last measured with (relative to the repository root).
RECORD = Path("docs/bench/figures.json")


@dataclass(frozen=True)
class Figure:
    name: str
    priors: tuple[str, ...]  # the shipped priors it reads
    args: tuple[str, ...]  # the edgediff command; paths relative to the repository root
    section: str  # where the README quotes it: a heading, (a paragraph in it), or docs/priors.md (a heading or a bold paragraph there)
    minutes: float  # about how long it takes on 2 CPU cores
    copies: tuple[tuple[str, str], ...] = ()  # (written into a scratch folder, kept as) for --out folders

    @property
    def samples_by_default(self) -> bool:
        """Whether it samples its priors with the default sampler at its default steps, which a prior's own
        grid (and the sampler it names) changes (runtime/grids.py); the posterior methods and the samplers
        named on the command line run their own timesteps."""
        return self.args[:2] in (("plot", "constellation"), ("plot", "samples")) or self.args[0] == "bench-samplers" or (
            self.args[0] == "evaluate" and not {"--sampler", "--steps", "--spacing"} & set(self.args))


def _evaluate(prior: str, n: int, *extra: str, suffix: str = "", section: str = "") -> Figure:
    name = f"evaluate-{prior}{suffix}"
    return Figure(name, (prior,), ("evaluate", prior, "--n", str(n), *extra, "--json", f"docs/bench/{name}.json",
                                   "--force"), section or ("Shipped priors" if not extra else "Few steps"),
                  1.0 if n <= 1024 else 3.0)


QPSK, CHIRP, FAST, MIX = "rf-qpsk", "rf-chirp", "rf-qpsk-fast", "rf-mix"
FIGURES = (
    _evaluate(QPSK, 512), _evaluate(CHIRP, 512), _evaluate(MIX, 512), _evaluate(FAST, 512),
    _evaluate(QPSK, 2048, suffix="-2048"),  # issue 19's target is stated on 2048 frames
    _evaluate(QPSK, 1024, "--sampler", "sde-dpmpp2m", "--steps", "20", suffix="-sde20"),
    _evaluate(CHIRP, 4096, suffix="-4096"),
    _evaluate(CHIRP, 4096, "--sampler", "sde-dpmpp2m", "--steps", "10", suffix="-sde10"),
    _evaluate(QPSK, 512, "--denoise-curve", suffix="-denoise", section="docs/priors.md (Where the error lies)"),
    _evaluate(FAST, 512, "--denoise-curve", suffix="-denoise", section="docs/priors.md (Where the error lies)"),
    _evaluate(MIX, 512, "--denoise-curve", suffix="-denoise", section="docs/priors.md (rf-mix's missing chirps)"),
    _evaluate(CHIRP, 512, "--denoise-curve", suffix="-denoise", section="docs/priors.md (rf-chirp's short pulses)"),
    Figure("constellation", (QPSK,), ("plot", "constellation", QPSK, "--out", "docs/img/constellation.png", "--force"),
           "Shipped priors", 0.5),
    Figure("reconstruct", (QPSK, CHIRP), ("bench-reconstruct", QPSK, CHIRP, "--frames", "16", "--walked", "--json",
                                          "docs/bench/reconstruct.json", "--force"), "Reconstruction", 60.0),
    Figure("reconstruct-nfe", (QPSK, CHIRP), ("bench-reconstruct", QPSK, CHIRP, "--nfe-curve", "--frames", "16", "--json",
                                              "docs/bench/reconstruct-nfe.json", "--plot", "docs/img/reconstruct-nfe.png",
                                              "--force"), "Sequential Monte Carlo", 13.0),
    Figure("reconstruct-nfe-miss50", (QPSK,), ("bench-reconstruct", QPSK, "--nfe-curve", "--cases", "miss50", "--frames",
                                               "16", "--json", "docs/bench/reconstruct-nfe-miss50.json", "--force"),
           "Sequential Monte Carlo", 13.0),
    Figure("separate", (QPSK, CHIRP, FAST), ("bench-separate", "--frames", "100", "--json", "docs/bench/separate.json",
                                             "--plot", "docs/img/separate.png", "--force"), "Separation", 35.0),
    Figure("separate-smc", (QPSK, CHIRP, FAST), ("bench-separate", "--frames", "10", "--steps", "40", "--sinr", "-12",
                                                 "--sinr", "-6", "--sinr", "0", "--smc-particles", "8", "--json",
                                                 "docs/bench/separate-smc.json", "--force"), "Separation", 1.5),
    Figure("separate-posterior-mean", (QPSK, FAST), ("bench-separate", "--interference", FAST, "--frames", "100", "--steps",
                                                    "50", "--sinr", "0", "--samples", "16", "--json",
                                                    "docs/bench/separate-posterior-mean.json", "--force"),
           "docs/priors.md (Where 0 dB against rf-qpsk-fast stands)", 8.0),
    Figure("separate-samples-4", (QPSK, CHIRP, FAST), ("bench-separate", "--frames", "100", "--sinr", "3", "--sinr", "6",
                                                     "--samples", "4", "--json", "docs/bench/separate-samples-4.json",
                                                     "--force"),
           "docs/priors.md (Above 0 dB: where the 10x is judged to its end)", 20.0),
    Figure("separate-travel", (QPSK, FAST), ("bench-separate", "--interference", FAST, "--frames", "100", "--sinr", "0",
                                             "--sinr", "3", "--travel", "10:4", "--samples", "4", "--json",
                                             "docs/bench/separate-travel.json", "--force"),
           "Separation (Time travel)", 32.0),
    Figure("separate-restart", (QPSK, FAST), ("bench-separate", "--interference", FAST, "--frames", "100", "--sinr", "0",
                                              "--sinr", "3", "--travel", "10:4", "--samples", "4", "--restart", "600,500,400,300",
                                              "--json", "docs/bench/separate-restart.json", "--force"),
           "Separation (Restarts from the mean)", 106.0),
    Figure("separate-restart-8", (QPSK, FAST), ("bench-separate", "--interference", FAST, "--frames", "100", "--sinr", "0",
                                                "--sinr", "3", "--travel", "10:4", "--samples", "8", "--restart",
                                                "600,500,400,300", "--row", "(100, travel 10x4, mean of 8", "--json",
                                                "docs/bench/separate-restart-8.json", "--force"),
           "Separation (Eight samples a round)", 110.0),
    Figure("samplers", (QPSK, CHIRP, "gmm2d"), ("bench-samplers", QPSK, CHIRP, "gmm2d", "--n", "1024", "--json",
                                                "docs/bench/samplers.json", "--plot", "docs/img/samplers.png", "--force"),
           "Few steps", 4.0),
    Figure("samplers-mix", (MIX,), ("bench-samplers", MIX, "--n", "512", "--no-timing", "--also", "ddim:100", "--also",
                                    "ddim:200", "--also", "ddpm:1000", "--json", "docs/bench/samplers-mix.json", "--force"),
           "docs/priors.md (rf-mix's missing chirps)", 6.0),
    Figure("showcase", (QPSK, CHIRP), ("showcase", "--out", "{scratch}", "--force"), "the top of the README (make demo)",
           0.5, copies=(("reconstruction.png", "docs/img/demo-reconstruction.png"),
                        ("separation.png", "docs/img/demo-separation.png"))),
    # last: it reads the ledger and the evaluate figures above (where each prior stands today)
    Figure("priors-progress", (QPSK, FAST, MIX, CHIRP), ("priors", "progress", "--plot", "docs/img/priors-progress.png",
                                                         "--json", "docs/bench/priors-progress.json", "--force"),
           "Training on a GPU (Where the priors stand)", 0.1),
)


def select(priors: list[str], names: list[str] | None = None) -> list[Figure]:
    """The figures that read any of ``priors`` (all of them when none is named), and of those the ones
    called ``names`` when given."""
    known = sorted({p for f in FIGURES for p in f.priors})
    for p in priors:
        if p not in known:
            raise InputError(f"no README figure reads a prior named {p!r}: expected one of {', '.join(known)}")
    named = {f.name for f in FIGURES}
    for n in names or []:
        if n not in named:
            raise InputError(f"no README figure is called {n!r}: `edgediff priors figures --list` names them")
    chosen = [f for f in FIGURES if (not priors or set(f.priors) & set(priors)) and (not names or f.name in names)]
    if names and not chosen:
        raise InputError(f"none of the figures {', '.join(names)} reads {', '.join(priors)}: drop --prior or --figure")
    return chosen


def command(figure: Figure, scratch: Path) -> list[str]:
    return [sys.executable, "-m", "edgediff", *(a.replace("{scratch}", str(scratch)) for a in figure.args)]


def run(figures: list[Figure], root: Path = ROOT, logs: Path | None = None,
        log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run each figure's command from ``root`` in turn; a failing one is reported and the rest still run
    (an hour of measurements is too dear to lose to one). Each command's whole output (its tables,
    for the prose) goes to ``logs/NAME.log`` (default ``root/out/figures``). Returns {name: {"exit",
    "seconds"}}."""
    logs = logs or root / "out" / "figures"
    logs.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}
    for i, f in enumerate(figures, 1):
        log(f"[{i}/{len(figures)}] {f.name} ({f.section}; about {f.minutes:g} min): edgediff {' '.join(f.args)}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgediff-figure-") as tmp:
            res = subprocess.run(command(f, Path(tmp)), cwd=root, capture_output=True, text=True)
            if res.returncode == 0:
                for src, dst in f.copies:
                    shutil.copyfile(Path(tmp) / src, root / dst)
        seconds = time.perf_counter() - start
        (logs / f"{f.name}.log").write_text(f"$ edgediff {' '.join(f.args)}\n{res.stdout}{res.stderr}")
        done[f.name] = {"exit": res.returncode, "seconds": round(seconds, 1)}
        if res.returncode == 0:
            mark([f], root, seconds=seconds)
        tail = (res.stdout.strip().splitlines() or [""])[-1] if res.returncode == 0 else res.stderr.strip()[-500:]
        log(f"    exit {res.returncode} after {seconds:.0f} s: {tail}")
    return done


def identity(prior: str) -> dict[str, str]:
    """What makes a shipped prior this one: the run it was exported from, its model's hash and its own
    DDIM grid, if it has one."""
    from edgediff.runtime import grids
    from edgediff.runtime.bundle import MANIFEST, resolve

    manifest = json.loads((resolve(prior) / MANIFEST).read_text())  # a shipped prior's: ours, not a user's
    run = Path(str(manifest.get("source_run", {}).get("path", ""))).name
    found = {"stage": run, "model_sha256": manifest["files"]["model.onnx"]["sha256"]}
    if manifest.get("sampling"):  # its own DDIM grid: the default sampler's figures depend on it too
        found["grid"] = str(manifest["sampling"].get("spec") or manifest["sampling"].get("timesteps"))
        method = grids.method_of(manifest["sampling"])
        if method != "ddim":  # the default sampler it names changes them too
            found["grid"] += f" ({method})"
    return found


def _identities(figures: list[Figure]) -> dict[str, dict[str, str]]:
    """Each prior the figures read, identified once (one manifest read a prior, not one a figure)."""
    return {p: identity(p) for p in {p for f in figures for p in f.priors}}


def _read_record(root: Path) -> dict[str, Any]:
    path = root / RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("figures", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"{path}: not the figures record ({exc}); fix it or delete it (every figure then reads "
                         "as never recorded)") from None


def mark(figures: list[Figure], root: Path = ROOT, priors: list[str] | None = None,
         seconds: float | None = None) -> None:
    """Record that ``figures`` were measured with the shipped priors as they are now (only ``priors``
    among theirs when given: a figure of two priors re-measured for one keeps the other's record);
    ``seconds``, what the run took here, is kept beside (hosts differ from the nominal minutes by 3x)."""
    record = _read_record(root)
    today = time.strftime("%Y-%m-%d")
    now = _identities(figures)
    for f in figures:
        entry = record.setdefault(f.name, {"priors": {}})
        if seconds is not None:
            entry["last_run"] = {"seconds": round(seconds), "recorded": today}
        entry["args"] = list(f.args)  # the command it was measured with: a later change to it makes it stale
        for p in f.priors:
            if priors is None or p in priors:
                entry["priors"][p] = {**now[p], "recorded": today}
    (root / RECORD).parent.mkdir(parents=True, exist_ok=True)
    write_json(root / RECORD, {"_about": "Which shipped priors each README figure was last measured with "
                                         "(edgediff priors figures records it; --stale reads it).",
                               "figures": dict(sorted(record.items()))})


def last_seconds(figures: list[Figure], root: Path = ROOT) -> dict[str, int]:
    """{figure name: seconds its last run by :func:`run` took} for the figures that have one."""
    record = _read_record(root)
    return {f.name: int(record[f.name]["last_run"]["seconds"]) for f in figures
            if isinstance(record.get(f.name, {}).get("last_run"), dict)}


def stale(figures: list[Figure], root: Path = ROOT) -> dict[str, str]:
    """{figure name: why it is stale} for the figures not measured with today's shipped priors."""
    record, why, now = _read_record(root), {}, _identities(figures)
    for f in figures:
        measured = record.get(f.name, {}).get("priors", {})
        reasons = []
        for p in f.priors:
            then = measured.get(p)
            if then is None:
                reasons.append(f"{p}: never recorded")
            elif then.get("model_sha256") != now[p]["model_sha256"]:
                reasons.append(f"{p}: measured with {then.get('stage') or 'another model'}, shipped is {now[p]['stage']}")
            elif f.samples_by_default and then.get("grid") != now[p].get("grid"):
                reasons.append(f"{p}: measured on {then.get('grid') or 'the trailing grid'}, "
                               f"shipped samples on {now[p].get('grid') or 'the trailing grid'}")
        args = record.get(f.name, {}).get("args")  # absent from the records made before stop 78
        if args is not None and args != list(f.args):
            reasons.append(f"its command changed since it was measured with `edgediff {' '.join(args)}`")
        if reasons:
            why[f.name] = "; ".join(reasons)
    return why
