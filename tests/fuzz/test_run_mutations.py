"""Mutated run directories (config, summary, a checkpoint's state) through export, resume, distill."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
from hostile import FUZZ, JSON_VALUES, assert_convention, edit_json, fresh, run_cli_in, tree  # noqa: E402

pytestmark = pytest.mark.onnx

RUN_FUZZ = settings(FUZZ, max_examples=40)
RUN_FILES = ("config.json", "summary.json", "state.json")


@pytest.fixture(scope="module")
def run_base(tmp_path_factory, mlp_run):
    root = tmp_path_factory.mktemp("runfuzz")
    shutil.copytree(mlp_run, root / "base")
    return root


def mutate_run(run: Path, target: str, kind: str, seed: int, value) -> None:
    """The bundle mutations, applied to one of a run's JSON files (a checkpoint's state.json included)."""
    rng = np.random.default_rng(seed)
    path = run / "config.json" if target == "config.json" else run / "summary.json"
    if target == "state.json":
        path = sorted((run / "checkpoints").iterdir())[-1] / "state.json"
    if kind == "flip":
        data = bytearray(path.read_bytes())
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: int(rng.integers(len(path.read_bytes())))])
    elif kind == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    else:
        edit_json(path, kind, rng, value)


@RUN_FUZZ
@pytest.mark.slow
@given(target=st.sampled_from(("config.json",) * 3 + RUN_FILES[1:]), kind=st.sampled_from(["flip", "truncate", "json-edit", "json-delete",
                                                                 "type-swap", "deep"]),
       seed=st.integers(0, 2**31 - 1), value=JSON_VALUES, command=st.sampled_from(["export", "resume", "distill"]))
def test_mutated_run_directories_keep_the_convention(run_base, target, kind, seed, value, command):
    """A run directory edited, truncated or fabricated: every command that reads it answers with its
    result or one line, never a traceback (the IndexError of an empty width list, once)."""
    case = fresh(run_base / "case")
    run = case / "run"
    shutil.copytree(run_base / "base", run)
    mutate_run(run, target, kind, seed, value)
    out = case / "out"
    args = {"export": ["export", "onnx", run, "--out", out],
            "resume": ["train", "--out", run, "--resume", "--quiet", "--device", "cpu"],
            "distill": ["distill", run, "--out", out, "--nfe", "4", "--steps-per-stage", "0"]}[command]
    before = tree(case)
    existed = {p for p in run.rglob("*") if p.is_file()}
    result = run_cli_in(case, args)
    event(f"{command} {target} {kind}: exit {result.exit_code}")
    # what the command may write: its output (a bundle directory's files), or on resume the run itself
    outputs = [p for p in case.rglob("*") if p.is_file() and (out in p.parents or (command == "resume" and run in p.parents))]
    assert_convention(result, [out, *outputs], before, case, existed)
    if result.exit_code == 2:
        assert not out.exists()
