"""Input checks shared by the step functions, the sampler and the backends.

Each raises :class:`InputError` with the offending value and what was expected, so that a bad call
fails at the boundary instead of producing NaNs a thousand steps later.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from edgediff.runtime.errors import InputError

Timestep = Union[int, np.ndarray]


def check_timesteps(T: int, t: Any, batch: int | None, *, name: str = "t", allow_minus_one: bool = False) -> Timestep:
    """Return ``t`` as a Python int or an int64 array of shape ``(batch,)``, within ``[0, T)``.

    ``allow_minus_one`` admits ``-1`` (DDIM's "after the last step", where abar = 1).
    """
    low = -1 if allow_minus_one else 0
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        if not low <= int(t) < T:
            raise InputError(f"{name}={int(t)} is outside [{low}, {T}): expected a 0-based timestep index")
        return int(t)
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} has dtype {arr.dtype}: expected an integer timestep index (int or int array)")
    if arr.ndim != 1 or (batch is not None and arr.shape[0] != batch):
        raise InputError(f"{name} has shape {arr.shape}: expected ({batch},), one timestep per batch element")
    if arr.size and (arr.min() < low or arr.max() >= T):
        bad = arr[(arr < low) | (arr >= T)][0]
        raise InputError(f"{name} holds {int(bad)}, outside [{low}, {T}): expected 0-based timestep indices")
    return arr.astype(np.int64, copy=False)


def check_array(name: str, x: Any, *, finite: bool = True) -> np.ndarray:
    """A real floating array with a batch axis, free of NaN and Inf."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise InputError(f"{name} has dtype {arr.dtype}: expected a floating-point array")
    if arr.ndim < 1:
        raise InputError(f"{name} is a scalar: expected an array of shape (B, ...)")
    if finite and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        raise InputError(f"{name} contains {bad}: expected finite values (check the model or the input data)")
    return arr


def check_same_shape(name: str, arr: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    if arr.shape != ref.shape:
        raise InputError(f"{name} has shape {arr.shape}, {ref_name} has {ref.shape}: expected equal shapes")


def per_sample(values: np.ndarray, t: Timestep, ndim: int) -> np.ndarray | float:
    """Gather ``values[t]`` and shape it to broadcast against a (B, ...) array of ``ndim`` dims."""
    if isinstance(t, int):
        return float(values[t])
    return values[t].reshape((-1,) + (1,) * (ndim - 1))


def resolve_noise(
    noise: Any, rng: np.random.Generator | None, shape: tuple[int, ...], *, needed: bool
) -> np.ndarray | None:
    """The step's Gaussian noise: the given array, or a draw from ``rng``; giving both is an error."""
    if noise is not None and rng is not None:
        raise InputError("both noise and rng were given: pass the noise array or a Generator, not both")
    if not needed:
        return None
    if noise is not None:
        arr = check_array("noise", noise)
        if arr.shape != shape:
            raise InputError(f"noise has shape {arr.shape}: expected {shape}, the shape of x_t")
        return arr
    if rng is None:
        raise InputError("this step adds noise but neither noise nor rng was given: pass one of them")
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng is a {type(rng).__name__}: expected a numpy.random.Generator")
    return rng.standard_normal(shape)
