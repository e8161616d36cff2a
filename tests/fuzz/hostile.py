"""The hostile-input convention and its helpers, shared by the three fuzz modules.

The convention: exit 0 only with finite output (and a bundle that passed its self-test, which
loading runs); otherwise exit 2 with exactly one stderr line and no traceback; never a hang (an
alarm stops a run after ``HANG_S``); nothing left under an output name that did not exist before,
and no other file touched. Runs in-process through click's CliRunner so that hundreds of cases fit
the suite's time budget; ``derandomize`` makes hypothesis draw the same cases every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from edgediff.tools.cli import cli

HANG_S = 60
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Hang(Exception):
    pass


@contextmanager
def alarm(seconds: int):
    def handler(signum, frame):
        raise Hang(f"no answer in {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def working_directory(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run(args: list[str]):
    with alarm(HANG_S):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    return result


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its content digest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_convention(result, outputs: list[Path], before: dict[str, str], root: Path, existed: set[Path]) -> None:
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{type(exc).__name__}: {exc}"
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    after = tree(root)
    touched = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    allowed = {str(p.relative_to(root)) for p in outputs}
    assert touched <= allowed, f"files touched outside the outputs: {sorted(touched - allowed)}"
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgediff: error: "), result.stderr
        for p in outputs:
            assert p in existed or not p.exists(), f"{p} written although the command failed"
    else:
        for p in outputs:
            if p.suffix == ".npy" and str(p.relative_to(root)) in touched and p.exists():
                assert np.isfinite(np.load(p)).all(), f"{p}: non-finite output with exit 0"



JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                        st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=4),
                        st.dictionaries(st.sampled_from(["min", "max", "kind", "scale", "sha256", "T"]),
                                        st.integers(-5, 5), max_size=3))


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, prefix + (i,))


def edit_json(path: Path, kind: str, rng, value) -> None:
    """One JSON mutation of the file at ``path``, at a key path drawn with ``rng``: ``json-delete``
    removes it, ``type-swap`` wraps its value in a list (or a list in a dict), anything else sets
    ``value`` there."""
    doc = json.loads(path.read_text())
    where = [p for p in paths_of(doc) if p]
    where = where[rng.integers(len(where))]
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if kind == "json-delete":
        del parent[where[-1]]
    elif kind == "type-swap":
        old = parent[where[-1]]
        parent[where[-1]] = [old] if not isinstance(old, list) else {"x": old}
    else:
        parent[where[-1]] = value
    path.write_text(json.dumps(doc))


def fresh(case: Path) -> Path:
    """An empty case directory (whatever the previous example left is removed)."""
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    return case



def run_cli_in(case: Path, args: list):
    with working_directory(case):
        return run(args)
