"""Where each shipped prior stands against its target: score against frames seen, the trend per
doubling of frames, what that trend asks of a GPU, and the GPU and CPU seconds spent so far.

Everything comes from ``priors/ledger.json`` (one entry per adopted stage: frames, seconds, where it
trained, and the score ``priors adopt`` measured with that day's default sampler) and, for where a
prior stands now, from the README's ``evaluate`` figure of it (``docs/bench/evaluate-*.json``, the
shipped default sampler today, scored the way ``adopt`` scores). Scores are lower-is-better: blind EVM
median in dB (QPSK priors), mean-PSD LSD in dB (rf-chirp), and for rf-mix the chirp-share error in
points plus the QPSK frames' EVM over ten (its target, 5 points and -20 dB, reads 3 on that scale).

The trend is a least-squares line of score against log2(frames seen) through the scored stages within
:data:`TREND_DOUBLINGS` doublings of the frames seen now: the per-doubling slope issue 19 tracks. Its
projection (doublings, frames, and GPU hours at the fastest rate a GPU stage of these priors trained at)
is an extrapolation of a record whose samplers changed along the way; it tells which priors frames
alone can carry to their targets, not when they will arrive.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    score: float  # the target on the ledger's scale (lower is better)
    measure: str  # what the score is
    figure: str  # the evaluate JSON (docs/bench) that says where the shipped prior stands now


#: Issue 19's targets on the ledger's scale, and the README figure each is measured by.
TARGETS = {
    "rf-qpsk": Target(-25.0, "blind EVM median (dB)", "evaluate-rf-qpsk-2048.json"),
    "rf-qpsk-fast": Target(-22.0, "blind EVM median (dB)", "evaluate-rf-qpsk-fast.json"),
    "rf-mix": Target(3.0, "chirp-share error (points) + EVM / 10", "evaluate-rf-mix.json"),
    "rf-chirp": Target(1.0, "mean-PSD LSD (dB)", "evaluate-rf-chirp-4096.json"),
}
#: The trend is fitted through the scored stages within this many doublings of the frames seen now.
TREND_DOUBLINGS = 2.0
_GPU_WORDS = ("h100", "h200", "a100", "l40", "gpu", "cuda")


def device_kind(device: str) -> str:
    """"GPU", "CPU" or "unknown" from a ledger stage's free-text device ("H200 (7 runs shared)",
    "2 CPU cores (one thread, ...)", "cuda (5 min: ...)" as ``priors adopt`` writes it), read before
    its first bracket."""
    text = device.split("(")[0].lower()  # the device itself; the note in brackets may name others
    if any(w in text for w in _GPU_WORDS):
        return "GPU"
    return "CPU" if "cpu" in text else "unknown"


@dataclass
class Progress:
    prior: str
    measure: str
    target: float
    frames_seen: int
    points: list[dict[str, Any]]  # scored stages: run, frames_seen (cumulative), score, device
    current: float | None  # the shipped prior's score with today's default sampler (None: no figure)
    seconds: dict[str, float]  # recorded training seconds by device kind, adopted and declined stages alike
    unrecorded: dict[str, int]  # stages (adopted or declined) without a seconds record, by device kind
    declined: int
    slope: float | None = None  # score change per doubling of frames seen (fitted)
    intercept: float | None = None  # the fitted line's score at log2(frames seen) = 0
    fit_from: int | None = None  # the fit's first point, frames seen
    fit_points: int = 0  # scored stages the fit went through
    gpu_rate: float | None = None  # frames/s the projection's GPU hours assume (:func:`gpu_rate`)
    projection: dict[str, Any] = field(default_factory=dict)

    @property
    def now(self) -> float | None:
        """Where the prior stands: today's figure, else its last scored stage."""
        return self.current if self.current is not None else (self.points[-1]["score"] if self.points else None)


