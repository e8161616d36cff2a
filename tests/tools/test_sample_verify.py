"""`edgediff sample` and `edgediff verify` end to end, and every bad input they can get."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgediff.runtime import load  # noqa: E402
from edgediff.runtime.bundle import Bundle, sha256_file  # noqa: E402
from edgediff.runtime.generate import SampleRequest, generate  # noqa: E402

pytestmark = pytest.mark.onnx


def edgediff(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_sample_writes_user_units_reproducibly(tmp_path, unet_bundle):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    res = edgediff("sample", unet_bundle, "--n", "6", "--steps", "10", "--batch", "4", "--seed", "7", "--out", a,
                   "--tweedie", tmp_path / "traj.npz", "--every", "3", "--plot", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    assert "6 samples, 10 NFE each (60 network calls in 2 batches)" in res.stdout and "samples/s" in res.stdout
    assert edgediff("sample", unet_bundle, "--n", "6", "--steps", "10", "--batch", "4", "--seed", "7", "--out", b,
                    "--quiet").returncode == 0
    x = np.load(a)
    assert x.shape == (6, 2, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.load(b))  # same seed, same backend: identical
    # normalisation undone: the library's network-unit samples times the bundle's scale
    d = load(unet_bundle, backend="ort")
    run = generate(d, SampleRequest(n=6, steps=10, batch=4, seed=7))
    np.testing.assert_allclose(x, run.x, rtol=1e-6)
    assert d.normalisation.scale != 1.0
    traj = np.load(tmp_path / "traj.npz")
    assert traj["x0_hat"].shape == (4, 6, 2, 32) and traj["t"].tolist() == [99, 69, 39, 9]  # steps 0, 3, 6 and the last
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "s.png", "traj.npz"]


def test_sigmf_output_round_trips(tmp_path, unet_bundle):
    sigmf = pytest.importorskip("sigmf")
    res = edgediff("sample", unet_bundle, "--n", "3", "--steps", "5", "--format", "sigmf", "--out", tmp_path / "gen",
                   "--sample-rate", "2e6", "--quiet")
    assert res.returncode == 0, res.stderr
    assert edgediff("sample", unet_bundle, "--n", "3", "--steps", "5", "--out", tmp_path / "gen.npy",
                    "--quiet").returncode == 0
    rec = sigmf.sigmffile.fromfile(str(tmp_path / "gen.sigmf-meta"))
    assert rec.get_global_info()["core:datatype"] == "cf32_le" and rec.get_global_info()["core:sample_rate"] == 2e6
    iq = np.load(tmp_path / "gen.npy")
    np.testing.assert_allclose(rec.read_samples(), (iq[:, 0] + 1j * iq[:, 1]).reshape(-1), rtol=1e-6)
    notes = rec.get_annotations()
    assert len(notes) == 3 and "ddim-5" in notes[0]["core:generator"] and "seed=0" in notes[0]["core:generator"]


def test_sigmf_refuses_points(tmp_path, mlp_bundle):
    res = edgediff("sample", mlp_bundle, "--n", "3", "--steps", "5", "--format", "sigmf", "--out", tmp_path / "g")
    assert res.returncode == 2 and "needs I/Q frames" in res.stderr and list(tmp_path.iterdir()) == []


def tampered(tmp_path, bundle):
    b = tmp_path / "tampered"
    shutil.copytree(bundle, b)
    data = bytearray((b / "model.onnx").read_bytes())
    data[100] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    return b


@pytest.mark.parametrize(
    "args, match",
    [
        (["{missing}"], "no such bundle directory"),
        (["{tampered}"], "model.onnx: sha256"),
        (["{bundle}", "--backend", "tflite"], "Invalid value for '--backend'"),
        (["{bundle}", "--backend", "trt"], "has no TensorRT plan"),
        (["{bundle}", "--n", "0"], "Invalid value for '--n'"),
        (["{bundle}", "--steps", "0"], "Invalid value for '--steps'"),
        (["{bundle}", "--steps", "101"], "--steps 101 is out of range"),
        (["{bundle}", "--eta", "-0.5"], "Invalid value for '--eta'"),
        (["{bundle}", "--eta", "nan"], "is not a finite number"),
        (["{bundle}", "--batch", "17"], "--batch 17 is outside 1..16"),
        (["{bundle}", "--out", "{tmp}/nope/s.npy"], "does not exist"),
        (["{bundle}", "--grid", "99-60:4,50-0:6"], "does not start where"),
        (["{bundle}", "--grid", "99-60:4,60-0:6", "--steps", "5"], "--steps 5 and --grid's 10 steps disagree"),
        (["{bundle}", "--grid", "99-60:4", "--sampler", "ddpm"], "DDPM runs every one"),
    ],
)
def test_sample_bad_inputs_one_line_exit_2_nothing_written(tmp_path, unet_bundle, args, match):
    fmt = {"missing": tmp_path / "missing", "tampered": tampered(tmp_path, unet_bundle), "bundle": unet_bundle, "tmp": tmp_path}
    argv = [a.format(**fmt) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "s.npy")]
    res = edgediff("sample", *argv)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("edgediff: error: ") and match in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.npy").exists()


def test_torch_backend_without_the_run_names_the_flag_that_gives_it_weights(tmp_path, unet_bundle):
    """A shipped prior travels without its training run: --backend torch says in one line to pass
    --run with the bundle itself, and that then samples from the weights read back from model.onnx."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    b = tmp_path / "cloned"
    shutil.copytree(unet_bundle, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["source_run"]["path"] = str(tmp_path / "gone" / "unet-s1")  # the run stayed on another machine
    (b / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "s.npy"
    res = edgediff("sample", b, "--backend", "torch", "--n", 2, "--out", out)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "the exporting run is not here" in res.stderr and f"--run {b}" in res.stderr and not out.exists()
    res = edgediff("sample", b, "--backend", "torch", "--run", b, "--n", 2, "--out", out)
    assert res.returncode == 0, res.stderr
    assert np.load(out).shape[0] == 2


def test_sample_walks_a_given_grid_and_says_so(tmp_path, unet_bundle):
    """--grid places a solver's steps: the Tweedie trajectory's timesteps are the grid's, and the SigMF
    metadata's generator names it."""
    spec = "99-40:3,40-0:5"
    res = edgediff("sample", unet_bundle, "--n", 3, "--sampler", "sde-dpmpp2m", "--grid", spec, "--format", "sigmf",
                   "--out", tmp_path / "s", "--tweedie", tmp_path / "t.npz", "--every", 1, "--quiet")
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "t.npz")["t"].tolist() == [99, 79, 60, 40, 32, 24, 16, 8]
    meta = json.loads((tmp_path / "s.sigmf-meta").read_text())
    assert f"sde-dpmpp2m-8 grid={spec} " in meta["annotations"][0]["core:generator"]


def test_verify_passes_and_reports_every_case(unet_bundle):
    pytest.importorskip("torch")
    res = edgediff("verify", unet_bundle)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("ok")]
    assert len(lines) == 6 and "reference.npz" in lines[0] and "end to end" in lines[-1]
    assert all("max abs" in ln and "cosine" in ln and "SNR" in ln for ln in lines)
    assert "median |dx|" in lines[-1]


