"""Judge generated frames against held-out frames of the dataset a model was trained on.

Reports (see :mod:`edgediff.runtime.fidelity`): mean-PSD log-spectral distance, envelope W1, and by
dataset: the blind EVM distribution (PSK datasets), the chirp IF-linearity error (chirps), both
for rf-mix, whose frames are told apart by their IF linearity (chirps below ``CHIRP_SPLIT``).
Held-out frames go through the same measurements, so every figure has its floor beside it; the
distances (LSD, envelope W1) get theirs from a second held-out set measured against the first
(``floor``): a model that generated the data itself would score about that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError
from edgediff.runtime.fidelity import (chirp_linearity, envelope_w1, evm_split, evm_summary, log_spectral_distance_db,
                                       pulse_duty)
from edgediff.runtime.receivers import PskFormat, blind_receive
from edgediff.train import rf
from edgediff.train.datasets import BUILTINS, DataConfig, held_out

#: The receiver each built-in digital dataset needs.
PSK_DATASETS = {"rf-qpsk": rf.QPSK, "rf-qpsk-fast": rf.QPSK_FAST, "rf-mix": rf.QPSK}
CHIRP_DATASETS = ("rf-chirp", "rf-mix")
#: IF-linearity error (cycles/sample) below which an rf-mix frame counts as a chirp: chirps measure
#: <= 0.016 at 20 dB SNR, QPSK frames >= 0.04.
CHIRP_SPLIT = 0.03


def psk_format(dataset: str) -> PskFormat:
    if dataset not in PSK_DATASETS:
        raise InputError(f"dataset {dataset!r} is not a PSK dataset: EVM needs one of {', '.join(PSK_DATASETS)}")
    return rf.psk_format(PSK_DATASETS[dataset])


def reference(dataset: str | None, n: int, length: int, seed: int = 0) -> np.ndarray:
    """``n`` held-out frames (N, 2, L) of a built-in dataset, raw units."""
    if dataset not in BUILTINS or dataset == "gmm2d":
        raise InputError(f"dataset {dataset!r} has no held-out RF frames here: pass --data FILE.npy with reference frames")
    return held_out(DataConfig(dataset=dataset, length=length, seed=seed), n)


def chirps_by_linearity(linearity: np.ndarray) -> np.ndarray:
    """(N,) True for the frames whose IF-linearity error (``chirp_linearity``) says chirp."""
    return np.nan_to_num(linearity, nan=np.inf) < CHIRP_SPLIT


def is_chirp(frames: np.ndarray) -> np.ndarray:
    """(N,) True for the I/Q frames (N, 2, L) that the IF-linearity classifier calls chirps."""
    return chirps_by_linearity(chirp_linearity(rf.from_iq(np.asarray(frames, np.float64)).astype(np.complex128)))


def _frame_report(frames: np.ndarray, dataset: str, evm: bool) -> dict[str, Any]:
    report: dict[str, Any] = {}
    psk = frames
    if dataset in CHIRP_DATASETS:
        lin = chirp_linearity(frames)
        is_chirp = chirps_by_linearity(lin)
        psk = frames[~is_chirp] if dataset == "rf-mix" else frames[:0]
        report["chirp_share"] = float(np.mean(is_chirp))
        report["chirp_linearity_median"] = float(np.median(lin[is_chirp])) if is_chirp.any() else None
        pulses = frames if dataset == "rf-chirp" else frames[is_chirp]
        report["pulse_duty_median"] = float(np.median(pulse_duty(pulses))) if len(pulses) else None
        if dataset == "rf-chirp":
            report["chirp_linearity_median"] = float(np.nanmedian(lin)) if np.isfinite(lin).any() else None
    if evm and dataset in PSK_DATASETS and len(psk):
        received = blind_receive(psk, psk_format(dataset))
        report["evm"] = evm_summary(received.evm_db) | {"split": evm_split(received.symbols, received.decisions)}
    return report


def evaluate_frames(generated: np.ndarray, reference_frames: np.ndarray, dataset: str, evm: bool = True,
                    second: np.ndarray | None = None) -> dict[str, Any]:
    """Every measure for (N, 2, L) generated and (M, 2, L) held-out frames, both in user units
    (``evm=False`` skips the receiver); ``second``, more held-out frames, gives the distances' floor."""
    for name, x in (("generated", generated), ("held-out", reference_frames), ("second held-out", second)):
        if x is None:
            continue
        if x.ndim != 3 or x.shape[1] != 2:
            raise InputError(f"{name} frames have shape {x.shape}: expected I/Q frames (N, 2, L)")
        if not np.isfinite(x).all():
            raise InputError(f"{name} frames hold NaN or inf values")
    g, h = _iq(generated), _iq(reference_frames)
    report = {
        "dataset": dataset,
        "frames": {"generated": len(g), "held_out": len(h)},
        "psd_lsd_db": log_spectral_distance_db(g, h),
        "envelope_w1": envelope_w1(g, h),
        "generated": _frame_report(g, dataset, evm),
        "held_out": _frame_report(h, dataset, evm),
    }
    if second is not None:
        s = _iq(second)
        report["floor"] = {"frames": len(s), "psd_lsd_db": log_spectral_distance_db(s, h), "envelope_w1": envelope_w1(s, h)}
    return report


def _iq(frames: np.ndarray) -> np.ndarray:
    return rf.from_iq(frames).astype(np.complex128)


def describe(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of an evaluation report."""
    lines = [f"{report['dataset']}: {report['frames']['generated']} generated vs {report['frames']['held_out']} held-out frames",
             f"  mean-PSD log-spectral distance {report['psd_lsd_db']:.2f} dB, envelope W1 {report['envelope_w1']:.4f} (x RMS)"]
    if "floor" in report:
        floor = report["floor"]
        lines.append(f"  {'floor':9s} {floor['psd_lsd_db']:.2f} dB and {floor['envelope_w1']:.4f}: {floor['frames']} more "
                     "held-out frames against these (what the data itself would score)")
    for who in ("generated", "held_out"):
        part = report[who]
        if "evm" in part:
            e = part["evm"]
            lines.append(f"  {who:9s} blind EVM median {e['median_db']:.1f} dB, p90 {e['p90_db']:.1f} dB, "
                         f"{100 * e['share_below_15db']:.0f}% of {e['frames']} frames below -15 dB")
            if "split" in e:
                split, corr = e["split"], e["split"]["phase_correlation"]
                lines.append(f"  {'':9s} error in phase {split['phase_db']:.1f} dB, in amplitude {split['amplitude_db']:.1f} dB; "
                             f"{split['detrended_db']:.1f} dB once each frame's phase wander (quadratic) is taken out; "
                             f"phase errors correlated {' / '.join(f'{v:.2f}' for v in corr.values())} "
                             f"at {' / '.join(corr)} symbols apart")
        if part.get("chirp_linearity_median") is not None:
            lines.append(f"  {who:9s} chirp IF-linearity error median {part['chirp_linearity_median']:.4f} cycles/sample"
                         + (f", chirp share {100 * part['chirp_share']:.0f}%" if report["dataset"] == "rf-mix" else ""))
        if part.get("pulse_duty_median") is not None:
            lines.append(f"  {who:9s} pulse on for {100 * part['pulse_duty_median']:.0f}% of the frame (median)")
    return lines
