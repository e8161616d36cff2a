"""Quality against network calls: every sampler at a few NFE budgets, judged like the priors are.

gmm2d: mode shares against the mixture weights and the per-mode spread against the true stds.
RF bundles: mean-PSD log-spectral distance and the blind EVM (PSK) or chirp IF error against
held-out frames (:mod:`edgediff.tools.evaluate`). Each row also times a whole sampling run per
sample at batch 1 and 16. Distilled bundles add their own sampler at the NFE they were made for.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgediff.runtime import grids
from edgediff.runtime.bundle import label
from edgediff.runtime.generate import SampleRequest, for_bundle, generate

#: (sampler, NFE) rows measured for every bundle.
GRID = (("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp2m", 5), ("dpmpp2m", 10), ("dpmpp2m", 20),
        ("sde-dpmpp2m", 10), ("sde-dpmpp2m", 20), ("unipc", 5), ("unipc", 10), ("unipc", 20))


def gmm_row(x: np.ndarray) -> dict[str, Any]:
    from edgediff.runtime.analytic import GMM2D, GaussianMixtureDenoiser
    from edgediff.runtime.schedule import NoiseSchedule

    exact = GaussianMixtureDenoiser.from_spec(NoiseSchedule.linear(), GMM2D)
    labels = exact.assign(x)
    # per-coordinate spread about the mode's own mean, against the mode's true std
    spread = [float(np.sqrt(np.mean(np.var(x[labels == k], axis=0))) / s) if np.sum(labels == k) > 2 else float("nan")
              for k, s in enumerate(GMM2D.stds)]
    shares = np.bincount(labels, minlength=len(GMM2D.weights)) / len(x)
    return {"mode_shares": shares.tolist(), "max_share_error": float(np.max(np.abs(shares - np.array(GMM2D.weights)))),
            "spread_ratio": spread}


def seconds_per_sample(denoiser: Any, method: str, steps: int, batch: int, repeats: int = 2) -> float:
    best = np.inf
    for r in range(repeats):
        start = time.perf_counter()
        generate(denoiser, SampleRequest(n=batch, method=method, steps=steps, batch=batch, seed=r))  # eta: default
        best = min(best, time.perf_counter() - start)
    return float(best / batch)


def quality(denoiser: Any, n: int, grid: tuple[tuple[str, int], ...] = GRID, timing: bool = True) -> dict[str, Any]:
    """One row per (sampler, NFE): quality on ``n`` samples and, with ``timing``, seconds per sample."""
    from edgediff.tools.evaluate import evaluate_frames, reference

    data = denoiser.bundle.manifest.get("data") or {}
    if getattr(denoiser, "distilled", None):  # a distilled bundle runs only what it was made for
        grid = (("ddim", int(denoiser.distilled["nfe"])),)
    dataset = data.get("dataset")
    ref = None if dataset == "gmm2d" else reference(dataset, n, int(denoiser.sample_shape[-1]), int(data.get("seed", 0)))
    rows: list[dict[str, Any]] = []
    held_out: dict[str, Any] = {}
    own = getattr(denoiser, "sampling", None)  # a bundle's own grid: its default, and the uniform one beside it
    own_method = grids.method_of(own) if not getattr(denoiser, "distilled", None) else None
    runs = [(method, steps, None) for method, steps in grid]
    if own_method:
        at = next((i for i, (m, k, _) in enumerate(runs) if m == own_method and k == own["steps"]), None)
        if at is not None or own_method == "ddim":  # the own grid, and the uniform steps beside it
            runs.insert(len(runs) if at is None else at + 1, (own_method, int(own["steps"]), "trailing"))
        else:  # the bundle's default solver on its grid, first
            runs.insert(0, (own_method, int(own["steps"]), None))
    for method, steps, spacing in runs:
        request, placed = for_bundle(SampleRequest(n=n, method=method, steps=steps, seed=0, spacing=spacing),
                                     getattr(denoiser, "distilled", None), own)
        run = generate(denoiser, request)
        row: dict[str, Any] = {"sampler": method, "nfe": run.nfe}
        if own_method and method == own_method:
            row["grid"] = "own" if placed is not None else "trailing"
        if ref is None:
            row.update(gmm_row(run.x))
        else:
            report = evaluate_frames(run.x, ref, dataset)
            row["psd_lsd_db"] = report["psd_lsd_db"]
            row["envelope_w1"] = report["envelope_w1"]
            row.update({k: v for k, v in report["generated"].items()})
            held_out = report["held_out"]  # the same measures on the held-out frames: the floor
        if timing:
            row["s_per_sample_b1"] = seconds_per_sample(denoiser, method, steps, 1)
            row["s_per_sample_b16"] = seconds_per_sample(denoiser, method, steps, min(16, denoiser.max_batch))
        rows.append(row)
    _against_ddim50(rows)
    report = {"bundle": label(denoiser.bundle.root), "dataset": dataset, "n": n, "rows": rows, "held_out": held_out}
    if getattr(denoiser, "distilled", None):
        report["distilled"] = {"nfe": int(denoiser.distilled["nfe"])}
    return report


def _against_ddim50(rows: list[dict[str, Any]]) -> None:
    """Each row's distance to the DDIM-50 row (the issue's yardstick), where both exist."""
    ref = next((r for r in rows if r["sampler"] == "ddim" and r["nfe"] == 50), None)  # the default: own grid first
    if ref is None:
        return
    for r in rows:
        if "mode_shares" in r:
            r["share_diff_vs_ddim50"] = float(np.max(np.abs(np.subtract(r["mode_shares"], ref["mode_shares"]))))
        if "psd_lsd_db" in r:
            r["lsd_diff_vs_ddim50_db"] = r["psd_lsd_db"] - ref["psd_lsd_db"]
        if "evm" in r and "evm" in ref:
            r["evm_diff_vs_ddim50_db"] = r["evm"]["median_db"] - ref["evm"]["median_db"]


def describe(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['bundle']} ({report['dataset']}), {report['n']} samples per row"]
    held = report.get("held_out") or {}
    if "chirp_share" in held and report["dataset"] == "rf-mix":
        lines.append(f"  held-out frames: chirp share {held['chirp_share']:.2f}"
                     + (f", EVM median {held['evm']['median_db']:.1f} dB" if "evm" in held else ""))
    for r in report["rows"]:
        if "max_share_error" in r:
            q = f"max mode-share error {r['max_share_error']:.3f}, spread/true " + \
                " ".join(f"{v:.2f}" for v in r["spread_ratio"])
            if "share_diff_vs_ddim50" in r:
                q += f", shares vs DDIM-50 within {r['share_diff_vs_ddim50']:.3f}"
        else:
            q = f"LSD {r['psd_lsd_db']:.2f} dB"
            if "evm" in r:
                q += f", EVM median {r['evm']['median_db']:.1f} dB ({100 * r['evm']['share_below_15db']:.0f}% < -15 dB)"
            if r.get("chirp_linearity_median") is not None:
                q += f", chirp IF error {r['chirp_linearity_median']:.4f}"
            if report["dataset"] == "rf-mix" and "chirp_share" in r:
                q += f", chirp share {r['chirp_share']:.2f}"
        t = (f"; {1e3 * r['s_per_sample_b1']:.1f} ms/sample at batch 1, {1e3 * r['s_per_sample_b16']:.2f} at 16"
             if "s_per_sample_b1" in r else "")
        placed = {"own": " (own grid)", "trailing": " (trailing)"}.get(r.get("grid", ""), "")
        lines.append(f"  {r['sampler']:>8}-{r['nfe']:<3}{placed} {q}{t}")
    return lines