def test_verify_offers_no_self_test_flag_it_would_ignore(unet_bundle):
    # verify's first check is the reference replay that the load's self-test would run: the flag did nothing
    assert "--no-self-test" not in edgediff("verify", "--help").stdout
    res = edgediff("verify", unet_bundle, "--no-self-test")
    assert res.returncode == 2 and "No such option '--no-self-test'" in res.stderr and res.stderr.count("\n") == 1
    assert "--no-self-test" in edgediff("sample", "--help").stdout  # the commands that self-test keep it


def test_verify_fails_on_a_wrong_reference(tmp_path, unet_bundle):
    b = tmp_path / "b"
    shutil.copytree(unet_bundle, b)
    ref = Bundle.open(b).reference()
    np.savez(b / "reference.npz", x_t=ref["x_t"], t=ref["t"], eps=ref["eps"] * 1.001)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["reference.npz"]["sha256"] = sha256_file(b / "reference.npz")
    (b / "manifest.json").write_text(json.dumps(m))
    res = edgediff("verify", b, "--backend", "ort")
    assert res.returncode == 2 and "verify failed" in res.stderr and res.stderr.count("\n") == 1
    assert "FAIL reference.npz" in res.stdout


def test_verify_takes_another_machines_fp32_noise(tmp_path, unet_bundle):
    """The reference was stored by another machine's kernels: fp32 noise of 2e-5 absolute in every output (ARM64's
    ONNX Runtime read rf-chirp's at 1.48e-5, at outputs of 0.015) is the engine computing the model, not a fault."""
    b = tmp_path / "b"
    shutil.copytree(unet_bundle, b)
    ref = Bundle.open(b).reference()
    noise = np.where(np.random.default_rng(0).random(ref["eps"].shape) < 0.5, -2e-5, 2e-5).astype(np.float32)
    np.savez(b / "reference.npz", x_t=ref["x_t"], t=ref["t"], eps=ref["eps"] + noise)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["reference.npz"]["sha256"] = sha256_file(b / "reference.npz")
    (b / "manifest.json").write_text(json.dumps(m))
    res = edgediff("verify", b, "--backend", "ort")
    assert res.returncode == 0 and "ok   reference.npz" in res.stdout, res.stdout + res.stderr


def test_verify_compares_with_torch_where_its_note_says(tmp_path):
    """A shipped prior's run is never here: the note names --run; given it, the torch checks run."""
    pytest.importorskip("torch")
    res = edgediff("verify", "gmm2d")
    assert res.returncode == 0 and "no torch comparison" in res.stdout and "--run " in res.stdout
    from edgediff.runtime.bundle import resolve

    res = edgediff("verify", "gmm2d", "--run", resolve("gmm2d"))
    assert res.returncode == 0 and "no torch comparison" not in res.stdout, res.stdout + res.stderr
    assert res.stdout.count("  ok   torch model, fresh inputs") == 4 and "passed: 6 checks" in res.stdout


def test_verify_without_torch_checks_the_stored_reference(unet_bundle):
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import importlib.util\n"
        "importlib.util.find_spec = (lambda f: (lambda name, *a: None if name == 'torch' else f(name, *a)))(importlib.util.find_spec)\n"
        "from edgediff.tools.cli import main\n"
        f"sys.argv = ['edgediff', 'verify', {str(unet_bundle)!r}]\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ok   reference.npz" in res.stdout and "torch is not installed" in res.stdout
