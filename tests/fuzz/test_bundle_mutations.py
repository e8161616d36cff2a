"""Mutated bundles (bit flips, truncations, JSON edits with hashes recomputed, type swaps, deleted
keys, a manifest nested 200 000 deep, bytes changed inside the graph) through sample, verify, doctor."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
from hostile import FUZZ, JSON_VALUES, assert_convention, edit_json, fresh, run, tree  # noqa: E402

pytestmark = pytest.mark.onnx


def rehash(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    if isinstance(m.get("files"), dict):
        for name, entry in m["files"].items():
            if isinstance(entry, dict) and (bundle / name).is_file():
                entry["sha256"] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(m))



@st.composite
def bundle_mutation(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "json-edit", "json-delete", "type-swap", "deep", "swap-model"]))
    return kind, draw(st.integers(0, 2**31 - 1)), draw(JSON_VALUES)


def mutate(bundle: Path, kind: str, seed: int, value) -> None:
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in bundle.iterdir())
    target = bundle / names[rng.integers(len(names))]
    if kind == "flip":
        data = bytearray(target.read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        target.write_bytes(bytes(data))
    elif kind == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: int(rng.integers(len(data)))])
    elif kind == "deep":
        (bundle / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "swap-model":  # bytes changed inside the graph, hash recomputed: only the self-test can tell
        data = bytearray((bundle / "model.onnx").read_bytes())
        start = len(data) // 3
        for i in rng.integers(start, len(data) - 16, 64):
            data[i] ^= 0x40
        (bundle / "model.onnx").write_bytes(bytes(data))
        rehash(bundle)
    else:
        edit_json(bundle / "manifest.json", kind, rng, value)
        if rng.random() < 0.7:
            rehash(bundle)



@FUZZ
@given(mutation=bundle_mutation(), command=st.sampled_from(["sample", "verify", "doctor"]))
def test_mutated_bundles_keep_the_convention(work, mutation, command):
    root, base = work
    case = fresh(root / "case")
    bundle = case / "bundle"
    shutil.copytree(base, bundle)
    mutate(bundle, *mutation)
    out = case / "s.npy"
    args = {"sample": ["sample", bundle, "--n", "2", "--steps", "2", "--out", out, "--quiet"],
            "verify": ["verify", bundle, "--n", "1", "--steps", "2"],
            "doctor": ["doctor", bundle]}[command]
    before = tree(case)
    result = run(args)
    event(f"{command} {mutation[0]}: exit {result.exit_code}")
    if command == "doctor":  # doctor reports an unusable bundle and still exits 0
        assert result.exit_code == 0 and result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    else:
        assert_convention(result, [out], before, case, set())
    if command == "sample" and result.exit_code == 0:
        assert np.load(out).shape == (2, 2, 32)

