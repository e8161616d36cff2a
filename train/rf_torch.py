"""The built-in datasets generated in torch on the training device: a fresh batch every step.

The shaping functions mirror :mod:`edgediff.train.rf` term by term (the same draws give the same
frames, which a test checks in float64); :class:`FrameGenerator` draws into buffers that it owns,
so one training step is a fixed program over fixed memory (what a CUDA graph needs): the draws
come from the step's generator outside the graph, the shaping runs inside it. No numpy and no
host-to-device copy happens per step.

Frames are I/Q float tensors (B, 2, L) (points: (B, 2)), divided by the dataset's normalisation
scale, like the resident set. The laws are those of the numpy generators; rf-mix draws a QPSK and a
chirp frame for every row and keeps one by a fair coin (numpy draws only the kept one), so the two
agree in law, not draw for draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from edgediff.runtime.analytic import GMM2D
from edgediff.runtime.errors import InputError
from edgediff.runtime.receivers import rrc_taps
from edgediff.train import rf

GENERATED = ("gmm2d", "rf-qpsk", "rf-qpsk-fast", "rf-chirp", "rf-mix")


def _col(v: torch.Tensor) -> torch.Tensor:
    return v[:, None]


def pulse_taps(params: dict[str, Any], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The RRC pulse as a (1, 1, K) conv1d weight, reversed (conv1d correlates)."""
    taps = rrc_taps(params["samples_per_symbol"], params["rolloff"], params["span_symbols"])
    return torch.as_tensor(taps[::-1].copy(), dtype=dtype, device=device).view(1, 1, -1)


def qpsk_shape(symbols: torch.Tensor, offset: torch.Tensor, cfo: torch.Tensor, phase: torch.Tensor, length: int,
               params: dict[str, Any] = rf.QPSK, taps: torch.Tensor | None = None) -> torch.Tensor:
    """I/Q (B, 2, length) clean QPSK from symbols (B, 2, n_sym) (I and Q rows of +-1/sqrt 2), the
    timing offset (B,) in samples, carrier offset (B,) in cycles per sample and phase (B,) in rad.

    As :func:`edgediff.train.rf.qpsk_shape`: zero-stuffed symbols through the RRC pulse (a full
    convolution), frame sample j taken at ``len(taps) // 2 + span sps / 2 + offset + j``, then the
    carrier rotation exp(j (2 pi cfo n + phase)). ``taps`` from :func:`pulse_taps` (made here when
    None; pass them inside a CUDA graph, where no host-to-device copy may happen)."""
    sps, span = params["samples_per_symbol"], params["span_symbols"]
    B, _, n_sym = symbols.shape
    taps = pulse_taps(params, symbols.dtype, symbols.device) if taps is None else taps
    k = taps.shape[-1]
    # zero-stuffed (2B, 1, n_sym sps): device-to-device writes only (a Python scalar written into a CUDA
    # tensor is a host copy, which a CUDA graph capture refuses)
    up = torch.zeros(B * 2, 1, n_sym * sps, dtype=symbols.dtype, device=symbols.device)
    up[:, 0, ::sps] = symbols.reshape(B * 2, n_sym)
    shaped = F.conv1d(up, taps, padding=k - 1).view(B, 2, -1)  # full convolution (conv1d correlates: taps flipped)
    start = k // 2 + span * sps // 2 + offset.to(torch.long)  # (B,)
    idx = (start[:, None] + torch.arange(length, device=symbols.device)[None])[:, None, :].expand(B, 2, length)
    iq = torch.gather(shaped, 2, idx)  # (B, 2, L)
    n = torch.arange(length, dtype=symbols.dtype, device=symbols.device)[None]
    angle = 2 * math.pi * _col(cfo.to(symbols.dtype)) * n + _col(phase.to(symbols.dtype))
    return _rotate(iq, torch.cos(angle), torch.sin(angle))


