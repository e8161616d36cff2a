"""What each U-Net variant of the priors study costs where the prior runs.

The study (``edgediff priors continue --study``) buys EVM with width and depth on the GPU; a board
next to a radio pays for it per network evaluation. This module measures that price on this
machine's CPU, each variant a real bundle: per-NFE latency with ONNX Runtime at batch 1 and 16 (the
variants timed in alternation, round by round, so a busy moment hits them all), parameters, FLOPs per
frame, and megabytes (fp32 model, int8 model, reference and stats: what a shipped bundle holds).
Latency does not depend on the weights, so each bundle is exported from a run of one training step.

:func:`quality_rows` joins those costs with the study runs' learning curves (their last point) for
the quality-against-latency figure, the shipping limits drawn in: the default's per-NFE latency x2
and 12 MB per bundle (issue 19).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from edgediff.runtime.errors import InputError

#: The variant every ratio is taken against: the shipped priors' network.
BASELINE = "qpsk-w32"
#: What a larger variant may cost and still ship as the default.
LIMITS = {"latency_ratio": 2.0, "bundle_mb": 12.0}
BATCHES = (1, 16)


def variants(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """name -> U-Net changes, from the study's own table (one source of truth)."""
    from edgediff.tools.priors_continue import STUDY

    chosen = names or list(STUDY)
    unknown = [n for n in chosen if n not in STUDY]
    if unknown:
        raise InputError(f"study variant {unknown[0]!r} is unknown: expected one of {', '.join(STUDY)}")
    return {n: STUDY[n] for n in ([BASELINE] if BASELINE not in chosen else []) + chosen}


def variant_bundle(name: str, changes: dict[str, Any], folder: Path) -> tuple[Path, Any]:
    """A real bundle of the variant's network (one training step; the int8 model beside it)."""
    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle
    from edgediff.export.quantize import quantize
    from edgediff.runtime.bundle import Bundle
    from edgediff.tools import priors
    from edgediff.train.loop import fit

    config = priors.run_config(priors.PriorRecipe("rf-qpsk", steps=1, batch=4, warmup=1, n_frames=256))
    config = replace(config, model=replace(config.model, **changes),
                     train=replace(config.train, checkpoint_every=1, log_every=1))
    fit(config, folder / "runs" / name, device="cpu", progress=False)
    bundle = folder / "bundles" / name
    bundle.parent.mkdir(parents=True, exist_ok=True)
    export_bundle(folder / "runs" / name, bundle, OnnxExportOptions())
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its histogram settings
        quantize(Bundle.open(bundle), bundle / "model.int8.onnx", count=32)
    return bundle, config.model


def measure(names: list[str] | None = None, rounds: int = 5, repeats: int = 20,
            log: Callable[[str], Any] = lambda _: None) -> dict[str, Any]:
    """Cost of every variant (and the baseline), timed side by side in this process."""
    from edgediff.runtime import load
    from edgediff.tools.bench import machine, nfe_latency
    from edgediff.tools.bench_train import flops_per_frame

    chosen = variants(names)
    report: dict[str, Any] = {"machine": machine(), "baseline": BASELINE, "limits": LIMITS, "batches": list(BATCHES),
                              "rounds": rounds, "repeats": repeats, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        denoisers = {}
        for name, changes in chosen.items():
            bundle, model_config = variant_bundle(name, changes, Path(tmp))
            d = load(bundle, backend="ort")
            mb = {f: (bundle / f).stat().st_size / 1e6 for f in ("model.onnx", "model.int8.onnx", "reference.npz", "stats.npz")
                  if (bundle / f).is_file()}
            flops = flops_per_frame(model_config, model_config.sample_shape)
            report["variants"][name] = {"changes": changes, "parameters": d.bundle.manifest["model"]["parameters"],
                                        "gflop_forward": flops["forward"] / 1e9, "megabytes": mb,
                                        "bundle_mb": sum(mb.values())}
            denoisers[name] = d
            log(f"{name}: {report['variants'][name]['parameters'] / 1e6:.2f} M parameters, "
                f"{report['variants'][name]['bundle_mb']:.1f} MB")
        times: dict[tuple[str, int], list[float]] = {}
        for r in range(rounds):
            for name, d in denoisers.items():
                for b in BATCHES:
                    times.setdefault((name, b), []).append(nfe_latency(d, b, 5 if r == 0 else 2, repeats)["median"])
    base = {b: statistics.median(times[(BASELINE, b)]) for b in BATCHES}
    for name, row in report["variants"].items():
        row["latency_ms"] = {str(b): 1e3 * statistics.median(times[(name, b)]) for b in BATCHES}
        row["latency_ratio"] = {str(b): statistics.median(times[(name, b)]) / base[b] for b in BATCHES}
        row["within_limits"] = (max(row["latency_ratio"].values()) <= LIMITS["latency_ratio"]
                                and row["bundle_mb"] <= LIMITS["bundle_mb"])
        log(table_line(name, row))
    return report


def table_line(name: str, row: dict[str, Any]) -> str:
    lat = "  ".join(f"b{b} {row['latency_ms'][b]:6.2f} ms (x{row['latency_ratio'][b]:.2f})" for b in row["latency_ms"])
    return (f"{name:>14}  {row['parameters'] / 1e6:5.2f} M  {row['gflop_forward']:5.3f} GFLOP  {row['bundle_mb']:5.1f} MB  "
            f"{lat}  {'within' if row['within_limits'] else 'over'} the limits")


def quality_rows(cost: dict[str, Any], runs: Path) -> list[dict[str, Any]]:
    """Each costed variant with a study run under ``runs``: its last curve point beside its cost."""
    rows = []
    for name, row in cost["variants"].items():
        path = runs / name / "curve.json"
        if not path.is_file():
            continue
        try:
            curve = [p for p in json.loads(path.read_text()) if "evm" in p.get("generated", {})]
            batch = int(json.loads((runs / name / "config.json").read_text())["train"]["batch"])
            if not curve:
                continue
            last = curve[-1]
            rows.append({"name": name, **row, "step": int(last["step"]), "frames_seen": int(last["step"]) * batch,
                         "evm_median_db": float(last["generated"]["evm"]["median_db"]),
                         "share_below_15db": float(last["generated"]["evm"]["share_below_15db"])})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{runs / name}: unreadable study run ({type(exc).__name__}: {exc}); "
                             "unpack it again from the GPU session's parts") from None
    if not rows:
        raise InputError(f"{runs}: no study run with an EVM curve for {', '.join(cost['variants'])}; "
                         "train them with `edgediff priors continue --study NAME` (make gpu-priors) and unpack the runs here")
    return rows


def read_cost(path: Path) -> dict[str, Any]:
    """The JSON of `edgediff priors cost`, checked for what the figure needs."""
    try:
        cost = json.loads(path.read_text())
        ok = isinstance(cost, dict) and isinstance(cost.get("variants"), dict) and "limits" in cost \
            and cost.get("baseline") in cost["variants"] and all(
            {"latency_ms", "latency_ratio", "bundle_mb"} <= set(v) for v in cost["variants"].values())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise InputError(f"{path}: not the JSON of `edgediff priors cost`; measure it with `edgediff priors cost --json {path}`")
    return cost