def stages(entry: dict[str, Any], prior: str) -> list[dict[str, Any]]:
    """The entry's stages with their cumulative frames seen, lineage and device kind, checked against the
    ledger's own totals. A stage that started from another prior's weights (``from_prior``: a transfer)
    starts a new lineage, whose frames of this prior's data are counted afresh."""
    rows, seen, lineage = [], 0, 0
    if not isinstance(entry.get("stages", []), list):
        raise InputError(f"ledger: {prior}'s stages are not a list; restore priors/ledger.json from git")
    for i, s in enumerate(entry.get("stages", [])):
        frames = s.get("frames") if isinstance(s, dict) else None
        if not isinstance(frames, (int, float)) or frames < 0:
            raise InputError(f"ledger: {prior}'s stage {i + 1} has no frame count; restore priors/ledger.json from git")
        if s.get("from_prior"):
            seen, lineage = 0, lineage + 1
        seen += int(frames)
        rows.append({**s, "frames_seen": seen, "lineage": lineage, "kind": device_kind(str(s.get("device", "")))})
    if rows and entry.get("frames_seen") not in (None, seen):
        raise InputError(f"ledger: {prior}'s stages add up to {seen} frames but it records {entry['frames_seen']}; "
                         "restore priors/ledger.json from git")
    return rows


def fit_trend(points: list[dict[str, Any]], frames_now: int) -> tuple[float, float, int, int] | None:
    """(score change per doubling, score at log2(frames) = 0, first frames seen used, points used) through
    the points within :data:`TREND_DOUBLINGS` doublings of ``frames_now``; None with fewer than two
    distinct frame counts."""
    first = frames_now / 2**TREND_DOUBLINGS
    use = [p for p in points if p["frames_seen"] >= first]
    x = np.log2([p["frames_seen"] for p in use])
    if len(set(x.tolist())) < 2:
        return None
    slope, intercept = np.polyfit(x, [p["score"] for p in use], 1)
    return float(slope), float(intercept), int(use[0]["frames_seen"]), len(use)


def project(p: Progress) -> dict[str, Any]:
    """What the trend asks to reach the target from where the prior stands now."""
    now = p.now
    if now is None:
        return {"status": "no score recorded"}
    if now <= p.target:
        return {"status": "met"}
    if p.slope is None:
        return {"status": "no trend: fewer than two scored stages in the fit's range"}
    if p.slope >= 0:
        return {"status": f"not improving with frames ({p.slope:+.2f} per doubling): frames alone will not reach it"}
    doublings = (p.target - now) / p.slope
    frames = p.frames_seen * 2**doublings
    out = {"status": "open", "doublings": doublings, "frames": frames}
    if p.gpu_rate:
        out["gpu_hours"] = (frames - p.frames_seen) / p.gpu_rate / 3600
    return out


