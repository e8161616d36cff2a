"""Benchmark curves (matplotlib, headless): quality against NFE, NMSE against NFE, BER and MSE
against SINR, and the priors' EVM against training frames. Each function writes one PNG and returns
its path; the figures of frames, maps and fields are in :mod:`edgediff.tools.plots`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.tools.plots import pyplot, save


#: One colour per sampler in every panel, whichever a bundle measures first (its own default may be a solver).
SAMPLER_COLORS = {"ddim": "C0", "dpmpp2m": "C1", "sde-dpmpp2m": "C2", "unipc": "C3", "ddpm": "C4"}


def quality_vs_nfe(reports: list[dict[str, Any]], out: Path) -> Path:
    """One panel per teacher bundle: its quality measure against NFE, one line per sampler on the uniform
    grid, the bundle's own DDIM grid (``grid: own``; a solver's too, where its grid names it) as a diamond beside it; a distilled bundle of the
    same dataset is drawn into that panel as a star labelled with its name."""
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    panels = [r for r in reports if not r.get("distilled")] or reports
    students = [r for r in reports if r.get("distilled") and r not in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, rep in zip(axes[0], panels):
        rows = rep["rows"]
        if "max_share_error" in rows[0]:
            key, label = (lambda r: r["max_share_error"]), "max mode-share error"
        elif any("evm" in r for r in rows):
            key, label = (lambda r: r["evm"]["median_db"] if "evm" in r else np.nan), "blind EVM median (dB)"
        else:
            key, label = (lambda r: r["psd_lsd_db"]), "mean-PSD log-spectral distance (dB)"
        nfes = set()
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["nfe"], key(r)) for r in rows if r["sampler"] == sampler and r.get("grid") != "own")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=sampler, color=SAMPLER_COLORS.get(sampler))
            nfes |= {p[0] for p in pts}
        for r in (r for r in rows if r.get("grid") == "own"):
            ax.plot([r["nfe"]], [key(r)], "D", ms=7, color="black", label=f"{r['sampler']}, its own grid")
            nfes.add(r["nfe"])
        for other in students:
            if other["dataset"] == rep["dataset"]:
                for r in other["rows"]:
                    ax.plot([r["nfe"]], [key(r)], "*", ms=12, label=f"{Path(str(other['bundle'])).name} (distilled)")
                    nfes.add(r["nfe"])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(nfes)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("network evaluations per sample")
        ax.set_ylabel(label)
        ax.set_title(f"{Path(str(rep['bundle'])).name}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out)


def separation_curves(report: dict[str, Any], out: Path) -> Path:
    """BER (log) and SOI MSE against SINR, one row per interferer, one line per method."""
    plt = pyplot()
    names = list(report["interferers"])
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.8 * len(names)), squeeze=False, layout="constrained")
    for row, name in zip(axes, names):
        points = report["interferers"][name]
        sinrs = [int(s) for s in points]
        methods = [m for m in points[str(sinrs[0])] if not m.startswith("_")]
        for m in methods:
            ber = [max(points[str(s)][m]["ber"], 1e-5) for s in sinrs]
            mse = [points[str(s)][m]["mse_db"] for s in sinrs]
            style = "o-" if points[str(sinrs[0])][m]["kind"] == "diffusion" else "s--"
            row[0].semilogy(sinrs, ber, style, label=m, ms=4)
            row[1].plot(sinrs, mse, style, label=m, ms=4)
        row[0].set_title(f"BER, interferer {name}", fontsize=10)
        row[1].set_title(f"SOI MSE, interferer {name}", fontsize=10)
        row[0].set_ylabel("bit error rate (1e-5 = none seen)")
        row[1].set_ylabel("MSE (dB)")
        for ax in row:
            ax.set_xlabel("SINR (dB)")
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=7)
    return save(fig, out)


def study_curves(curves: dict[str, list[dict[str, Any]]], out: Path, offsets: dict[str, float] | None = None) -> Path:
    """Blind EVM median and share below -15 dB against training samples seen, one line per run
    (``offsets`` shifts a later stage by the samples its earlier stages saw)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, rows in curves.items():
        rows = [r for r in rows if r.get("sample_steps", 50) == 50 and "evm" in r.get("generated", {})]
        if not rows:
            continue
        x = [(offsets or {}).get(name, 0) + r["samples_seen"] / 1e6 for r in rows]
        ax1.plot(x, [r["generated"]["evm"]["median_db"] for r in rows], "o-", ms=3, label=name)
        ax2.plot(x, [100 * r["generated"]["evm"]["share_below_15db"] for r in rows], "o-", ms=3, label=name)
    ax1.axhline(-20, color="0.5", ls="--", lw=0.8)
    ax2.axhline(80, color="0.5", ls="--", lw=0.8)
    ax1.set_ylabel("blind EVM median (dB)")
    ax2.set_ylabel("frames below -15 dB (%)")
    for ax in (ax1, ax2):
        ax.set_xlabel("training frames seen (millions)")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    return save(fig, out)


