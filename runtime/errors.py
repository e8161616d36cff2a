"""The project's exceptions.

Every error a user can cause (a bad value, a missing file, a tampered bundle, an engine that is not
installed) is an :class:`EdgediffError`. Its message is one line that names the bad value, what was
expected and, where there is one, the fix. The CLI prints that line and exits with code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgediffError(Exception):
    """Base class of every user-facing error in edgediff."""


class InputError(EdgediffError, ValueError):
    """A value, shape, dtype or range that the caller passed is not acceptable."""


class BundleError(EdgediffError):
    """A bundle (or a run directory) is missing, incomplete, tampered or inconsistent."""


class BackendUnavailableError(EdgediffError):
    """The requested engine (TensorRT, a CUDA device, onnxruntime, torch) is not usable here."""


class DataError(EdgediffError):
    """A dataset file cannot be used for training: missing, wrong rank, non-finite, corrupt."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (cut at ``limit``), for reports that go on after a failure."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
