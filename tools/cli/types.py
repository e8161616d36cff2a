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
    """A list (``1,16,64``; ``1:1:16`` with ``sep=":"``), each element converted and range-checked by
    ``element`` (any click type: :func:`count`, :class:`Finite`, a ``click.Choice``), with ``lengths``
    the allowed element counts (or ``min_len``..``max_len``), optionally ``unique`` or ``nondecreasing``;
    the message names the option and the element that failed. Every option that takes a list or a
    range uses this type: no command splits a string by hand, and nothing is clamped."""

    name = "list"

    def __init__(self, element: click.ParamType, min_len: int = 1, max_len: int | None = None, unique: bool = False,
                 sep: str = ",", lengths: tuple[int, ...] | None = None, nondecreasing: bool = False):
        self.element, self.min_len, self.max_len, self.unique = element, min_len, max_len, unique
        self.sep, self.lengths, self.nondecreasing = sep, lengths, nondecreasing

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"{self.element.name.upper().replace(' ', '_')}[{self.sep}...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [v.strip() for v in str(value).split(self.sep)]
        if any(not v for v in items):
            self.fail(f"{value!r} has an empty element: give values separated by single {self.sep!r}", param, ctx)
        out = []
        for i, item in enumerate(items):
            try:
                out.append(self.element.convert(item, param, ctx))
            except click.BadParameter as exc:
                self.fail(f"element {i + 1} of {value!r}: {exc.message}", param, ctx)
        if self.lengths is not None and len(out) not in self.lengths:
            self.fail(f"{value!r} has {len(out)} elements: expected {' or '.join(map(str, self.lengths))}", param, ctx)
        if len(out) < self.min_len or (self.max_len is not None and len(out) > self.max_len):
            most = f"at most {self.max_len}" if self.max_len is not None else "any number of"
            self.fail(f"{value!r} has {len(out)} elements: expected at least {self.min_len} and {most}", param, ctx)
        if self.unique and len(set(out)) != len(out):
            self.fail(f"{value!r} repeats an element", param, ctx)
        if self.nondecreasing and any(a > b for a, b in zip(out, out[1:])):
            self.fail(f"{value!r} must not decrease (e.g. 1{self.sep}1{self.sep}16)", param, ctx)
        return out


#: A TensorRT optimisation profile over the batch: ``MIN:OPT:MAX`` (or one size for a fixed batch).
BATCH_PROFILE = CommaList(click.IntRange(1, 1 << 16), sep=":", lengths=(1, 3), nondecreasing=True)
#: DDNM+'s time-travel trick: ``L:R``, blocks of L steps walked R more times (runtime.inverse.methods.travel_order).
TRAVEL = CommaList(click.IntRange(1, 10_000), sep=":", lengths=(2,))
#: joint DDNM+'s restarts from the mean so far, one round at each timestep: ``600,500,400,300``.
RESTART = CommaList(click.IntRange(1, 100_000), max_len=100)


def within(option: str, values: list[int], lo: int, hi: int, what: str) -> None:
    """Values of a list option that must lie in [lo, hi] for this run (a bundle's T, an engine's batch
    range): the one-line error names the first that does not; nothing is clamped."""
    from edgediff.runtime.errors import InputError

    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise InputError(f"{option} {bad[0]}: outside {lo}..{hi} ({what})")
