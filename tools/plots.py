"""Figures (matplotlib, headless). Each function writes one PNG and returns its path.

matplotlib is imported inside each function with the Agg backend, so the CLI runs on boards without
a display and the runtime never depends on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.errors import BackendUnavailableError


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise BackendUnavailableError("plots need matplotlib: pip install 'edgediff[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: Path) -> Path:
    from edgediff.runtime.atomic import atomic_path

    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return out


def psd_db(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean power spectral density (dB) of complex frames (N, L), with a Hann window, fftshifted."""
    window = np.hanning(frames.shape[1])
    spec = np.fft.fftshift(np.fft.fft(frames * window, axis=1), axes=1)
    power = np.mean(np.abs(spec) ** 2, axis=0) / np.sum(window**2)
    freqs = np.fft.fftshift(np.fft.fftfreq(frames.shape[1]))
    return freqs, 10 * np.log10(power + 1e-20)


def samples_figure(generated: np.ndarray, reference: np.ndarray | None, out: Path, title: str = "",
                   dataset: str | None = None) -> Path:
    """I/Q frames: a trace, the receiver's view and the mean PSD, generated beside reference; 2D points:
    a scatter. The receiver's view follows the data (``dataset``): the blind PSK receiver's
    constellation with its EVM for QPSK, the instantaneous frequency for chirps, both for the mix;
    frames of unknown law get the raw I/Q scatter, titled as such (it is not a constellation)."""
    plt = pyplot()
    if generated.ndim == 2:  # points (N, D)
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.3, label="training")
        ax.scatter(generated[:, 0], generated[:, 1], s=2, alpha=0.5, label="generated")
        ax.set_aspect("equal")
        ax.legend(loc="upper right")
        ax.set_title(title or "samples")
        return save(fig, out)
    sets = [("generated", generated)] + ([("training", reference)] if reference is not None else [])
    if generated.ndim == 4:  # range-Doppler maps (B, 2, H, W)
        return maps_figure(sets, out, title)
    fig, axes = plt.subplots(len(sets), 3, figsize=(13, 3.6 * len(sets)), squeeze=False)
    for row, (name, x) in enumerate(sets):
        z = x[:, 0] + 1j * x[:, 1]
        ax = axes[row, 0]
        ax.plot(z[0].real, lw=0.8, label="I")
        ax.plot(z[0].imag, lw=0.8, label="Q")
        ax.set_title(f"{name}: frame 0, I/Q")
        ax.set_xlabel("sample")
        ax.legend(loc="upper right")
        receiver_panel(axes[row, 1], z.astype(np.complex128), dataset, name)
        freqs, psd = psd_db(z)
        axes[row, 2].plot(freqs, psd, lw=0.9)
        axes[row, 2].set_title(f"{name}: mean PSD")
        axes[row, 2].set_xlabel("frequency (cycles/sample)")
        axes[row, 2].set_ylabel("dB")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out)


def maps_figure(sets: list[tuple[str, np.ndarray]], out: Path, title: str = "", cfar: Any = None,
                marks: list[Any] | None = None, detections: list[np.ndarray] | None = None) -> Path:
    """Range-Doppler maps |X|^2 in dB (3 per set), CA-CFAR detections circled: how a radar engineer
    reads them. ``marks``: true target cells per panel (crosses), where known; ``detections``: per
    set, boolean maps from a detector set elsewhere (a matched threshold) instead of ``cfar``'s."""
    from edgediff.runtime.radar import Cfar

    plt = pyplot()
    cfar = cfar or Cfar(train=3, guard=1, pfa=1e-3)
    cols = min(3, min(len(x) for _, x in sets))
    fig, axes = plt.subplots(len(sets), cols, figsize=(3.6 * cols, 3.3 * len(sets)), squeeze=False)
    for row, (name, x) in enumerate(sets):
        maps = x[:cols, 0] + 1j * x[:cols, 1]
        det = cfar.detect(maps) if detections is None else detections[row][:cols]
        for j in range(cols):
            ax = axes[row, j]
            power = 10 * np.log10(np.abs(maps[j]) ** 2 + 1e-12)
            top = 10 * np.log10(np.abs(x[:cols, 0] + 1j * x[:cols, 1]).max() ** 2 + 1e-12)  # one scale per set
            ax.imshow(power, origin="lower", cmap="viridis", vmin=top - 40, vmax=top, aspect="auto")
            ii, jj = np.nonzero(det[j])
            ax.scatter(jj, ii, s=40, facecolors="none", edgecolors="r", linewidths=1.0)
            if marks is not None and row < len(marks) and j < len(marks[row]):
                for (i, k) in marks[row][j]:
                    ax.plot(k, i, "w+", ms=8)
            ax.set_title(f"{name} {j}: {int(det[j].sum())} detections", fontsize=9)
            ax.set_xlabel("range cell")
            ax.set_ylabel("Doppler cell")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out)


