"""The reconstruction benchmark: diffusion priors against classical estimators on held-out RF frames.

Each case draws its degradation per frame from a fixed seed; every method sees the same y. Figures
are NMSE in dB against the truth (sum of squared errors over sum of squared truth, all frames), the
network evaluations per frame, wall time per frame at batch 1 and, for QPSK, the symbol error rate
of the reconstruction (genie receiver: the generator's carrier, timing and symbols). Posterior-mean
rows average K posterior samples (seeds [frame, k]): like with like against LMMSE, which is a mean.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgediff.runtime.backends import load
from edgediff.runtime.errors import InputError
from edgediff.runtime.inverse import baselines
from edgediff.runtime.inverse.methods import Problem, ddnm, diffpir, dps, solver_reconstruction
from edgediff.runtime.inverse.operators import Decimate, Identity, Mask, Operator

#: case -> (description, measurement SNR in dB)
CASES = {
    "miss50": ("50 % of samples missing at random", 30.0),
    "miss75": ("75 % of samples missing at random", 30.0),
    "burst25": ("a burst of 25 % missing", 30.0),
    "denoise10": ("denoising at 10 dB SNR", 10.0),
    "decimate2": ("2x decimation (anti-alias filter)", 30.0),
}


def make_operator(case: str, shape: tuple[int, ...], rng: np.random.Generator) -> Operator:
    L = shape[-1]
    if case in ("miss50", "miss75"):
        keep = 0.5 if case == "miss50" else 0.25
        return Mask((rng.random(L) < keep).astype(float), shape)
    if case == "burst25":
        m = np.ones(L)
        start = rng.integers(0, L - L // 4 + 1)
        m[start:start + L // 4] = 0
        return Mask(m, shape)
    if case == "denoise10":
        return Identity(shape)
    return Decimate(2, shape)


def degrade(case: str, frame: np.ndarray, rng: np.random.Generator) -> tuple[Operator, np.ndarray, float]:
    """(operator, y, sigma_y) for one frame (network units): noise at the case's SNR over the frame."""
    op = make_operator(case, frame.shape, rng)
    clean = op.forward(frame[None])
    sigma = float(np.sqrt(np.mean(frame**2) / 10 ** (CASES[case][1] / 10)))
    return op, clean + sigma * rng.standard_normal(clean.shape), sigma


class Setup:
    """One bundle's data: held-out truth, the Gaussian prior and bandwidth of its training frames."""

    def __init__(self, bundle: Path, frames: int, exact_dps: bool):
        from edgediff.train import datasets

        self.denoiser = load(bundle, backend="ort")
        data = self.denoiser.bundle.manifest.get("data", {})
        if data.get("dataset") not in ("rf-qpsk", "rf-chirp", "rf-mix"):
            raise InputError(f"{bundle}: bench-reconstruct needs a bundle of a built-in RF dataset, not {data.get('dataset')!r}")
        config = datasets.DataConfig(dataset=data["dataset"], length=int(data["length"]), seed=int(data["seed"]),
                                     n=8000, normalise=data.get("normalise", "rms"))
        train, _ = datasets.load(config)  # the training frames' law, in network units
        scale = self.denoiser.normalisation.scale
        self.truth = datasets.held_out(config, frames) / scale  # frames training never saw
        self.prior = baselines.GaussianPrior.fit(train)
        self.bandwidth = baselines.occupied_bandwidth(train)
        self.name = data["dataset"]
        self.symbols = None
        if self.name == "rf-qpsk" and config.length >= 128:  # the same frames again, with the truth for the SER
            from edgediff.train import rf

            rng = np.random.default_rng(config.seed + datasets.HELD_OUT_SEED_OFFSET)
            _, self.symbols = rf.qpsk_frames_with_truth(frames, config.length, rng)
        self.torch = None
        if exact_dps:
            # the exporting run's weights where it is here, else the bundle's own, read back from model.onnx
            source = Path(self.denoiser.bundle.manifest.get("source_run", {}).get("path", ""))
            self.torch_from_onnx = not (source / "weights.safetensors").is_file()
            try:
                self.torch = load(bundle, backend="torch", run_dir=self.denoiser.bundle.root if self.torch_from_onnx else None)
            except Exception as exc:  # no torch, or weights that fail their proof: the exact variant is skipped, and said so
                self.torch_reason = str(exc)