def _rotate(iq: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    i, q = iq[:, 0], iq[:, 1]
    return torch.stack([c * i - s * q, s * i + c * q], dim=1)


def chirp_shape(duration: torch.Tensor, delay: torch.Tensor, f0: torch.Tensor, sweep: torch.Tensor,
                phase0: torch.Tensor, length: int) -> torch.Tensor:
    """I/Q (B, 2, length) clean linear FM pulses, as :func:`edgediff.train.rf.chirp_shape`; the phase
    is reduced to its fraction of a cycle before the 2 pi, which keeps float32 accurate over long pulses."""
    dtype = f0.dtype
    k = torch.arange(length, dtype=dtype, device=f0.device)[None] - _col(delay.to(dtype))  # since the pulse began
    on = (k >= 0) & (k < _col(duration.to(dtype)))
    rate = sweep / duration.to(dtype)  # cycles per sample^2
    cycles = _col(f0) * k + 0.5 * _col(rate) * k * k
    angle = 2 * math.pi * (cycles - torch.floor(cycles)) + _col(phase0)
    mask = on.to(dtype)
    return torch.stack([torch.cos(angle) * mask, torch.sin(angle) * mask], dim=1)


def add_noise(iq: torch.Tensor, snr_db: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``iq`` plus ``noise`` (B, 2, L) of unit variance per component, scaled to the per-frame SNR over
    the frame's mean power (as :func:`edgediff.train.rf.add_noise`)."""
    power = iq.square().sum(dim=1).mean(dim=1)  # (B,) mean |s|^2
    std = torch.sqrt(power / 10 ** (snr_db / 10) / 2)
    return iq + std[:, None, None] * noise


class FrameGenerator:
    """Batches of a built-in dataset made on ``device`` from a torch generator.

    ``draw(generator)`` fills the buffers with this step's random numbers (uniforms, bits, normals; a
    fixed order per dataset), ``frames()`` turns them into normalised frames with tensor operations
    only. Both always touch the same memory, so ``frames()`` may run inside a captured CUDA graph.
    """

    def __init__(self, dataset: str, batch: int, length: int, scale: float, device: torch.device | str,
                 dtype: torch.dtype = torch.float32):
        if dataset not in GENERATED:
            raise InputError(f"dataset {dataset!r} has no generator on the device: expected one of "
                             f"{', '.join(GENERATED)} (user data trains from the resident set)")
        self.dataset, self.batch, self.length, self.scale = dataset, batch, length, float(scale)
        self.device, self.dtype = torch.device(device), dtype
        self.buffers: dict[str, torch.Tensor] = {}
        kinds = {"gmm2d": ["gmm"], "rf-qpsk": ["qpsk"], "rf-qpsk-fast": ["qpsk"], "rf-chirp": ["chirp"],
                 "rf-mix": ["qpsk", "chirp", "coin"]}[dataset]
        self.qpsk_params = rf.QPSK_FAST if dataset == "rf-qpsk-fast" else rf.QPSK
        self._plan: list[tuple[str, str, tuple[int, ...], int]] = []  # (name, kind of draw, shape, int high)
        for kind in kinds:
            self._plan += getattr(self, f"_{kind}_plan")()
        for name, how, shape, _ in self._plan:
            self.buffers[name] = torch.empty(shape, device=self.device, dtype=torch.long if how == "int" else dtype)
        # constants live on the device from the start: frames() may not copy from the host
        self.taps = pulse_taps(self.qpsk_params, dtype, self.device)
        self.gmm_cdf = torch.as_tensor(np.cumsum(GMM2D.weights)[:-1], dtype=dtype, device=self.device)
        self.gmm_means = torch.as_tensor(np.asarray(GMM2D.means), dtype=dtype, device=self.device)
        self.gmm_stds = torch.as_tensor(np.asarray(GMM2D.stds), dtype=dtype, device=self.device)

    # --- what each dataset draws, in order --------------------------------------------------------------
    def _qpsk_plan(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        B, L, p = self.batch, self.length, self.qpsk_params
        n_sym = rf.qpsk_symbols_per_frame(L, p)
        return [("q_bits", "int", (B, 2, n_sym), 2), ("q_offset", "int", (B,), p["samples_per_symbol"]),
                ("q_cfo", "rand", (B,), 0), ("q_phase", "rand", (B,), 0), ("q_snr", "rand", (B,), 0),
                ("q_noise", "randn", (B, 2, L), 0)]

    def _chirp_plan(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        B, L = self.batch, self.length
        return [(f"c_{n}", "rand", (B,), 0) for n in ("duration", "delay", "f0", "sweep", "phase", "snr")] + [
            ("c_noise", "randn", (B, 2, L), 0)]

    def _coin_plan(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        return [("coin", "rand", (self.batch,), 0)]

    def _gmm_plan(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        return [("g_u", "rand", (self.batch,), 0), ("g_z", "randn", (self.batch, 2), 0)]

    # --- the two halves of a step ------------------------------------------------------------------------
    def draw(self, generator: torch.Generator) -> None:
        """This step's random numbers, into the buffers (outside any graph: the generator is seeded per step)."""
        for name, how, shape, high in self._plan:
            out = self.buffers[name]
            if how == "int":
                torch.randint(0, high, shape, generator=generator, out=out)
            elif how == "rand":
                torch.rand(shape, generator=generator, out=out)
            else:
                torch.randn(shape, generator=generator, out=out)

    def frames(self) -> torch.Tensor:
        """(B, 2, L) normalised frames (gmm2d: (B, 2) points) from the drawn buffers."""
        if self.dataset == "gmm2d":
            x = self._gmm()
        elif self.dataset == "rf-chirp":
            x = self._chirp()
        elif self.dataset == "rf-mix":
            x = torch.where((self.buffers["coin"] < 0.5)[:, None, None], self._chirp(), self._qpsk())
        else:
            x = self._qpsk()
        return x / self.scale

    def _qpsk(self) -> torch.Tensor:
        b, p = self.buffers, self.qpsk_params
        symbols = (2.0 * b["q_bits"].to(self.dtype) - 1.0) / math.sqrt(2.0)
        cfo = (2 * b["q_cfo"] - 1) * p["cfo_max"]
        lo, hi = p["snr_db"]
        clean = qpsk_shape(symbols, b["q_offset"], cfo, 2 * math.pi * b["q_phase"], self.length, p, self.taps)
        return add_noise(clean, lo + (hi - lo) * b["q_snr"], b["q_noise"])

    def _chirp(self) -> torch.Tensor:
        b, p, L = self.buffers, rf.CHIRP, self.length

        def uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * u

        duration = torch.round(uniform(b["c_duration"], p["duration"]) * L)
        delay = torch.floor(b["c_delay"] * (L - duration + 1))
        clean = chirp_shape(duration, delay, uniform(b["c_f0"], p["start_freq"]), uniform(b["c_sweep"], p["sweep"]),
                            2 * math.pi * b["c_phase"], L)
        snr = uniform(b["c_snr"], p["snr_db"]) + 10 * torch.log10(duration / L)
        return add_noise(clean, snr, b["c_noise"])

    def _gmm(self) -> torch.Tensor:
        comp = torch.bucketize(self.buffers["g_u"], self.gmm_cdf, right=True)  # inverse CDF of the weights
        return self.gmm_means[comp] + self.gmm_stds[comp][:, None] * self.buffers["g_z"]