def receiver_panel(ax: Any, z: np.ndarray, dataset: str | None, name: str) -> None:
    """What a radio sees in complex frames (N, L) of ``dataset`` (see :func:`samples_figure`)."""
    from edgediff.runtime.errors import InputError
    from edgediff.runtime.fidelity import chirp_linearity
    from edgediff.runtime.receivers import blind_receive
    from edgediff.tools.evaluate import PSK_DATASETS, chirps_by_linearity, psk_format

    chirp = np.zeros(len(z), bool)
    if dataset in ("rf-chirp", "rf-mix"):
        chirp = chirps_by_linearity(chirp_linearity(z))
    psk = z[~chirp] if dataset == "rf-mix" else z
    if dataset in PSK_DATASETS and len(psk):
        try:
            res = blind_receive(psk, psk_format(dataset))
        except InputError:  # frames too short for the receiver: show the samples, say so
            return _raw_scatter(ax, z, name, "frames too short for the receiver")
        pts = np.ravel(res.symbols)
        ax.scatter(pts.real, pts.imag, s=2, alpha=0.3, rasterized=True)
        ax.set_xlim(-1.8, 1.8)
        ax.set_ylim(-1.8, 1.8)
        ax.set_aspect("equal")
        share = f", {100 * chirp.mean():.0f} % chirps" if dataset == "rf-mix" else ""
        ax.set_title(f"{name}: blind receiver, EVM median {np.median(res.evm_db):.1f} dB\n"
                     f"({len(psk)} QPSK frames{share})", fontsize=9)
        ax.set_xlabel("I")
        ax.set_ylabel("Q")
    elif dataset in ("rf-chirp", "rf-mix"):
        for row in z[:8]:
            env = np.abs(row)
            on = env[1:] > 0.5 * env.max()
            inst = np.angle(row[1:] * np.conj(row[:-1])) / (2 * np.pi)
            ax.plot(np.flatnonzero(on), inst[on], ".", ms=1.5)
        ax.set_title(f"{name}: instantaneous frequency (8 frames)\nlinearity error median "
                     f"{np.nanmedian(chirp_linearity(z)):.4f}", fontsize=9)
        ax.set_xlabel("sample")
        ax.set_ylabel("cycles/sample")
    else:
        _raw_scatter(ax, z, name, "not symbols")


def _raw_scatter(ax: Any, z: np.ndarray, name: str, why: str) -> None:
    pts = z[: min(len(z), 64)].reshape(-1)
    ax.scatter(pts.real, pts.imag, s=1, alpha=0.4)
    ax.set_aspect("equal")
    ax.set_title(f"{name}: raw I/Q samples ({min(len(z), 64)} frames; {why})", fontsize=9)


def noise_level_t(schedule: Any, sigma: float) -> int:
    """The step whose noise-to-signal ratio sqrt((1 - abar) / abar) is closest to ``sigma``."""
    ratio = np.sqrt((1 - schedule.alphas_bar) / schedule.alphas_bar)
    return int(np.argmin(np.abs(ratio - sigma)))


