"""Mutated options and inputs across every command: bad numbers, NaN, huge values, every kind of bad
file, existing outputs, read-only folders; commands that would train or benchmark carry a poisoned
option that keeps them invalid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
from hostile import FUZZ, assert_convention, fresh, run, tree, working_directory  # noqa: E402

pytestmark = pytest.mark.onnx
OPTION_FUZZ = settings(FUZZ, max_examples=220)

OUTPUT_OPTIONS = {"--out", "--plot", "--tweedie", "--json", "--out-interference"}
BAD_NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e309", "abc", "", "99999999999999999999999", "0.5", "1e6"]
#: values for list and range options: empty elements, wrong separators, out of range, repeated, huge
BAD_LISTS = ["1,2", "1,,2", ",", "a,b", "1:2:3", "3:2:1", "1:2", "-1,5", "5000", "0,999,1000", "1,1", "ort,ort",
             "ort,foo", "miss50,nope", "1;2", " 1 , 2 ", "2**70", "1,2,3,4,5,6,7,8,9,10,11,12"]


@pytest.fixture(scope="module")
def files(work):
    root, base = work
    d = root / "inputs"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(d / "y.npy", rng.standard_normal((3, 2, 32)).astype(np.float32))
    np.save(d / "mask.npy", (rng.random(32) < 0.5).astype(np.float32))
    np.save(d / "masks.npy", (rng.random((3, 2, 32)) < 0.5).astype(np.float32))
    np.save(d / "truth.npy", rng.standard_normal((3, 2, 32)).astype(np.float32))
    np.save(d / "three.npy", np.ones(3))
    np.save(d / "empty.npy", np.zeros((0, 2, 32), np.float32))
    np.save(d / "strings.npy", np.array([["a", "b"]]))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "nan.npy", np.full((3, 2, 32), np.nan, np.float32))
    np.save(d / "complex.npy", np.ones((3, 32), np.complex64))
    np.savez(d / "two.npz", a=np.ones(3), b=np.ones(3))
    np.savez(d / "one.npz", y=rng.standard_normal((3, 2, 32)).astype(np.float32))
    (d / "text.npy").write_text("not an array")
    (d / "adir").mkdir(exist_ok=True)
    ro = d / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    return d


def path_values(d: Path) -> list[str]:
    names = ["y.npy", "mask.npy", "masks.npy", "truth.npy", "three.npy", "empty.npy", "strings.npy", "objects.npy",
             "nan.npy", "complex.npy", "two.npz", "one.npz", "text.npy", "adir", "missing.npy", ""]
    return [str(d / n) if n else "" for n in names]


def commands(bundle: Path, d: Path, out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """command -> (a valid, cheap argv; the options a mutation may replace)."""
    y, mask = d / "y.npy", d / "mask.npy"
    return {
        "sample": (["sample", bundle, "--n", "2", "--steps", "2", "--out", out, "--quiet"],
                   ["--n", "--steps", "--eta", "--seed", "--batch", "--every", "--sample-rate", "--threads", "--out",
                    "--tweedie", "--plot", "--sampler", "--format", "--device", "--backend"]),
        "reconstruct": (["reconstruct", bundle, "--y", y, "--operator", "mask", "--mask", mask, "--sigma-y", "0.1",
                         "--steps", "2", "--out", out, "--quiet"],
                        ["--y", "--mask", "--sigma-y", "--steps", "--eta", "--zeta", "--lam", "--seed", "--samples",
                         "--truth", "--plot", "--out", "--operator", "--factor", "--matrix", "--method"]),
        "verify": (["verify", bundle, "--n", "1", "--steps", "2"], ["--n", "--steps", "--seed", "--threads"]),
        "separate": (["separate", "--soi", bundle, "--interference", bundle, "--y", y, "--sigma-y", "0.1", "--steps", "2",
                      "--soi-power", "1", "--interference-power", "1", "--out", out, "--quiet"],
                     ["--y", "--sigma-y", "--steps", "--samples", "--soi-power", "--interference-power", "--method",
                      "--omega", "--out", "--out-interference", "--init", "--interference"]),
        "evaluate": (["evaluate", bundle, "--n", "16", "--steps", "1", "--quiet"],
                     ["--n", "--steps", "--eta", "--seed", "--data", "--json", "--psk"]),
        "plot-schedule": (["plot", "schedule", "--out", out.with_suffix(".png")], ["--T", "--out"]),
        "plot-forward": (["plot", "forward", "--t", "0,10", "--T", "100", "--out", out.with_suffix(".png")],
                         ["--t", "--T", "--length", "--out"]),
        "plot-samples": (["plot", "samples", "--samples", y, "--out", out.with_suffix(".png")],
                         ["--samples", "--n", "--steps", "--out"]),
        "plot-loss": (["plot", "loss", d, "--out", out.with_suffix(".png")], ["--out"]),
        "plot-trajectory": (["plot", "trajectory", "--tweedie", d / "one.npz", "--out", out.with_suffix(".png")],
                            ["--tweedie", "--steps", "--every"]),
        # heavy commands carry a poisoned option that no mutation replaces: they must stop before any work
        "train": (["train", "--dataset", "gmm2d", "--out", d / "run-new", *POISON["train"]],
                  ["--seed", "--width", "--n", "--steps", "--batch", "--ema", "--T", "--checkpoint-every"]),
        "export": (["export", "onnx", d / "no-run", "--out", d / "adir", *POISON["export"]],
                   ["--batch", "--max-batch", "--atol", "--rtol"]),
        "bench": (["bench", bundle, *POISON["bench"]], ["--warmup", "--threads", "--quality-samples", "--batch",
                                                          "--backends"]),
        "bench-stream": (["bench-stream", bundle, *POISON["bench-stream"]], ["--steps", "--batch", "--rate", "--chunk"]),
        "bench-reconstruct": (["bench-reconstruct", bundle, *POISON["bench-reconstruct"]], ["--steps", "--cases"]),
        "bench-samplers": (["bench-samplers", bundle, *POISON["bench-samplers"]], ["--json", "--plot"]),
    }


POISON = {"train": ["--lr", "0"], "export": ["--opset", "5"], "bench": ["--repeats", "0"], "bench-stream": ["--seconds", "0"],
          "bench-reconstruct": ["--frames", "0"], "bench-samplers": ["--n", "0"]}


@OPTION_FUZZ
@given(data=st.data())
def test_mutated_options_keep_the_convention(work, files, data):
    root, base = work
    case = fresh(root / "ocase")
    out = case / "out.npy"
    (files / "readonly" / "x.npy").unlink(missing_ok=True)  # left by an earlier case that succeeded
    table = commands(base, files, out)
    name = data.draw(st.sampled_from(sorted(table)))
    argv, options = table[name]
    argv = list(argv)
    heavy = name in POISON
    named_outputs = []
    for _ in range(data.draw(st.integers(1, 2))):
        option = data.draw(st.sampled_from(options))
        value = data.draw(st.sampled_from(BAD_NUMBERS + BAD_LISTS + path_values(files) + [str(case / "side.png"), str(out),
                                                                             str(files / "readonly" / "x.npy"),
                                                                             "tflite", "cuda", "cuda:7"]))
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        if option in OUTPUT_OPTIONS and value not in ("", "."):
            named_outputs.append(case / value)  # whatever the user names as an output may be written (cwd: case)
    if heavy:
        assert all(p in argv for p in POISON[name])  # still invalid: no real work can start
    if data.draw(st.booleans()):
        out.write_bytes(b"precious")  # an existing output: refused without --force, untouched
    existed = {p for p in (out, out.with_suffix(".png")) if p.exists()}
    outputs = [out, out.with_suffix(".png"), case / "side.png", files / "readonly" / "x.npy"]
    outputs += [p for p in named_outputs if root in p.parents and p not in outputs]
    existed |= {p for p in outputs if p.exists()}
    watched = root
    before = tree(watched)
    with working_directory(case):  # relative output names ("-1", "cuda") land inside the watched tree
        result = run(argv)
    event(f"{name}: exit {result.exit_code}")
    assert_convention(result, [*outputs, *(files / n for n in ("run-new",))], before, watched, existed)
    if out in existed and result.exit_code == 2:
        assert out.read_bytes() == b"precious"
    for p in outputs:  # outputs named inside the shared inputs folder do not outlive this case
        if p not in existed and p.is_file() and files in p.parents:
            p.unlink()