def _current(figure: Path, prior: str, score: Any) -> float | None:
    """The shipped prior's score in its README figure (None where the figure is not there)."""
    if not figure.is_file():
        return None
    try:
        return float(score(prior, json.loads(figure.read_text())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{figure}: not an evaluate report ({type(exc).__name__}: {exc}); measure it again with "
                         f"edgediff priors figures --prior {prior}, or restore it from git") from None


def timed(stage: dict[str, Any]) -> bool:
    """Whether a stage recorded its training seconds."""
    return isinstance(stage.get("seconds"), (int, float)) and stage["seconds"] > 0


def gpu_rate(rows: list[dict[str, Any]]) -> float | None:
    """The fastest frames/s any timed GPU stage among ``rows`` trained at (the shipped U-Net priors share
    one architecture, so one prior's rate is another's)."""
    return max((s["frames"] / s["seconds"] for s in rows if s["kind"] == "GPU" and timed(s)), default=None)


def progress(ledger: dict[str, Any], bench: Path = ROOT / "docs" / "bench") -> list[Progress]:
    """One :class:`Progress` per prior that has a target, in :data:`TARGETS` order."""
    from edgediff.tools.priors_adopt import score

    entries = {prior: e for prior in TARGETS if isinstance(e := ledger.get(prior), dict)}
    staged = {prior: stages(entry, prior) for prior, entry in entries.items()}
    found, rate = [], gpu_rate([s for rows in staged.values() for s in rows])
    for prior, rows in staged.items():
        target = TARGETS[prior]
        seconds: dict[str, float] = {}
        unrecorded: dict[str, int] = {}
        # time spent is every stage's, kept or not: a declined stage's minutes were spent all the same
        declined = [{**d, "kind": device_kind(str(d.get("device", "")))} for d in entries[prior].get("declined", [])
                    if isinstance(d, dict)]
        for s in [*rows, *declined]:
            if timed(s):
                seconds[s["kind"]] = seconds.get(s["kind"], 0.0) + float(s["seconds"])
            else:
                unrecorded[s["kind"]] = unrecorded.get(s["kind"], 0) + 1
        points = [{"run": s.get("run"), "frames_seen": s["frames_seen"], "score": float(s["score"]), "device": s["kind"],
                   "lineage": s["lineage"]} for s in rows if isinstance(s.get("score"), (int, float))]
        if not all(math.isfinite(pt["score"]) for pt in points):
            raise InputError(f"ledger: {prior} records a score that is not a number; restore priors/ledger.json from git")
        current = _current(bench / target.figure, prior, score)
        p = Progress(prior, target.measure, target.score, rows[-1]["frames_seen"] if rows else 0, points, current,
                     seconds, unrecorded, len(entries[prior].get("declined", [])), gpu_rate=rate)
        # the trend is the current lineage's: frames an earlier lineage saw are not behind these weights
        trend = fit_trend([q for q in points if q["lineage"] == rows[-1]["lineage"]], p.frames_seen)
        if trend is not None:
            p.slope, p.intercept, p.fit_from, p.fit_points = trend
        p.projection = project(p)
        found.append(p)
    if not found:
        raise InputError(f"the ledger names none of {', '.join(TARGETS)}: restore priors/ledger.json from git")
    return found


def table(found: list[Progress]) -> list[str]:
    """The rows ``edgediff priors progress`` prints."""
    lines = [f"{'prior':<13} {'frames seen':>11}  {'now (target)':<18} {'per doubling (fit points)':>26}  "
             f"{'GPU / CPU time':<17} to target"]
    for p in found:
        now = "-" if p.now is None else f"{p.now:.2f}"
        slope = "-" if p.slope is None else f"{p.slope:+.2f} ({p.fit_points})"
        time_ = f"{p.seconds.get('GPU', 0) / 60:.0f} min / {p.seconds.get('CPU', 0) / 3600:.1f} h"
        j = p.projection
        to = j["status"] if j["status"] != "open" else (
            f"{j['doublings']:.1f} doublings: {j['frames']:.2g} frames"
            + (f", {j['gpu_hours']:.3g} GPU hours at {p.gpu_rate / 1e3:.0f} k frames/s" if "gpu_hours" in j else ""))
        lines.append(f"{p.prior:<13} {p.frames_seen / 1e6:>9.1f} M  {now + f' (<= {p.target:g})':<18} {slope:>26}  "
                     f"{time_:<17} {to}")
    missing = [f"{p.prior} {sum(p.unrecorded.values())}" for p in found if p.unrecorded]
    lines.append("times: the ledger's recorded training seconds (stages that shared one chip count their own wall time each)"
                 + (f"; stages with no seconds recorded: {', '.join(missing)}" if missing else ""))
    return lines


def as_json(found: list[Progress]) -> dict[str, Any]:
    return {"_about": "edgediff priors progress: each prior's ledger scores against frames seen, the fitted trend per "
                      f"doubling (stages within {TREND_DOUBLINGS:g} doublings of now) and what it projects",
            "priors": {p.prior: {**asdict(p), "now": p.now} for p in found}}
