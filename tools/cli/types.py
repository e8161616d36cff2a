"""Declared ranges for every option: click types that refuse what a command cannot use.

click's FloatRange lets NaN through (every comparison with NaN is false) and accepts infinities;
:class:`Finite` does neither. Counts, steps and seeds use :data:`SEED`, :func:`count` and friends so
that every command states its ranges the same way and the message names the option.
"""

from __future__ import annotations

import math
from typing import Any

import click

#: numpy accepts any non-negative integer as a seed; 2^63 - 1 keeps it a machine integer everywhere.
SEED = click.IntRange(0, 2**63 - 1)


class Finite(click.FloatRange):
    """A finite float within [min, max] (open ends where asked)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def count(lo: int = 1, hi: int | None = None) -> click.IntRange:
    """A whole number of things (samples, steps, frames, repeats) in [lo, hi]."""
    return click.IntRange(lo, hi)


def positive(hi: float | None = None) -> Finite:
    """A finite number > 0 (sample rates, learning rates, tolerances)."""
    return Finite(0.0, hi, min_open=True)


def non_negative(hi: float | None = None) -> Finite:
    return Finite(0.0, hi)