def methods(setup: Setup, case: str, steps: int, k: int = 4) -> dict[str, tuple[str, Callable[[Problem, int], Any]]]:
    """name -> (kind, fn(problem, seed) -> (x, NFE-equivalents per frame)). Kinds: "diffusion",
    "listed" (the issue's classical baselines for the case) and "classical" (LMMSE where not listed)."""
    d, sched = setup.denoiser, setup.denoiser.schedule

    def run_ddnm(p: Problem, rng: np.random.Generator) -> Any:
        return ddnm(d, sched, p, steps=steps, eta=0.5, rng=rng)

    def run_diffpir(p: Problem, rng: np.random.Generator) -> Any:
        return diffpir(d, sched, p, steps=steps, lam=1.0, zeta=1.0, rng=rng)

    def single(fn: Callable[[Problem, np.random.Generator], Any]) -> Callable[[Problem, int], Any]:
        return lambda p, s: _res(fn(p, np.random.default_rng(s)))

    def mean_of(fn: Callable[[Problem, np.random.Generator], Any]) -> Callable[[Problem, int], Any]:
        def run(p: Problem, s: int) -> tuple[np.ndarray, float]:
            runs = [fn(p, np.random.default_rng([s, j])) for j in range(k)]
            return np.mean([r.x for r in runs], axis=0), sum(r.nfe_equivalent for r in runs)
        return run

    out: dict[str, tuple[str, Callable[[Problem, int], Any]]] = {
        f"DDNM+ ({steps} steps)": ("diffusion", single(run_ddnm)),
        f"DDNM+ (mean of {k} x {steps})": ("diffusion", mean_of(run_ddnm)),
        f"DiffPIR ({steps} steps)": ("diffusion", single(run_diffpir)),
        f"DiffPIR (mean of {k} x {steps})": ("diffusion", mean_of(run_diffpir)),
        f"DDNM+ in DPM-Solver++ ({max(1, steps // 5)})": ("diffusion", single(lambda p, rng: solver_reconstruction(
            d, sched, p, steps=max(1, steps // 5), rng=rng))),
        f"DPS Jacobian-free ({steps})": ("diffusion", lambda p, s: _res(dps(d, sched, p, steps=steps, zeta=0.3,
                                                                            exact=False, rng=np.random.default_rng(s)))),
    }
    if setup.torch is not None:
        td = setup.torch
        out[f"DPS exact, torch ({steps // 2})"] = ("diffusion", lambda p, s: _res(dps(
            td, sched, p, steps=steps // 2, zeta=1.0, exact=True, rng=np.random.default_rng(s))))
    masks, noisy = case.startswith(("miss", "burst")), case == "denoise10"
    out["least squares A^+ y"] = ("listed", lambda p, s: (baselines.least_squares(p), 0))
    if masks:
        out["linear interpolation"] = ("listed", lambda p, s: (baselines.linear_interpolation(p), 0))
    if not noisy:
        out["band-limited LS"] = ("listed", lambda p, s: (baselines.bandlimited(p, setup.bandwidth), 0))
    out["LMMSE / Wiener"] = ("listed" if noisy else "classical", lambda p, s: (baselines.lmmse(p, setup.prior), 0))
    return out


def _res(r: Any) -> tuple[np.ndarray, float]:
    return r.x, r.nfe_equivalent


def run_case(setup: Setup, case: str, steps: int, walked: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng([sum(map(ord, setup.name)), sum(map(ord, case))])  # stable across processes
    problems = []
    for frame in setup.truth:
        op, y, sigma = degrade(case, frame, rng)
        problems.append(Problem(op, y, sigma))
    rows: dict[str, Any] = {}
    for name, (kind, fn) in methods(setup, case, steps).items():
        err = ref = 0.0
        start = time.perf_counter()
        nfe = 0.0
        estimates = []
        for i, (frame, problem) in enumerate(zip(setup.truth, problems)):
            x, nfe = fn(problem, i)
            estimates.append(x[0])
            err += float(np.sum((x[0] - frame) ** 2))
            ref += float(np.sum(frame**2))
        rows[name] = {"kind": kind, "nmse_db": 10 * np.log10(err / ref), "nfe": nfe,
                      "ms_per_frame": 1e3 * (time.perf_counter() - start) / len(problems)}
        if setup.symbols is not None:
            rows[name]["ser"] = symbol_error_rate(np.stack(estimates), setup.symbols)
    if walked:
        rows.update(walked_rows(setup, problems, steps, f"{setup.name} / {case}"))
    diffusion = min(r["nmse_db"] for r in rows.values() if r["kind"] == "diffusion")
    listed = min(r["nmse_db"] for r in rows.values() if r["kind"] == "listed")
    classical = min(r["nmse_db"] for r in rows.values() if r["kind"] != "diffusion")
    return {"case": CASES[case][0], "methods": rows, "best_diffusion_db": diffusion, "best_listed_db": listed,
            "best_classical_db": classical, "gain_vs_listed_db": listed - diffusion,
            "gain_vs_all_classical_db": classical - diffusion}


def symbol_error_rate(frames: np.ndarray, truth: Any) -> float:
    """SER of (N, 2, L) frames (any scale) against the generator's truth, genie-aided QPSK receiver."""
    from edgediff.runtime.receivers import genie_receive
    from edgediff.train import rf

    return genie_receive(rf.from_iq(frames).astype(np.complex128), truth, rf.psk_format(rf.QPSK)).ser


def run_benchmark(bundles: list[Path], cases: list[str], frames: int, steps: int, exact_dps: bool = True,
                  walked: bool = False) -> dict[str, Any]:
    from edgediff.tools.bench import machine

    report: dict[str, Any] = {"machine": machine(), "frames": frames, "steps": steps, "datasets": {}}
    if walked:
        report["walked"] = {"travel": list(WALK), "samples": WALKED_SAMPLES, "restart_fractions": list(RESTART_FRACTIONS)}
    for bundle in bundles:
        setup = Setup(bundle, frames, exact_dps)
        report["datasets"][setup.name] = {case: run_case(setup, case, steps, walked) for case in cases}
        if setup.torch is None and exact_dps:
            report["datasets"][setup.name]["note"] = f"exact DPS skipped: {getattr(setup, 'torch_reason', '')}"
        elif exact_dps and setup.torch_from_onnx:
            report["datasets"][setup.name]["note"] = ("exact DPS: the exporting run is not here; its torch model "
                                                      "holds the weights read back from model.onnx")
    return report


def table(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['frames']} held-out frames per case, budget {report['steps']} NFE per frame; NMSE in dB "
             f"(lower is better); machine {report['machine']['cpu']}, {report['machine']['cores']} cores"]
    for dataset, cases in report["datasets"].items():
        for case, r in cases.items():
            if case == "note":
                lines.append(f"  note: {r}")
                continue
            lines.append(f"{dataset} / {r['case']}: best diffusion {r['best_diffusion_db']:.2f} dB; gain "
                         f"{r['gain_vs_listed_db']:+.2f} dB over the listed baselines, "
                         f"{r['gain_vs_all_classical_db']:+.2f} dB over every classical method (LMMSE included)")
            for name, m in r["methods"].items():
                ser = f"   SER {m['ser']:.4f}" if "ser" in m else ""
                lines.append(f"    {name:<44} {m['kind']:<9} {m['nmse_db']:8.2f} dB   {m['nfe']:5.0f} NFE   "
                             f"{m['ms_per_frame']:8.1f} ms/frame{ser}")
    return lines


#: The walked and restarted rows' recipe, separation's (chosen there on held-out frames, not tuned here):
#: the time-travel trick L:R and rounds restarted at these fractions of T (600/500/400/300 of 1000).
WALK, RESTART_FRACTIONS, WALKED_SAMPLES = (10, 4), (0.6, 0.5, 0.4, 0.3), 8
WALKED = f"DDNM+ walked {WALK[0]}x{WALK[1]}, mean of {WALKED_SAMPLES} (then restarts)"

#: The cost axis (bench-reconstruct --nfe-curve): (label, method, steps, repeats K or particles P).
NFE_GRID = (("DDNM+", "ddnm", 10, 1), ("DDNM+", "ddnm", 25, 1), ("DDNM+", "ddnm", 50, 1), ("DDNM+", "ddnm", 100, 1),
            ("DDNM+", "ddnm", 250, 1), ("DDNM+ mean of 4", "ddnm", 25, 4), ("DDNM+ mean of 4", "ddnm", 100, 4),
            ("DiffPIR", "diffpir", 25, 1), ("DiffPIR", "diffpir", 100, 1), ("DPS Jacobian-free", "dps", 50, 1),
            ("DPS Jacobian-free", "dps", 100, 1), ("DDNM+ in DPM-Solver++", "dpmpp2m", 10, 1),
            ("DDNM+ in DPM-Solver++", "dpmpp2m", 20, 1), ("DDNM+ in SDE-DPM-Solver++", "sde-dpmpp2m", 10, 1),
            ("DDNM+ in SDE-DPM-Solver++", "sde-dpmpp2m", 20, 1), ("SMC", "smc", 50, 4), ("SMC", "smc", 50, 16),
            ("SMC", "smc", 50, 64), (WALKED, "ddnm-walked", 100, 8), (WALKED, "ddnm-restart", 100, 8))


def restart_timesteps(T: int) -> tuple[int, ...]:
    return tuple(round(f * T) for f in RESTART_FRACTIONS)


def walked_run(setup: Setup, problem: Problem, steps: int, k: int, seed: int, restart: bool) -> Any:
    """The walked recipe through the user's path (`edgediff reconstruct --travel --restart`), seeds k x seed
    onwards; reconstruct() takes and gives the user's units. Its rounds hold the walked mean, then each round's."""
    from edgediff.runtime.inverse import reconstruct

    d = setup.denoiser
    scale = d.normalisation.scale
    again = restart_timesteps(d.schedule.T) if restart else ()
    return reconstruct(d, problem.y * scale, problem.operator, problem.sigma_y * scale, method="ddnm", steps=steps,
                       samples=k, seed=k * seed, travel=WALK, restart=again)[1]


def walked_rows(setup: Setup, problems: list[Problem], steps: int, what: str) -> dict[str, Any]:
    """The case table's walked rows (bench-reconstruct --walked), from one run a frame: the walked mean of
    WALKED_SAMPLES (its first round) and the rounds restarted from it (the last); their calls and seconds are
    what each had spent, so ms per frame is the network passes' time, batch 1."""
    from tqdm import tqdm

    T = setup.denoiser.schedule.T
    names = (f"DDNM+ walked {WALK[0]}x{WALK[1]} (mean of {WALKED_SAMPLES} x {steps})",
             f"DDNM+ walked, restarted at {'/'.join(map(str, restart_timesteps(T)))}")
    found: list[list[Any]] = [[], []]
    for i, problem in enumerate(tqdm(problems, desc=f"{what}: walked DDNM+", unit="frame", disable=None)):
        res = walked_run(setup, problem, steps, WALKED_SAMPLES, i, restart=True)
        for row, r in zip(found, (res.rounds[0], res.rounds[-1])):
            row.append(r)
    scale = setup.denoiser.normalisation.scale
    return {name: {"kind": "diffusion", **score(setup, [r.x[0] / scale for r in runs]), "nfe": runs[-1].nfe,
                   "ms_per_frame": 1e3 * sum(r.seconds for r in runs) / len(runs)} for name, runs in zip(names, found)}


def score(setup: Setup, xs: list[np.ndarray]) -> dict[str, Any]:
    """NMSE in dB of the frames ``xs`` (network units) against the held-out truth, and the SER for QPSK."""
    x = np.stack(xs)
    row = {"nmse_db": float(10 * np.log10(np.sum((x - setup.truth) ** 2) / np.sum(setup.truth**2)))}
    if setup.symbols is not None:
        row["ser"] = symbol_error_rate(x, setup.symbols)
    return row


def _walked_curve_run(setup: Setup, grid: Any, method: str, steps: int, k: int, problem: Problem, seed: int,
                      walks: dict[tuple[int, int, int], Any]) -> tuple[np.ndarray, int, float]:
    """The walked mean ("ddnm-walked") or its restarted rounds ("ddnm-restart"): one run a frame for both where
    the grid holds both, its first round the walked mean (reconstruct()'s rounds), kept in ``walks``. Returns the
    estimate (network units), its calls a frame and the seconds of network passes spent up to it."""
    if (steps, k, seed) not in walks:
        restart = any(g[1] == "ddnm-restart" and tuple(g[2:]) == (steps, k) for g in grid)
        walks[steps, k, seed] = walked_run(setup, problem, steps, k, seed, restart=restart)
    res = walks[steps, k, seed]
    if method == "ddnm-walked" and res.rounds:
        res = res.rounds[0]
    return res.x / setup.denoiser.normalisation.scale, res.nfe, res.seconds


def _curve_run(setup: Setup, method: str, steps: int, k: int, problem: Problem, seed: int) -> tuple[np.ndarray, int]:
    d, sched = setup.denoiser, setup.denoiser.schedule
    if method == "smc":
        from edgediff.runtime.inverse.smc import smc

        return smc(d, sched, problem, particles=k, steps=steps, rng=np.random.default_rng(seed)).x, k * steps
    runs = []
    for j in range(k):
        rng = np.random.default_rng([seed, j])
        if method == "ddnm":
            runs.append(ddnm(d, sched, problem, steps=steps, eta=0.5, rng=rng).x)
        elif method == "diffpir":
            runs.append(diffpir(d, sched, problem, steps=steps, lam=1.0, zeta=1.0, rng=rng).x)
        elif method == "dps":
            runs.append(dps(d, sched, problem, steps=steps, zeta=0.3, exact=False, rng=rng).x)
        else:
            runs.append(solver_reconstruction(d, sched, problem, steps=steps, rng=rng, solver=method).x)
    return np.mean(runs, axis=0), k * steps


def nfe_curve(bundle: Path, frames: int, case: str = "miss75",
              grid: tuple[tuple[str, str, int, int], ...] = NFE_GRID) -> dict[str, Any]:
    """NMSE (and SER) against NFE per frame for every method at several budgets, LMMSE as a line."""
    setup = Setup(bundle, frames, exact_dps=False)
    rng = np.random.default_rng([sum(map(ord, setup.name)), sum(map(ord, case))])
    problems = [Problem(*degrade(case, f, rng)) for f in setup.truth]
    lmmse = score(setup, [baselines.lmmse(p, setup.prior)[0] for p in problems])
    T = setup.denoiser.schedule.T
    rows: list[dict[str, Any]] = []
    skipped = [f"{label} {steps}" for label, _, steps, _ in grid if steps > T]  # a schedule of fewer steps
    walks: dict[tuple[int, int, int], Any] = {}
    for label, method, steps, k in [g for g in grid if g[2] <= T]:
        start, xs, nfe, passes = time.perf_counter(), [], 0, 0.0
        for i, p in enumerate(problems):
            if method.startswith("ddnm-"):  # the walked rows: their network passes' time, one run shared
                x, nfe, seconds = _walked_curve_run(setup, grid, method, steps, k, p, i, walks)
                passes += seconds
            else:
                x, nfe = _curve_run(setup, method, steps, k, p, i)
            xs.append(x[0])
        took = passes if method.startswith("ddnm-") else time.perf_counter() - start
        rows.append({"label": label, "method": method, "steps": steps, "k": k, "nfe": nfe,
                     "ms_per_frame": 1e3 * took / len(problems), **score(setup, xs)})
        if method.startswith("ddnm-"):
            rows[-1]["travel"] = list(WALK)
        if method == "ddnm-restart":
            rows[-1]["restart"] = list(restart_timesteps(T))
    return {"dataset": setup.name, "case": CASES[case][0], "frames": frames, "lmmse": lmmse, "rows": rows,
            "skipped_beyond_T": skipped}


def curve_lines(report: dict[str, Any]) -> list[str]:
    lm = report["lmmse"]
    ser = f", SER {lm['ser']:.4f}" if "ser" in lm else ""
    lines = [f"{report['dataset']} / {report['case']} ({report['frames']} frames): LMMSE {lm['nmse_db']:.2f} dB{ser}"]
    for r in report["rows"]:
        ser = f"  SER {r['ser']:.4f}" if "ser" in r else ""
        what = f"{r['label']} {r['steps']}" + (f", P={r['k']}" if r["method"] == "smc" else "")
        if r["method"].startswith("ddnm-"):  # the walked mean, then its restarted rounds
            what = f"DDNM+ {r['steps']} walked {r['travel'][0]}x{r['travel'][1]}, mean of {r['k']}" + (
                f", restart {'/'.join(map(str, r['restart']))}" if "restart" in r else "")
        lines.append(f"  {what:<36} {r['nfe']:>6} NFE  {r['nmse_db']:7.2f} dB  ({lm['nmse_db'] - r['nmse_db']:+.2f} dB over LMMSE)"
                     f"{ser}  {r['ms_per_frame']:8.0f} ms/frame")
    return lines
