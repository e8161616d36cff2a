"""Hostile inputs: mutated bundles and mutated options, every command, in-process and seeded.

The convention under test: exit 0 only with finite output (and a bundle that passed its self-test,
which loading runs); otherwise exit 2 with exactly one stderr line and no traceback; never a hang
(an alarm stops a run after ``HANG_S``); nothing left under an output name that did not exist
before, and no other file touched. Runs in-process through click's CliRunner so that hundreds of
cases fit the suite's time budget; ``derandomize`` makes hypothesis draw the same cases every run.
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
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
from click.testing import CliRunner  # noqa: E402

from edgediff.tools.cli import cli  # noqa: E402

pytestmark = pytest.mark.onnx
HANG_S = 60
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
OPTION_FUZZ = settings(FUZZ, max_examples=220)


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


# ---- bundle mutations ------------------------------------------------------------------------------

def rehash(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    if isinstance(m.get("files"), dict):
        for name, entry in m["files"].items():
            if isinstance(entry, dict) and (bundle / name).is_file():
                entry["sha256"] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(m))


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
        m = json.loads((bundle / "manifest.json").read_text())
        paths = [p for p in paths_of(m) if p]
        path = paths[rng.integers(len(paths))]
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        if kind == "json-delete":
            del parent[path[-1]]
        elif kind == "type-swap":
            old = parent[path[-1]]
            parent[path[-1]] = [old] if not isinstance(old, list) else {"x": old}
        else:
            parent[path[-1]] = value
        (bundle / "manifest.json").write_text(json.dumps(m))
        if rng.random() < 0.7:
            rehash(bundle)


def fresh(case: Path) -> Path:
    """An empty case directory (whatever the previous example left is removed)."""
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    return case


@pytest.fixture(scope="module")
def work(tmp_path_factory, unet_bundle):
    root = tmp_path_factory.mktemp("fuzz")
    base = root / "base"
    shutil.copytree(unet_bundle, base)
    return root, base


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


# ---- option and input mutations ---------------------------------------------------------------------

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


# ---- run-directory mutations ---------------------------------------------------------------------------

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
        d = json.loads(path.read_text())
        paths = [p for p in paths_of(d) if p]
        where = paths[rng.integers(len(paths))]
        parent = d
        for key in where[:-1]:
            parent = parent[key]
        if kind == "json-delete":
            del parent[where[-1]]
        elif kind == "type-swap":
            old = parent[where[-1]]
            parent[where[-1]] = [old] if not isinstance(old, list) else {"x": old}
        else:
            parent[where[-1]] = value
        path.write_text(json.dumps(d))


@RUN_FUZZ
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


def run_cli_in(case: Path, args: list):
    with working_directory(case):
        return run(args)