def nmse_vs_nfe(curves: list[dict[str, Any]], out: Path) -> Path:
    """One panel per dataset: NMSE against NFE per frame, one line per method (budgets joined), LMMSE
    as a horizontal line; points labelled with their time per frame."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(6.2 * len(curves), 4.4), squeeze=False, layout="constrained")
    for ax, c in zip(axes[0], curves):
        labels = dict.fromkeys(r["label"] + (" (particles)" if r["method"] == "smc" else "") for r in c["rows"])
        for label in labels:
            pts = sorted((r["nfe"], r["nmse_db"], r["ms_per_frame"]) for r in c["rows"]
                         if r["label"] + (" (particles)" if r["method"] == "smc" else "") == label)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3.5, label=label)
        ax.axhline(c["lmmse"]["nmse_db"], color="k", ls="--", lw=1, label="LMMSE (0 NFE)")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per frame")
        ax.set_ylabel("NMSE (dB)")
        ax.set_title(f"{c['dataset']}: {c['case']}, {c['frames']} frames", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, out)


def quality_vs_latency(rows: list[dict[str, Any]], limits: dict[str, float], baseline_ms: dict[str, float],
                       out: Path) -> Path:
    """Blind EVM median of each study variant against its per-NFE latency (one panel per batch size),
    labelled with its bundle size and frames seen; the latency limit dashed, variants over the size
    limit drawn hollow."""
    plt = pyplot()
    batches = list(rows[0]["latency_ms"])
    fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches), 3.8), squeeze=False, layout="constrained")
    for ax, b in zip(axes[0], batches):
        for r in rows:
            big = r["bundle_mb"] > limits["bundle_mb"]
            ax.plot(r["latency_ms"][b], r["evm_median_db"], "o", ms=7, mfc="none" if big else None, color="C0")
            ax.annotate(f"{r['name']}\n{r['bundle_mb']:.1f} MB, {r['frames_seen'] / 1e6:.3g} M frames",
                        (r["latency_ms"][b], r["evm_median_db"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.axvline(baseline_ms[b] * limits["latency_ratio"], color="0.5", ls="--", lw=0.8, label=f"{limits['latency_ratio']:g}x the default's latency")
        ax.margins(x=0.3, y=0.2)
        ax.set_xlabel(f"per-NFE latency, batch {b} (ms, ONNX Runtime, CPU)")
        ax.set_ylabel("blind EVM median (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title=f"hollow: over {limits['bundle_mb']:g} MB", title_fontsize=7)
    return save(fig, out)


def progress_curves(found: list[Any], out: Path) -> Path:
    """One panel per prior (:mod:`edgediff.tools.priors_progress`): its ledger score against frames seen
    (log2 axis; squares GPU stages, circles CPU ones), the fitted trend carried on toward the target,
    the target, and a star where the shipped prior stands with today's default sampler."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    cols = 2 if len(found) > 1 else 1
    rows_n = math.ceil(len(found) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False, layout="constrained")
    for ax, p in zip(axes.flat, found):
        pts = p.points
        x = np.array([q["frames_seen"] / 1e6 for q in pts])
        y = np.array([q["score"] for q in pts])
        last = pts[-1].get("lineage", 0) if pts else 0
        for lineage in sorted({q.get("lineage", 0) for q in pts}):  # a transfer starts a lineage: one line each
            sel = [i for i, q in enumerate(pts) if q.get("lineage", 0) == lineage]
            ax.plot(x[sel], y[sel], "-", color="0.6" if lineage == last else "0.85", lw=1,
                    label=None if lineage == last else "before the transfer (its own frames)")
        for kind, marker in (("GPU", "s"), ("CPU", "o"), ("unknown", "^")):
            for now in (True, False):  # earlier lineages' stages faded
                sel = [i for i, q in enumerate(pts) if q["device"] == kind and (q.get("lineage", 0) == last) == now]
                if sel:
                    ax.plot(x[sel], y[sel], marker, ms=5, ls="none", alpha=1.0 if now else 0.3,
                            label=f"{kind} stage" if now else None, color={"GPU": "C3", "CPU": "C0"}.get(kind, "C7"))
        if p.slope is not None:  # the fit through its stages, then carried on from now (at most 16x the frames)
            fit = np.geomspace(p.fit_from, p.frames_seen, 16)
            ax.plot(fit / 1e6, p.intercept + p.slope * np.log2(fit), "-", color="C2", lw=2, alpha=0.6,
                    label=f"trend {p.slope:+.2f} / doubling")
            if p.projection.get("status") == "open":
                ahead = np.geomspace(p.frames_seen, p.frames_seen * min(16.0, 2 ** p.projection["doublings"]), 16)
                ax.plot(ahead / 1e6, p.now + p.slope * np.log2(ahead / p.frames_seen), "--", color="C2", lw=1)
                end = (ahead[-1] / 1e6, p.now + p.slope * np.log2(ahead[-1] / p.frames_seen))
                ax.annotate(f"target at {p.projection['frames']:.2g} frames\n({p.projection['doublings']:.1f} doublings on)", end,
                            fontsize=7, ha="right", va="bottom", color="C2")
        if p.current is not None:
            ax.plot([p.frames_seen / 1e6], [p.current], "*", ms=13, color="C1", label="now (today's default sampler)")
        ax.axhline(p.target, color="k", ls=":", lw=1, label=f"target {p.target:g}")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("training frames seen (millions)")
        ax.set_ylabel(p.measure, fontsize=8)
        ax.set_title(f"{p.prior}: {p.seconds.get('GPU', 0) / 60:.0f} GPU min, {p.seconds.get('CPU', 0) / 3600:.1f} CPU h recorded",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(found):]:
        ax.set_visible(False)
    return save(fig, out)
