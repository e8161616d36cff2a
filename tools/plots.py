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


def samples_figure(generated: np.ndarray, reference: np.ndarray | None, out: Path, title: str = "") -> Path:
    """I/Q frames: traces, constellation and PSD, generated beside reference; 2D points: scatter."""
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
    fig, axes = plt.subplots(len(sets), 3, figsize=(13, 3.4 * len(sets)), squeeze=False)
    for row, (name, x) in enumerate(sets):
        z = x[:, 0] + 1j * x[:, 1]
        ax = axes[row, 0]
        ax.plot(z[0].real, lw=0.8, label="I")
        ax.plot(z[0].imag, lw=0.8, label="Q")
        ax.set_title(f"{name}: frame 0, I/Q")
        ax.set_xlabel("sample")
        ax.legend(loc="upper right")
        ax = axes[row, 1]
        pts = z[: min(len(z), 64)].reshape(-1)
        ax.scatter(pts.real, pts.imag, s=1, alpha=0.4)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: constellation ({min(len(z), 64)} frames)")
        freqs, psd = psd_db(z)
        axes[row, 2].plot(freqs, psd, lw=0.9)
        axes[row, 2].set_title(f"{name}: mean PSD")
        axes[row, 2].set_xlabel("frequency (cycles/sample)")
        axes[row, 2].set_ylabel("dB")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out)
