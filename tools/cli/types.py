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


class CommaList(click.ParamType):
    """A comma-separated list (``1,16,64``), each element converted and range-checked by ``element``
    (any click type: :func:`count`, :class:`Finite`, a ``click.Choice``), between ``min_len`` and
    ``max_len`` elements; the message names the option and the element that failed. Every option that
    takes a list uses this type: no command splits a string by hand."""

    name = "list"

    def __init__(self, element: click.ParamType, min_len: int = 1, max_len: int | None = None, unique: bool = False):
        self.element, self.min_len, self.max_len, self.unique = element, min_len, max_len, unique

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"{self.element.name.upper().replace(' ', '_')}[,...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [v.strip() for v in str(value).split(",")]
        if any(not v for v in items):
            self.fail(f"{value!r} has an empty element: give values separated by single commas", param, ctx)
        out = []
        for i, item in enumerate(items):
            try:
                out.append(self.element.convert(item, param, ctx))
            except click.BadParameter as exc:
                self.fail(f"element {i + 1} of {value!r}: {exc.message}", param, ctx)
        if len(out) < self.min_len or (self.max_len is not None and len(out) > self.max_len):
            most = f"at most {self.max_len}" if self.max_len is not None else "any number of"
            self.fail(f"{value!r} has {len(out)} elements: expected at least {self.min_len} and {most}", param, ctx)
        if self.unique and len(set(out)) != len(out):
            self.fail(f"{value!r} repeats an element", param, ctx)
        return out
