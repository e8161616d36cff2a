"""The separation benchmark: BER and SOI MSE against SINR for every method and classical baseline.

SOI: held-out frames of the rf-qpsk generator, with the truth a genie receiver needs (bits scored
after the matched filter with known timing, carrier and phase). Interferer: held-out frames of its
own generator (rf-chirp, rf-qpsk-fast), scaled per point so that the mixture's SINR (mean SOI power
over mean interference power) is the one asked for. Source powers are given to every method, as an
operator who knows the link budget would. Baselines: no mitigation (the matched filter on y), LMMSE
with both covariances (the RF Challenge's classical baseline), and the best fixed filter (the
frequency-domain Wiener filter from both sources' mean spectra: the MSE-optimal notch/band-stop).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from edgediff.runtime.backends import load
from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse.methods import travel_order
from edgediff.runtime.inverse.separate import Amplitudes, lmmse_separation, restart_calls, separate
from edgediff.runtime.receivers import genie_receive
from edgediff.train import datasets, rf

#: Up to +6 dB: LMMSE's BER falls below 1e-3 there against both interferers (0.0000 and 0.0002 at stop 68), so
#: the range in which issue 19's 10x is judged, [1e-3, 1e-1], is bounded on both sides (it reached +3 dB).
SINRS = tuple(range(-24, 7, 3))
INTERFERERS = ("rf-chirp", "rf-qpsk-fast")


def fixed_wiener(y: np.ndarray, psd_s: np.ndarray, psd_b: np.ndarray, sigma2: float) -> np.ndarray:
    """The MSE-optimal fixed (time-invariant) filter: H(f) = S_s(f) / (S_s(f) + S_b(f) + sigma^2), per frame."""
    z = rf.from_iq(y).astype(np.complex128)
    gain = psd_s / (psd_s + psd_b + sigma2)
    return rf.to_iq(np.fft.ifft(np.fft.fft(z, axis=1) * gain[None], axis=1)).astype(np.float64)


def mean_psd(frames: np.ndarray) -> np.ndarray:
    z = rf.from_iq(frames).astype(np.complex128)
    return np.mean(np.abs(np.fft.fft(z, axis=1)) ** 2, axis=0) / z.shape[1]


def methods(soi: Any, interf: Any, steps: int, smc_particles: int = 0, samples: int = 1,
            travel: tuple[int, int] = (0, 0),
            restart: tuple[int, ...] = ()) -> dict[str, tuple[str, Callable[..., np.ndarray], int]]:
    """name -> (kind, fn(y, sigma_y, amplitudes, lmmse_start) -> SOI estimate, NFE per source); joint SMC
    runs half the steps (its NFE per source is particles x steps / 2); ``samples`` K > 1 adds joint DDNM+
    averaging K posterior samples (the posterior mean, K x steps calls); ``travel`` (L, R) adds joint DDNM+
    with the time-travel trick, and with K > 1 the mean of K of its samples; ``restart`` (T1, T2, ...) adds the
    mean of K (walked where ``travel`` is given) restarted one round at each timestep from the SOI so far: it starts
    from that row's estimate (the same seeds, so the same draws), so its first K samples are not drawn twice; and
    the same rounds restarted from LMMSE's estimate instead."""
    half = max(1, steps // 2)
    travel, restart = tuple(travel), tuple(restart)
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # row name -> (the mixture, its estimate)

    def name(k: int, walk: tuple[int, int], again: tuple[int, ...] = (), origin: str = "") -> str:
        parts = [origin or str(steps)] + [f"travel {walk[0]}x{walk[1]}"] * (walk != (0, 0)) + [f"mean of {k}"] * (k > 1)
        parts += ["restart " + "/".join(map(str, again))] * bool(again)
        return f"joint DDNM+ ({', '.join(parts)})"

    def joint(k: int, walk: tuple[int, int]) -> Callable[..., np.ndarray]:
        def fn(y: np.ndarray, s: float, a: Amplitudes, x0: np.ndarray) -> np.ndarray:
            est = separate(soi, interf, y, s, a, method="joint-ddnm", steps=steps, samples=k, travel=walk).soi
            kept[name(k, walk)] = (y, est)
            return est
        return fn

    def restarted(y: np.ndarray, s: float, a: Amplitudes, x0: np.ndarray) -> np.ndarray:
        then, est = kept.get(name(samples, travel), (None, None))
        return separate(soi, interf, y, s, a, method="joint-ddnm", steps=steps, samples=samples, travel=travel,
                        restart=restart, init=est if then is y else None).soi

    rows = {
        name(1, (0, 0)): ("diffusion", joint(1, (0, 0)), steps),
        f"alpha-RGS ({2 * steps})": ("diffusion", lambda y, s, a, x0: separate(soi, interf, y, s, a, method="alpha-rgs",
                                                                             steps=2 * steps, init=x0).soi, 2 * steps),
    }
    if samples > 1:
        rows[name(samples, (0, 0))] = ("diffusion", joint(samples, (0, 0)), samples * steps)
    if travel != (0, 0):
        for k in sorted({1, samples}):
            rows[name(k, travel)] = ("diffusion", joint(k, travel), k * len(travel_order(steps, travel)))
    if restart:
        rows[name(samples, travel, restart)] = ("diffusion", restarted,
                                                samples * restart_calls(soi.schedule, steps, travel, restart))
        rows[name(samples, travel, restart, "from LMMSE")] = ("diffusion", lambda y, s, a, x0: separate(
            soi, interf, y, s, a, method="joint-ddnm", steps=steps, samples=samples, travel=travel, restart=restart,
            init=x0).soi, samples * restart_calls(soi.schedule, steps, travel, restart, first=False))
    if smc_particles:
        rows[f"joint SMC ({half}, P={smc_particles})"] = ("diffusion", lambda y, s, a, x0: separate(
            soi, interf, y, s, a, method="joint-smc", steps=half, particles=smc_particles).soi, smc_particles * half)
    return rows


def frames(interferer: str, n: int, length: int, seed: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """SOI frames with their truth, and interference frames (raw units), both held out from training; seeds
    1000 apart, so another ``seed``'s draws never meet seed 0's (the benchmark's)."""
    base = datasets.HELD_OUT_SEED_OFFSET + 1000 * seed
    soi, truth = rf.qpsk_frames_with_truth(n, length, np.random.default_rng(base + 11))
    b = datasets.builtin(interferer, n, length, base + 12)
    return rf.to_iq(soi).astype(np.float64), truth, b.astype(np.float64)


def run_point(soi_d: Any, interf_d: Any, s: np.ndarray, truth: Any, b: np.ndarray, sinr: float, steps: int,
              psds: tuple[np.ndarray, np.ndarray], smc_particles: int = 0, samples: int = 1,
              travel: tuple[int, int] = (0, 0), restart: tuple[int, ...] = (),
              only: tuple[str, ...] = ()) -> dict[str, Any]:
    p_s, p_b0 = 2 * np.mean(s**2), 2 * np.mean(b**2)
    b = b * np.sqrt(p_s / p_b0 * 10 ** (-sinr / 10))
    y = s + b
    sigma_y = 1e-3 * np.sqrt(p_s / 2)
    amp = Amplitudes(np.sqrt(p_s / 2), np.sqrt(2 * np.mean(b**2) / 2), "given")
    x_lmmse = lmmse_separation(y, sigma_y, amp, soi_d.bundle.stats(), interf_d.bundle.stats())
    fmt = rf.psk_format(rf.QPSK)
    rows: dict[str, Any] = {}

    def score(name: str, kind: str, estimate: np.ndarray, seconds: float, nfe: int) -> None:
        res = genie_receive(rf.from_iq(estimate).astype(np.complex128), truth, fmt)
        rows[name] = {"kind": kind, "ber": res.ber, "mse_db": float(10 * np.log10(np.mean((estimate - s) ** 2) / np.mean(s**2))),
                      "nfe_per_source": nfe, "ms_per_frame": 1e3 * seconds / len(y),
                      "bit_errors": int(res.bit_errors.sum()), "bits": int(2 * res.symbols_scored.sum()),
                      "frames_with_errors": int(np.count_nonzero(res.bit_errors))}

    score("no mitigation (matched filter on y)", "baseline", y, 0.0, 0)
    score("LMMSE (both covariances)", "baseline", x_lmmse, 0.0, 0)
    scale = p_b0 and 10 ** (-sinr / 10) * p_s / p_b0
    score("fixed Wiener filter", "baseline", fixed_wiener(y, psds[0], psds[1] * scale, 2 * sigma_y**2), 0.0, 0)
    rows_all = methods(soi_d, interf_d, steps, smc_particles, samples, travel, restart)
    for text in only:
        if not any(text in name for name in rows_all):
            raise InputError(f"--row {text!r} names none of the rows: choose a part of one of: {'; '.join(rows_all)}")
    chosen = {name: row for name, row in rows_all.items() if not only or any(text in name for text in only)}
    for name, (kind, fn, nfe) in chosen.items():
        start = time.perf_counter()
        est = fn(y, sigma_y, amp, x_lmmse)
        score(name, kind, est, time.perf_counter() - start, nfe)
    best = min((r for r in rows.values() if r["kind"] == "diffusion"), key=lambda r: (r["ber"], r["mse_db"]))
    rows["_best_diffusion"] = {"ber": best["ber"], "mse_db": min(r["mse_db"] for r in rows.values()
                                                                   if r.get("kind") == "diffusion"),
                               "bit_errors": best["bit_errors"], "bits": best["bits"]}
    return rows


def run_benchmark(soi: str, interferers: list[str], n: int, steps: int, sinrs: tuple[int, ...] = SINRS,
                  progress: Callable[[str], Any] | None = None, smc_particles: int = 0, samples: int = 1,
                  travel: tuple[int, int] = (0, 0), restart: tuple[int, ...] = (),
                  frame_seed: int = 0, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """``frame_seed`` picks the held-out frames: 0 are the benchmark's (the README's figures); any other seed's
    frames share none of their draws, for choosing a recipe that is then scored on seed 0's. ``only``: run just
    the diffusion rows whose name holds one of these parts (the baselines always run); a restarted row draws
    the same whether or not its walked mean's row ran (it then draws that mean itself, in its time)."""
    from edgediff.tools.bench import machine

    soi_d = load(soi, backend="ort")
    if (soi_d.bundle.manifest.get("data") or {}).get("dataset") != "rf-qpsk":
        raise InputError(f"{soi}: bench-separate scores bits of QPSK: the SOI prior must be an rf-qpsk bundle")
    report: dict[str, Any] = {"machine": machine(), "soi": soi, "frames": n, "steps": steps, "sinr_db": list(sinrs),
                              "interferers": {}}
    if frame_seed:
        report["frame_seed"] = frame_seed
    if only:
        report["rows"] = list(only)
    for interferer in interferers:
        interf_d = load(interferer, backend="ort")
        name = (interf_d.bundle.manifest.get("data") or {}).get("dataset")
        if name not in INTERFERERS:
            raise InputError(f"{interferer}: the interferer prior must be one of the built-in {', '.join(INTERFERERS)} bundles")
        if soi_d.bundle.stats() is None or interf_d.bundle.stats() is None:
            raise InputError("the LMMSE baseline needs stats.npz in both bundles: re-export them with this edgediff")
        s, truth, b = frames(name, n, soi_d.sample_shape[-1], frame_seed)
        psds = (mean_psd(datasets.builtin("rf-qpsk", 2000, soi_d.sample_shape[-1], 5)),
                mean_psd(datasets.builtin(name, 2000, soi_d.sample_shape[-1], 5)))
        points = {}
        for sinr in sinrs:
            points[str(sinr)] = run_point(soi_d, interf_d, s, truth, b, float(sinr), steps, psds, smc_particles,
                                          samples, travel, restart, only)
            if progress is not None:
                progress(f"{name} {sinr:+d} dB done")
        report["interferers"][name] = points
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Where LMMSE's BER lies in [1e-3, 1e-1]: the best diffusion BER's improvement; MSE gain everywhere.
    The verdict holds for that whole range only where the SINRs measured bound it: LMMSE above 1e-1 at the
    lowest and below 1e-3 at the highest (``lmmse_range_bounded``); otherwise ``ber_10x_met`` is False, unknown.
    Where the rows count their bits (reports since stop 77), ``bit_errors_where_lmmse_in_1e-3_1e-1`` gives the
    counts behind each ratio and the most errors 10x allows: a ratio read off ten errors moves by one bit."""
    out = {}
    for name, points in report["interferers"].items():
        ratios, gains, counts = {}, {}, {}
        by_sinr = sorted(points.items(), key=lambda p: float(p[0]))
        lm_ber = [rows["LMMSE (both covariances)"]["ber"] for _, rows in by_sinr]
        bounded = bool(lm_ber) and lm_ber[0] > 1e-1 and lm_ber[-1] < 1e-3
        for sinr, rows in by_sinr:
            lm = rows["LMMSE (both covariances)"]
            gains[sinr] = lm["mse_db"] - rows["_best_diffusion"]["mse_db"]
            if 1e-3 <= lm["ber"] <= 1e-1:
                ratios[sinr] = lm["ber"] / max(rows["_best_diffusion"]["ber"], 1e-6)
                if "bit_errors" in lm and "bit_errors" in rows["_best_diffusion"]:
                    counts[sinr] = {"lmmse": lm["bit_errors"], "best": rows["_best_diffusion"]["bit_errors"],
                                    "bits": lm["bits"], "most_for_10x": lm["bit_errors"] // 10}
        out[name] = {"ber_ratio_where_lmmse_in_1e-3_1e-1": ratios, "mse_gain_db": gains,
                     "lmmse_range_bounded": bounded,
                     "ber_10x_met": bounded and bool(ratios) and all(r >= 10 for r in ratios.values()),
                     "mse_3db_met": all(g >= 3 for g in gains.values())}
        if counts:
            out[name]["bit_errors_where_lmmse_in_1e-3_1e-1"] = counts
    return out


def table(report: dict[str, Any]) -> list[str]:
    lines = [f"SOI {report['soi']}, {report['frames']} frames per point, BER (genie timing/carrier/phase) and SOI MSE (dB)"]
    for name, points in report["interferers"].items():
        lines.append(f"interferer {name}:")
        for sinr, rows in points.items():
            cells = ", ".join(f"{k}: {v['ber']:.4f} / {v['mse_db']:.1f} dB" for k, v in rows.items() if not k.startswith("_"))
            lines.append(f"  SINR {int(sinr):+3d} dB  {cells}")
        t = report["targets"][name]
        counts = t.get("bit_errors_where_lmmse_in_1e-3_1e-1", {})

        def ratio(sinr: str, value: float) -> str:
            c = counts.get(sinr)
            bits = f" ({c['best']} bit errors of {c['bits']}, LMMSE {c['lmmse']}; 10x allows {c['most_for_10x']})" if c else ""
            return f"{sinr} dB: {value:.3g}x{bits}"
        lines.append(f"  targets: BER 10x lower where LMMSE is in [1e-3, 1e-1]: {t['ber_10x_met']} "
                     f"({', '.join(ratio(k, v) for k, v in t['ber_ratio_where_lmmse_in_1e-3_1e-1'].items()) or 'no such SINR'}); "
                     f"MSE >= 3 dB better everywhere: {t['mse_3db_met']}")
        if not t["lmmse_range_bounded"]:
            lines.append("  (the SINRs measured do not bound LMMSE's [1e-3, 1e-1]: add --sinr points below and "
                         "above it for the whole verdict)")
    return lines