def score_field(schedule: Any, sigmas: tuple[float, ...], out: Path, learned: Any = None, extent: float = 3.5) -> Path:
    """Arrows of the score of the project's 2D mixture at several noise levels (exact; learned beside it).

    Plotted in the "signal" coordinates y = x_t / sqrt(abar), where the score is sqrt(abar) grad log p_t:
    at low noise the arrows point sharply to the nearest mode, at high noise the field is smooth.
    """
    from edgediff.runtime.analytic import GMM2D, GaussianMixtureDenoiser

    plt = pyplot()
    exact = GaussianMixtureDenoiser.from_spec(schedule, GMM2D)
    cols = [("exact", None)] + ([("learned", learned)] if learned is not None else [])
    fig, axes = plt.subplots(len(sigmas), len(cols), figsize=(4.3 * len(cols), 4.1 * len(sigmas)), squeeze=False)
    grid = np.linspace(-extent, extent, 21)
    gx, gy = np.meshgrid(grid, grid)
    y = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for row, sigma in enumerate(sigmas):
        t = noise_level_t(schedule, sigma)
        abar = schedule.alphas_bar[t]
        x_t = np.sqrt(abar) * y
        for col, (name, model) in enumerate(cols):
            if model is None:
                score = exact.score(x_t, t)
            else:
                call = getattr(model, "batched", model)  # bundle engines take a bounded batch
                eps = call(x_t.astype(np.float32), np.full(len(x_t), t))
                score = -eps.astype(np.float64) / np.sqrt(1 - abar)
            s = np.sqrt(abar) * score  # score in y coordinates
            norm = np.linalg.norm(s, axis=1, keepdims=True)
            unit = s / np.maximum(norm, 1e-12)
            ax = axes[row, col]
            ax.quiver(y[:, 0], y[:, 1], unit[:, 0], unit[:, 1], np.log10(norm[:, 0] + 1e-12), cmap="viridis",
                      angles="xy", scale=30, width=0.004)
            ax.scatter(*np.asarray(GMM2D.means).T, c="red", s=12, marker="x")
            ax.set_aspect("equal")
            ax.set_title(f"{name} score, sigma = {sigma:g} (t = {t})")
    fig.suptitle("score of the 2D mixture: direction (arrows), log10 magnitude (colour)")
    fig.tight_layout()
    return save(fig, out)


def forward_process(frame: np.ndarray, schedules: dict[str, Any], ts: tuple[int, ...], out: Path, seed: int = 0) -> Path:
    """One I/Q frame through q(x_t | x0) at several t, one column per schedule (I channel, same noise)."""
    plt = pyplot()
    from edgediff.runtime.steps import q_sample

    noise = np.random.default_rng(seed).standard_normal(frame.shape)
    fig, axes = plt.subplots(len(ts), len(schedules), figsize=(6 * len(schedules), 1.6 * len(ts)), sharex=True,
                             squeeze=False)
    for col, (name, schedule) in enumerate(schedules.items()):
        for row, t in enumerate(ts):
            x_t = q_sample(schedule, frame[None], t, noise[None])[0]
            ax = axes[row, col]
            ax.plot(x_t[0], lw=0.7, color="tab:blue")
            ax.plot(np.sqrt(schedule.alphas_bar[t]) * frame[0], lw=0.7, color="black", alpha=0.5)
            ax.set_ylabel(f"t={t}")
            ax.text(0.99, 0.85, f"abar {schedule.alphas_bar[t]:.3f}", transform=ax.transAxes, ha="right", fontsize=8)
            if row == 0:
                ax.set_title(f"{name} schedule (I channel; black: sqrt(abar) x0)")
    fig.tight_layout()
    return save(fig, out)


