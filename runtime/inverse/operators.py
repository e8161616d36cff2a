"""Linear measurement operators y = A x for one frame x of shape ``sample_shape`` (batched: (B, ...)).

Each has ``forward`` (A), ``adjoint`` (A^T) and ``pinv`` (A^+, closed form where one exists).
Measurements keep a fixed shape per operator: a mask's y has x's shape with zeros where nothing was
observed; a decimation's y is (C, L / k); a matrix's y is (M,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgediff.runtime.errors import InputError

OPERATORS = ("mask", "identity", "decimate", "matrix", "partial-fourier")


class Operator:
    """Base: shapes and checks. Subclasses implement the three maps on batches."""

    name = "operator"

    def __init__(self, sample_shape: tuple[int, ...]):
        self.sample_shape = tuple(sample_shape)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        return self.sample_shape

    #: Frames this operator is tied to (per-frame masks), or None when one operator serves every frame.
    frames: int | None = None

    def take(self, start: int, stop: int) -> Operator:
        """The operator for frames ``start:stop`` of a batch (itself, unless it is per frame)."""
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pinv(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        """(A A^T + c I)^{-1} v in measurement space, c >= 0 (c = 0: (A A^T)^{-1} on the range)."""
        raise NotImplementedError

    def proximal(self, x0: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
        """argmin_x ||y - A x||^2 + c ||x - x0||^2 = x0 + A^T (A A^T + c I)^{-1} (y - A x0)."""
        return x0 + self.adjoint(self.solve_gram(y - self.forward(x0), c))

    def check_measurement(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind not in "f":
            raise InputError(f"measurement has dtype {y.dtype}: expected real floating-point values")
        if y.shape[1:] != self.measurement_shape:
            raise InputError(f"measurement frames have shape {y.shape[1:]}: the {self.name} operator on frames of "
                             f"{self.sample_shape} expects {self.measurement_shape}")
        if not np.isfinite(y).all():
            raise InputError("the measurement contains NaN or Inf: clean or mask those samples first")
        return y.astype(np.float64)


class Identity(Operator):
    """A = I: denoising."""

    name = "identity"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    adjoint = pinv = forward

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        return v / (1.0 + c)


class Mask(Operator):
    """A = diag(m) with m in {0, 1}: samples lost to interference or clipping. A^+ = A^T = A.

    One mask for every frame ((C, L), or (L,) shared by I and Q), or one per frame (N, C, L)."""

    name = "mask"

    def __init__(self, mask: Any, sample_shape: tuple[int, ...]):
        super().__init__(sample_shape)
        m = np.asarray(mask)
        shape = tuple(sample_shape)
        if m.shape == shape[-1:] and len(shape) > 1:
            m = np.broadcast_to(m, shape)  # one mask per time sample, shared by I and Q
        if m.shape != shape and m.shape[1:] != shape:
            raise InputError(f"mask has shape {m.shape}: expected {shape}, ({shape[-1]},) or one per frame (N, {', '.join(map(str, shape))})")
        if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
            raise InputError("mask holds values other than 0 and 1: expected a 0/1 array (1 = observed)")
        per_frame = m.shape != shape
        observed = m.reshape(len(m), -1).any(axis=1) if per_frame else np.array([m.any()])
        if not observed.all():
            raise InputError(f"mask observes no sample at all{f' in frame {int(np.argmin(observed))}' if per_frame else ''}: "
                             "nothing to reconstruct from")
        self.mask = m.astype(np.float64)
        self.frames = len(m) if per_frame else None

    def take(self, start: int, stop: int) -> Mask:
        if self.frames is None:
            return self
        return Mask(self.mask[start:stop], self.sample_shape)

    def check_batch(self, batch: int) -> None:
        if self.frames is not None and self.frames != batch:
            raise InputError(f"the mask holds {self.frames} per-frame masks for {batch} measured frames: give one per frame")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.mask

    adjoint = pinv = forward

    def check_measurement(self, y: np.ndarray) -> np.ndarray:
        """Entries where the mask is 0 are not measurements: whatever they hold is set to 0."""
        y = super().check_measurement(y)
        self.check_batch(len(y))
        return y * self.mask

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        return v * self.mask / (self.mask + c) if c > 0 else v * self.mask


class Decimate(Operator):
    """Keep every k-th sample after an anti-alias low-pass filter (or plain subsampling).

    The filter is a circular convolution (a windowed sinc with cut-off 1/k), so A = S H is diagonal
    in frequency and A A^T is diagonal on the decimated grid: A^+ = H^T S^T (A A^T)^{-1} in closed form.
    """

    name = "decimate"

    def __init__(self, factor: int, sample_shape: tuple[int, ...], antialias: bool = True, taps: int = 33):
        super().__init__(sample_shape)
        L = sample_shape[-1]
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1 or L % factor:
            raise InputError(f"--factor {factor} must be a positive integer dividing the frame length {L}")
        self.k, self.L = int(factor), L
        h = np.zeros(L)
        if antialias and self.k > 1:
            n = np.arange(taps) - taps // 2
            kernel = np.sinc(n / self.k) / self.k * np.hamming(taps)
            h[n % L] = kernel / kernel.sum()
        else:
            h[0] = 1.0
        self.H = np.fft.fft(h)  # (L,) frequency response
        power = np.abs(self.H) ** 2
        # A A^T on the decimated grid: (1/k) sum of |H|^2 over the k aliases of each frequency
        self.gram = power.reshape(self.k, L // self.k).sum(axis=0) / self.k
        if self.gram.min() <= 1e-12:
            raise InputError("the decimation filter has a null: A A^T is singular; use plain subsampling")

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        return (*self.sample_shape[:-1], self.L // self.k)

    def _filter(self, x: np.ndarray, response: np.ndarray) -> np.ndarray:
        return np.real(np.fft.ifft(np.fft.fft(x, axis=-1) * response, axis=-1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._filter(x, self.H)[..., :: self.k]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        up = np.zeros((*y.shape[:-1], self.L))
        up[..., :: self.k] = y
        return self._filter(up, np.conj(self.H))

    def pinv(self, y: np.ndarray) -> np.ndarray:
        return self.adjoint(self.solve_gram(y, 0.0))

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        return np.real(np.fft.ifft(np.fft.fft(v, axis=-1) / (self.gram + c), axis=-1))


class Matrix(Operator):
    """A dense (M, C*L) sensing matrix over the flattened frame; A^+ by SVD."""

    name = "matrix"

    def __init__(self, matrix: Any, sample_shape: tuple[int, ...]):
        super().__init__(sample_shape)
        A = np.asarray(matrix, dtype=np.float64)
        n = int(np.prod(sample_shape))
        if A.ndim != 2 or A.shape[1] != n:
            raise InputError(f"matrix has shape {A.shape}: expected (M, {n}) over the flattened frame {tuple(sample_shape)}")
        if not np.isfinite(A).all():
            raise InputError("matrix contains NaN or Inf")
        self.A = A
        self.A_pinv = np.linalg.pinv(A)
        lam, self.gram_vecs = np.linalg.eigh(A @ A.T)  # A A^T = U diag(lam) U^T, for any c at once
        self.gram_vals = np.maximum(lam, 0.0)

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        return (self.A.shape[0],)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1) @ self.A.T

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return (y @ self.A).reshape(len(y), *self.sample_shape)

    def pinv(self, y: np.ndarray) -> np.ndarray:
        return (y @ self.A_pinv.T).reshape(len(y), *self.sample_shape)

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        inv = np.where(self.gram_vals + c > 1e-12 * max(self.gram_vals.max(), 1e-30), 1.0 / (self.gram_vals + c), 0.0)
        return ((v @ self.gram_vecs) * inv) @ self.gram_vecs.T


class PartialFourier(Operator):
    """A range-Doppler map X (I/Q frames (2, N, M)) seen through the chirps a radar kept: A = M F^-1, the
    unitary inverse 2D DFT back to the chirp domain (see :mod:`edgediff.runtime.radar`) followed by a
    0/1 mask over chirps (N,), over samples (1, M) broadcast, over both (N, M), or one per frame
    (B, N, M). Measurements are the chirp-domain frames as I/Q (2, N, M), zero where nothing was kept.
    F is unitary, so A A^T = M and A^+ = A^T: DDNM+'s closed form holds exactly."""

    name = "partial-fourier"

    def __init__(self, mask: Any, sample_shape: tuple[int, ...]):
        super().__init__(sample_shape)
        shape = tuple(sample_shape)
        if len(shape) != 3 or shape[0] != 2:
            raise InputError(f"the partial Fourier operator needs I/Q maps (2, N, M); this prior's frames are {shape}: "
                             "use a 2D (radar) bundle")
        n, m = shape[1:]
        k = np.asarray(mask)
        if k.shape == (n,):
            k = np.broadcast_to(k[:, None], (n, m))  # lost chirps: whole rows
        elif k.shape == (1, m):
            k = np.broadcast_to(k, (n, m))  # lost samples of every chirp: whole columns
        if k.shape != (n, m) and k.shape[1:] != (n, m):
            raise InputError(f"mask has shape {np.asarray(mask).shape}: expected ({n},) over chirps, (1, {m}) over samples, "
                             f"({n}, {m}) over both, or one per frame (B, {n}, {m})")
        if k.dtype.kind not in "biuf" or not np.isin(k, (0, 1)).all():
            raise InputError("mask holds values other than 0 and 1: expected a 0/1 array (1 = kept)")
        per_frame = k.shape != (n, m)
        if not (k.reshape(len(k), -1).any(axis=1).all() if per_frame else k.any()):
            raise InputError("mask keeps no chirp sample at all: nothing to reconstruct from")
        self.mask = k.astype(np.float64)
        self.frames = len(k) if per_frame else None

    def take(self, start: int, stop: int) -> PartialFourier:
        return self if self.frames is None else PartialFourier(self.mask[start:stop], self.sample_shape)

    def _m(self) -> np.ndarray:
        return self.mask if self.frames is not None else self.mask[None]

    def forward(self, x: np.ndarray) -> np.ndarray:
        from edgediff.runtime.radar import chirps_from_maps

        d = chirps_from_maps(x[:, 0] + 1j * x[:, 1]) * self._m()
        return np.stack([d.real, d.imag], axis=1)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        from edgediff.runtime.radar import maps_from_chirps

        x = maps_from_chirps((y[:, 0] + 1j * y[:, 1]) * self._m())
        return np.stack([x.real, x.imag], axis=1)

    pinv = adjoint

    def solve_gram(self, v: np.ndarray, c: float) -> np.ndarray:
        m = self._m()[:, None]
        return v * m / (m + c) if c > 0 else v * m

    def check_measurement(self, y: np.ndarray) -> np.ndarray:
        y = super().check_measurement(y)
        if self.frames is not None and self.frames != len(y):
            raise InputError(f"the mask holds {self.frames} per-frame masks for {len(y)} measured frames: give one per frame")
        return y * self._m()[:, None]


def build(kind: str, sample_shape: tuple[int, ...], *, mask: Any = None, factor: int | None = None,
          matrix: Any = None, antialias: bool = True) -> Operator:
    """The operator of ``kind`` with the one parameter it needs."""
    if kind not in OPERATORS:
        raise InputError(f"operator {kind!r} is unknown: expected one of {', '.join(OPERATORS)}")
    if kind == "identity":
        return Identity(sample_shape)
    if kind == "mask":
        if mask is None:
            raise InputError("--operator mask needs --mask FILE.npy (1 = observed)")
        return Mask(mask, sample_shape)
    if kind == "partial-fourier":
        if mask is None:
            raise InputError("--operator partial-fourier needs --mask FILE.npy: 0/1 over chirps (N,), samples (1, M) or both")
        return PartialFourier(mask, sample_shape)
    if kind == "decimate":
        if factor is None:
            raise InputError("--operator decimate needs --factor k")
        return Decimate(factor, sample_shape, antialias=antialias)
    if matrix is None:
        raise InputError("--operator matrix needs --matrix FILE.npy of shape (M, C*L)")
    return Matrix(matrix, sample_shape)
