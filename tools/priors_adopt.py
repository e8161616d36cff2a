"""Back from the GPU: measure a stage run against the shipped prior, adopt it when it is better.

``edgediff priors adopt`` exports a stage run (``NAME-sK``), measures it with the ``sample`` default
against the bundle in ``priors/``, replaces that bundle only when the stage is better (carrying a
gated int8 model where one ships) and records the stage, with the unadopted stages it continued, in
``priors/ledger.json``. The GPU call that trains the stages is :mod:`edgediff.tools.priors_continue`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from edgediff.runtime.atomic import atomic_directory, write_json
from edgediff.runtime.errors import InputError
from edgediff.tools.priors_continue import CONTINUED, GROWN, LEDGER, prior_of, read_ledger, stage_number

#: A stage better than the shipped prior by less than this at sampler seed 0 (the score's unit: dB of EVM,
#: dB of LSD for rf-chirp, share points plus EVM/10 for rf-mix) is within one draw of it: one bundle's EVM
#: moves 0.2 dB between sampler seeds on 2048 frames (rf-qpsk-fast, stop 64), and a chirp share by a point
#: (binomial). Such a stage is measured again, beside the shipped prior, at ``CONFIRM_SEEDS`` and adopted
#: only if it is better at each of them (rf-qpsk-fast's stage 19 was adopted on -15.69 against -15.68).
#: EVM's margin is 0.3 dB since stop 66: a stage's difference to the shipped prior, both measured side by side
#: on the same frames, moved from -0.22 to +0.19 dB between sampler seeds 0, 1 and 2 (rf-qpsk-fast's stages
#: 19 against 16, 20 against 19 and an average of 20 and 21's weights: -0.18/-0.19/0.00, -0.06/+0.19/0.00,
#: -0.18/+0.18/-0.22), so a gain of 0.18 dB at one seed, adopted under the 0.1 dB margin, can be a draw.
WITHIN_A_DRAW = {"rf-chirp": 0.05, "rf-mix": 1.0}
WITHIN_A_DRAW_EVM_DB = 0.3
CONFIRM_SEEDS = (1, 2)


def _summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}


def stage_frames(run: Path) -> tuple[int, float]:
    """(frames seen, seconds) of a finished stage run, from its config and summary."""
    from edgediff.train.config import RunConfig

    config = RunConfig.load(run)
    return config.train.steps * config.train.batch, float(_summary(run).get("seconds", 0.0))


def stage_device(run: Path) -> str:
    """Where and how a finished stage run trained, in the ledger's words, from its config and summary:
    "cpu (47 min: 12000 steps, batch 128, lr 0.00025, from rf-qpsk-s7)"."""
    from edgediff.train.config import RunConfig

    t, summary = RunConfig.load(run).train, _summary(run)
    start = f", from {Path(t.init_from).parent.name if t.init_from.endswith('.safetensors') else Path(t.init_from).name}" \
        if t.init_from else ""
    return (f"{summary.get('device', 'unknown device')} ({float(summary.get('seconds', 0.0)) / 60:.0f} min: "
            f"{t.steps} steps, batch {t.batch}, lr {t.lr:g}{start})")


def transferred_from(run: Path, prior: str) -> str | None:
    """The other prior whose weights ``run`` started from (``init_from`` a bundle or a run that learnt
    another data set: a transfer), else None."""
    from edgediff.train.bundle_weights import learnt_from
    from edgediff.train.config import RunConfig

    init = RunConfig.load(run).train.init_from
    learnt = learnt_from(init) if init else None
    if learnt is None:
        return None
    other = (learnt[1] or {}).get("dataset")
    return str(other) if other and other != prior else None


def unrecorded_parents(run: Path, name: str | tuple[str, ...], recorded: set[str],
                       log: Callable[[str], Any] = print) -> list[Path]:
    """The stage runs whose weights ``run`` continued (through ``init_from``, oldest first) that the
    ledger does not hold: a stage trained on from a stage that was never adopted (rf-qpsk-s6 from the
    H200's s5) saw those frames too. A parent is looked for where ``init_from`` names it, then beside
    ``run`` (stages come back from the device under another folder); one not found ends the chain."""
    from edgediff.train.config import RunConfig

    names = (name,) if isinstance(name, str) else name  # the prior's stages, and a grown variant's
    chain: list[Path] = []
    current = run
    while len(chain) < 100:
        init = RunConfig.load(current).train.init_from
        parent = Path(init).parent if init else None
        seen = recorded | {r.name for r in chain}
        if parent is None or all(stage_number(n, parent) is None for n in names) or parent.name in seen:
            break
        found = next((d for d in (parent, run.parent / parent.name) if (d / "config.json").is_file()), None)
        if found is None:
            log(f"{names[0]}: {run.name} continued {parent}, which is not here: its frames are not counted")
            break
        chain.append(found)
        current = found
    return chain[::-1]


def score(dataset: str, report: dict[str, Any]) -> float:
    """One number per prior, lower is better: blind EVM median (QPSK), LSD (chirp), the chirp-share
    error plus the QPSK frames' EVM in tens of dB (mix)."""
    gen = report["generated"]
    if dataset == "rf-chirp":
        return float(report["psd_lsd_db"])
    evm = gen.get("evm", {}).get("median_db", 0.0)
    if dataset == "rf-mix":
        return abs(gen.get("chirp_share", 0.0) - report["held_out"].get("chirp_share", 0.5)) * 100 + evm / 10
    return float(evm)


def within_a_draw(dataset: str) -> float:
    """The gain in ``dataset``'s score below which one sampler seed cannot tell a stage from the shipped prior."""
    return WITHIN_A_DRAW.get(dataset, WITHIN_A_DRAW_EVM_DB)


def confirm(candidate: Path, shipped: Path, n: int, held_out: int, dataset: str,
            log: Callable[[str], Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Measure a stage whose gain is within a draw and the shipped prior again, side by side at each of
    ``CONFIRM_SEEDS`` (the same held-out frames): (better at every seed, the seeds' scores). It stops at
    the first seed where the stage is not better: that seed decides, and the rest would cost minutes."""
    name, seeds = shipped.name, []
    for seed in CONFIRM_SEEDS:
        s_new = score(dataset, measure_bundle(candidate, n, seed=seed, held_out_seed=held_out))
        s_old = score(dataset, measure_bundle(shipped, n, seed=seed, held_out_seed=held_out))
        seeds.append({"seed": seed, "score": round(s_new, 3), "shipped_score": round(s_old, 3)})
        log(f"{name}: at sampler seed {seed} the stage scores {s_new:.2f} against the shipped {s_old:.2f}")
        if s_new >= s_old:
            return False, seeds
    return True, seeds


def parts(dataset: str, new: dict[str, Any], old: dict[str, Any]) -> dict[str, float] | None:
    """The numbers rf-mix's score adds up, the stage's beside the shipped prior's (kept in the ledger record, so
    it says which of them moved; None for the priors scored by one number)."""
    share, evm = ([r["generated"].get(k) for r in (new, old)] for k in ("chirp_share", "evm"))
    if dataset != "rf-mix" or None in share:
        return None
    record = {"chirp_share": share[0], "shipped_chirp_share": share[1],
              "data_chirp_share": new.get("held_out", {}).get("chirp_share")}
    if all(e and "median_db" in e for e in evm):
        record |= {"evm_median_db": evm[0]["median_db"], "shipped_evm_median_db": evm[1]["median_db"]}
    return {k: round(float(v), 4) for k, v in record.items() if v is not None}


def parts_words(p: dict[str, float]) -> str:
    """:func:`parts` in a log line."""
    words = [f"chirp share {100 * p['chirp_share']:.1f}% against the shipped {100 * p['shipped_chirp_share']:.1f}%"
             + (f" (data {100 * p['data_chirp_share']:.1f}%)" if "data_chirp_share" in p else "")]
    if "evm_median_db" in p:
        words.append(f"QPSK frames' EVM median {p['evm_median_db']:.2f} against {p['shipped_evm_median_db']:.2f} dB")
    return ", ".join(words)


def aside(new: dict[str, Any], old: dict[str, Any]) -> str | None:
    """What the score does not weigh but a human judging the stage should see: for chirp priors the
    pulses' duty and the envelope W1 of the stage and the shipped prior (the LSD sits near its floor)."""
    duty = [r["generated"].get("pulse_duty_median") for r in (new, old)]
    if None in duty:
        return None
    data = new.get("held_out", {}).get("pulse_duty_median")
    return (f"pulses on for {100 * duty[0]:.0f}% of the frame against the shipped {100 * duty[1]:.0f}%"
            + (f" (data {100 * data:.0f}%)" if data is not None else "")
            + f", envelope W1 {new['envelope_w1']:.3f} against {old['envelope_w1']:.3f}")


def measure_bundle(bundle: Path, n: int, seed: int = 0, held_out_seed: int | None = None) -> dict[str, Any]:
    """The `edgediff evaluate` figures of a bundle (sample default, ONNX Runtime), against the held-out
    frames of data seed ``held_out_seed`` (default: the bundle's own, as `evaluate` does)."""
    from edgediff.runtime import load
    from edgediff.runtime.generate import SampleRequest, generate
    from edgediff.tools.evaluate import evaluate_frames, reference

    d = load(bundle, backend="ort")
    data = d.bundle.manifest.get("data") or {}
    ref = reference(data.get("dataset"), n, d.sample_shape[-1],
                    int(data.get("seed", 0)) if held_out_seed is None else held_out_seed)
    return evaluate_frames(generate(d, SampleRequest(n=n, seed=seed)).x, ref, str(data.get("dataset")))


def data_seed(bundle: Path) -> int:
    """The data seed a bundle's run trained at (its held-out frames derive from it); 0 when unrecorded."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return int((manifest.get("data") or {}).get("seed", 0))


def _sampling(bundle: Path) -> dict[str, Any]:
    """A bundle's own grid record (manifest "sampling", with its sampler); {} when it has none."""
    return json.loads((bundle / "manifest.json").read_text()).get("sampling") or {}


def sampler_words(bundle: Path) -> str:
    """The ``sample`` default a bundle was measured with, in the ledger's words: "sde-dpmpp2m on
    999-700:3,...", or "ddim-50 (uniform)" for one without its own grid. A stage's score is that
    sampler's: the trend through the ledger mixes samplers wherever a prior's default changed."""
    record = _sampling(bundle)
    if not record:
        from edgediff.runtime.sampling import DEFAULT_STEPS

        return f"ddim-{DEFAULT_STEPS['ddim']} (uniform)"
    return f"{record.get('method', 'ddim')} on {record.get('spec') or str(record['steps']) + ' steps'}"


def _carry_grid(shipped: Path, candidate: Path) -> dict[str, Any]:
    """Give ``candidate`` the ``shipped`` bundle's own grid (and sampler), if it has one; returns it ({} when none)."""
    from edgediff.export.manifest import set_sampling

    record = _sampling(shipped)
    if record:
        set_sampling(candidate, record)
    return record


def _int8_record(shipped: Path) -> dict[str, Any]:
    """The shipped bundle's int8 record (how its int8 model was quantized and gated); {} when none."""
    path = shipped / "manifest.json"
    return (json.loads(path.read_text()).get("int8") if path.is_file() else None) or {}


def _carry_int8(shipped: Path, candidate: Path, log: Callable[[str], Any]) -> bool:
    """Give ``candidate`` an int8 model when the ``shipped`` bundle has one, quantized and gated with
    the shipped one's settings (calibration, seed, gate frames, weight bits: 8 where its record predates
    them): adopting new weights must not drop
    what ships. False when that gate fails; True when it passes or there is nothing to carry."""
    from edgediff.runtime.errors import BundleError
    from edgediff.tools.int8_gate import quantize_gated

    record = _int8_record(shipped)
    if not record:
        return True
    cal = record.get("calibration") or {}
    frames = (record.get("gate") or {}).get("frames")
    try:
        quantize_gated(candidate, str(cal.get("method", "percentile")), int(cal.get("inputs", 512)),
                       int(frames) if frames else None, int(cal.get("seed", 0)), log=log,
                       weight_bits=int(record.get("weight_bits", 8)))
    except BundleError as exc:
        log(str(exc))
        return False
    return True


def decline(ledger_path: Path, name: str, run: Path, s_new: float, s_old: float, n: int, why: str,
            log: Callable[[str], Any], device: str | None = None, measured: dict[str, Any] | None = None) -> None:
    """Record ``run`` as measured and kept out (the ledger's ``declined``, one record per run): the next
    GPU call neither continues from it (``priors continue``, ``priors carry``) nor reuses its name. The
    record says where and how it trained (``device``, else :func:`stage_device`'s words), as an adopted
    stage's does: a recipe that lost is worth as much to the next session as one that won. ``measured``: how
    the scores were taken, as an adopted stage records it (its sampler, and ``confirmed_at`` from :func:`confirm`)."""
    ledger = read_ledger(ledger_path)
    entry = ledger.setdefault(name, {"frames_seen": 0, "stages": []})
    frames, seconds = stage_frames(run)  # the time a declined stage took is spent all the same (priors progress)
    record = {"run": run.name, "score": round(s_new, 3), "shipped_score": round(s_old, 3), "measured_on": n, "why": why,
              "device": device or stage_device(run), "frames": frames, "seconds": round(seconds, 1), **(measured or {})}
    entry["declined"] = [d for d in entry.get("declined", []) if d.get("run") != run.name] + [record]
    write_json(ledger_path, ledger)
    log(f"{name}: {run.name} not adopted ({why}); recorded as declined in {ledger_path}: the next stage starts from the shipped prior")


def adopt(run: Path, out_root: Path, n: int, ledger_path: Path = LEDGER, log: Callable[[str], Any] = print,
          tolerance: tuple[float, float] | None = None, device: str | None = None, dry_run: bool = False) -> bool:
    """Export ``run`` and keep it as the shipped prior when it measures better than the bundle there
    (with an int8 model, quantized and gated as the shipped one was, when that one had one);
    every adopted stage is appended to the ledger with its figures. ``tolerance`` (atol, rtol; None
    for either: the export's) sets the export's parity gate, recorded in the bundle's manifest.
    ``device`` says where ``run`` trained, in the ledger (default: :func:`stage_device`'s words).
    ``dry_run`` measures and says which way it would go, and changes nothing (no int8 model, no ledger)."""
    import shutil
    import tempfile

    from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle

    variant = run.name.rsplit("-s", 1)[0]
    name = prior_of(variant)  # a grown stage replaces its prior
    if name not in CONTINUED or stage_number(variant, run) is None:
        raise InputError(f"{run}: not a stage run (expected NAME-sK with NAME one of {', '.join([*CONTINUED, *GROWN])})")
    scratch_parent = out_root.parent if out_root.parent.is_dir() else None  # a killed adopt leaves it named
    with tempfile.TemporaryDirectory(prefix="adopt-scratch-", dir=scratch_parent) as tmp:
        candidate = Path(tmp) / name
        atol, rtol = tolerance or (None, None)
        default = OnnxExportOptions()
        export_bundle(run, candidate, OnnxExportOptions(atol=default.atol if atol is None else atol,
                                                        rtol=default.rtol if rtol is None else rtol))
        shipped = out_root / name if (out_root / name / "manifest.json").is_file() else None
        carried = _carry_grid(shipped, candidate) if shipped else {}  # both measured, and shipped, on one grid
        if carried:
            log(f"{name}: the shipped prior's own grid carried over ({carried.get('spec')}); "
                "a stage that decides elsewhere may want it re-tuned (edgediff export grid)")
        # both against one set of held-out frames, the shipped prior's: each stage trains at its own seed
        # (priors continue), and a distance to another draw of the data moves by its own spread (rf-chirp's LSD)
        held_out = data_seed(shipped or candidate)
        new = measure_bundle(candidate, n, held_out_seed=held_out)
        old = measure_bundle(shipped, n, held_out_seed=held_out) if shipped else None
        dataset = new["dataset"]
        s_new, s_old = score(dataset, new), (score(dataset, old) if old else math.inf)
        log(f"{name}: stage {run.name} scores {s_new:.2f} against the shipped {s_old:.2f} (lower is better, {n} frames)")
        split = parts(dataset, new, old) if old else None
        if split:
            log(f"{name}: the score's parts: {parts_words(split)}")
        beside = aside(new, old) if old else None
        if beside:
            log(f"{name}: beside the score: {beside}")
        better, seeds, margin = s_new < s_old, [], within_a_draw(dataset)
        if better and shipped is not None and s_old - s_new < margin:
            log(f"{name}: better by {s_old - s_new:.3f}, within one draw (< {margin:g}): both are "
                f"measured again at sampler seeds {', '.join(map(str, CONFIRM_SEEDS))}; adopted only if better at each")
            better, seeds = confirm(candidate, shipped, n, held_out, dataset, log)
        measured = {"sampler": sampler_words(candidate), **({"confirmed_at": seeds} if seeds else {}),
                    **({"parts": split} if split else {})}
        if dry_run:
            gate = " (after the int8 gate)" if better and _int8_record(out_root / name) else ""
            log(f"{name}: dry run: {'would go on to adopt' if better else 'would keep the shipped prior'}{gate}; nothing changed")
            return better
        if not better:
            why = "measured no better than the shipped prior" if s_new >= s_old else (
                f"better by {s_old - s_new:.3f} at sampler seed 0, within one draw, but not at seed {seeds[-1]['seed']} "
                f"({seeds[-1]['score']:.2f} against {seeds[-1]['shipped_score']:.2f})")
            decline(ledger_path, name, run, s_new, s_old, n, why, log, device, measured)
            return False
        if not _carry_int8(out_root / name, candidate, lambda line: log(f"{name}: int8: {line}")):
            log(f"{name}: not adopted: the shipped prior has a gated int8 model and the stage's int8 model failed "
                "that gate; adopt by hand (edgediff export onnx, then export int8 with other settings) or train on "
                "(not declined: its float weights measured better, so the next call continues from them)")
            return False
        out_root.mkdir(parents=True, exist_ok=True)
        with atomic_directory(out_root / name, replace=True) as staged:  # the shipped one goes only once this is whole
            shutil.copytree(candidate, staged, dirs_exist_ok=True)
    ledger = read_ledger(ledger_path)
    entry = ledger.setdefault(name, {"frames_seen": 0, "stages": []})
    if entry.get("declined"):  # measured again, and adopted this time
        entry["declined"] = [d for d in entry["declined"] if d.get("run") != run.name]
    parents = unrecorded_parents(run, (name, variant), {s.get("run") for s in entry["stages"]}, log)
    for stage in [*parents, run]:
        frames, seconds = stage_frames(stage)
        origin = transferred_from(stage, name)  # another prior's weights: a new lineage, its frames counted afresh
        entry["frames_seen"] = (0 if origin else int(entry["frames_seen"])) + frames
        record = {"run": stage.name, "frames": frames, "seconds": round(seconds, 1),
                  "device": device if device and stage == run else stage_device(stage)}
        if origin:
            record["from_prior"] = origin
        if stage == run:
            record |= {"score": round(s_new, 3), "frames_seen_after": entry["frames_seen"], "measured_on": n, **measured}
        else:
            record |= {"frames_seen_after": entry["frames_seen"], "adopted_with": run.name}
        entry["stages"].append(record)
    write_json(ledger_path, ledger)
    log(f"{name}: adopted {run.name} into {out_root / name}; {entry['frames_seen'] / 1e6:.2f} M frames seen in all; "
        f"the README's figures of it are now stale: `edgediff priors figures --prior {name} --stale`")
    return True