def schedules(named: dict[str, Any], out: Path) -> Path:
    """abar_t, SNR (log scale) and beta_t of each schedule."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for name, s in named.items():
        t = np.arange(s.T)
        axes[0].plot(t, s.alphas_bar, label=name)
        axes[1].semilogy(t, s.snr, label=name)
        axes[2].semilogy(t, s.betas, label=name)
    for ax, title in zip(axes, ("alpha-bar_t", "SNR = abar / (1 - abar)", "beta_t")):
        ax.set_title(title)
        ax.set_xlabel("t (0-based index)")
        ax.legend()
    fig.tight_layout()
    return save(fig, out)


def trajectory(ts: np.ndarray, x0_hat: np.ndarray, out: Path, sample_index: int = 0) -> Path:
    """Tweedie x0_hat along the reverse process: how the estimate sharpens as t falls."""
    plt = pyplot()
    k = len(ts)
    fig, axes = plt.subplots(k, 1, figsize=(9, 1.4 * k + 0.6), sharex=True, squeeze=False)
    for row in range(k):
        ax = axes[row, 0]
        x = x0_hat[row, sample_index]
        if x.ndim == 2:  # I/Q
            ax.plot(x[0], lw=0.7, label="I")
            ax.plot(x[1], lw=0.7, label="Q")
        else:
            ax.scatter(x0_hat[row, :, 0], x0_hat[row, :, 1], s=2)
        ax.set_ylabel(f"t={int(ts[row])}")
    axes[0, 0].set_title("Tweedie estimate x0_hat = E[x0 | x_t] along the reverse process")
    fig.tight_layout()
    return save(fig, out)


def loss_curve(steps: np.ndarray, losses: np.ndarray, out: Path, title: str = "") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.semilogy(steps, losses, lw=1)
    ax.axhline(1.0, color="gray", ls="--", lw=0.8, label="predicting zero (1.0)")
    ax.set_xlabel("step")
    ax.set_ylabel("DDPM loss (MSE on eps)")
    ax.set_title(title or "training loss")
    ax.legend()
    fig.tight_layout()
    return save(fig, out)


def reconstruction_figure(truth: np.ndarray | None, measured: np.ndarray, recon: np.ndarray, out: Path,
                          title: str = "") -> Path:
    """One frame: truth (if known), the measurement as the operator's A^T y, the reconstruction, the error."""
    plt = pyplot()
    rows = [("measurement (A^T y)", measured), ("reconstruction", recon)]
    if truth is not None:
        rows = [("truth", truth)] + rows + [("error (reconstruction - truth)", recon - truth)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.7 * len(rows) + 0.5), sharex=True, squeeze=False)
    for ax, (name, x) in zip(axes[:, 0], rows):
        x = np.asarray(x)
        if x.ndim == 2:
            ax.plot(x[0], lw=0.8, label="I")
            ax.plot(x[1], lw=0.8, label="Q")
        else:
            ax.plot(x, lw=0.8)
        ax.set_ylabel(name, fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    return save(fig, out)


def constellation_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], out: Path, title: str = "") -> Path:
    """Side-by-side constellations: each panel (label, symbols (N, K) complex, per-frame EVM dB)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (label, symbols, evm_db) in zip(axes[0], panels):
        pts = np.ravel(symbols)
        ax.scatter(pts.real, pts.imag, s=2, alpha=0.25, color="tab:blue", rasterized=True)
        ax.set_title(f"{label}\nEVM median {np.median(evm_db):.1f} dB, {100 * np.mean(evm_db < -15):.0f}% < -15 dB",
                     fontsize=9)
        ax.set_xlim(-1.8, 1.8)
        ax.set_ylim(-1.8, 1.8)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.8", lw=0.5)
        ax.axvline(0, color="0.8", lw=0.5)
        ax.set_xlabel("I")
        ax.set_ylabel("Q")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out)


def separation_figure(mixture: np.ndarray, soi: np.ndarray, interference: np.ndarray, out: Path, title: str = "") -> Path:
    """One frame: the mixture and the two estimates (I traces), and their power spectra."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, x in (("mixture", mixture), ("interference estimate", interference), ("SOI estimate", soi)):
        ax1.plot(x[0], lw=0.8, label=label)
        f, p = psd_db(x[None, 0] + 1j * x[None, 1])
        ax2.plot(f, p, lw=0.9, label=label)
    ax1.set_xlabel("sample")
    ax1.set_ylabel("I")
    ax2.set_xlabel("frequency (cycles/sample)")
    ax2.set_ylabel("power (dB)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save(fig, out)
