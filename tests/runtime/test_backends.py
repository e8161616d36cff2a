"""Loading bundles into denoisers: ONNX Runtime, the torch reference, automatic choice, the lean wall."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgediff.runtime import BundleError, InputError, load, sample  # noqa: E402
from edgediff.runtime.bundle import Bundle, sha256_file  # noqa: E402

pytestmark = pytest.mark.onnx


def test_ort_denoiser_knows_its_bundle_and_matches_reference(unet_bundle):
    d = load(unet_bundle, backend="ort")
    b = Bundle.open(unet_bundle)
    assert d.backend == "ort" and d.provider == "CPUExecutionProvider"
    assert d.schedule == b.schedule and d.sample_shape == (2, 32) and d.normalisation == b.normalisation
    assert (d.min_batch, d.max_batch) == (1, 16)
    ref = b.reference()
    eps = d(ref["x_t"], ref["t"])
    assert eps.dtype == np.float32 and eps.shape == ref["x_t"].shape
    np.testing.assert_allclose(eps, ref["eps"], atol=1e-5, rtol=1e-5)
    for batch in (1, 3, 16):  # any batch within the profile
        assert d(ref["x_t"][:1].repeat(batch, 0), ref["t"][:1].repeat(batch)).shape[0] == batch


def test_batch_and_shape_outside_the_bundle_are_refused(unet_bundle):
    d = load(unet_bundle, backend="ort")
    with pytest.raises(InputError, match=r"batch 17 is outside .* \[1, 16\]"):
        d(np.zeros((17, 2, 32), np.float32), np.zeros(17, np.int64))
    with pytest.raises(InputError, match=r"sample shape \(2, 64\)"):
        d(np.zeros((1, 2, 64), np.float32), np.zeros(1, np.int64))


def test_auto_picks_onnxruntime_on_the_cpu_and_says_why(unet_bundle, caplog):
    caplog.set_level("INFO")
    d = load(unet_bundle)
    assert d.backend == "ort" and "no TensorRT plan in the bundle" in d.reason
    assert any("backend ort" in r.message for r in caplog.records)


def test_torch_backend_matches_ort_and_refuses_changed_weights(tmp_path, unet_bundle, unet_run):
    pytest.importorskip("torch")
    t_d, o_d = load(unet_bundle, backend="torch"), load(unet_bundle, backend="ort")
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 2, 32)).astype(np.float32), rng.integers(0, 100, 5)
    np.testing.assert_allclose(o_d(x, t), t_d(x, t), atol=1e-5, rtol=1e-5)
    run = tmp_path / "run"
    shutil.copytree(unet_run, run)
    data = bytearray((run / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (run / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="changed since this bundle was exported"):
        load(unet_bundle, backend="torch", run_dir=run)


def test_torch_backend_reads_a_bundles_own_weights_where_its_run_is_gone(unet_bundle):
    """Shipped priors travel without their runs: the bundle itself, as run_dir, gives the torch model
    its weights back from model.onnx (proved on reference.npz), for exact DPS's gradients."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from_run, from_onnx = load(unet_bundle, backend="torch"), load(unet_bundle, backend="torch", run_dir=unet_bundle)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 2, 32)).astype(np.float32), rng.integers(0, 100, 4)
    np.testing.assert_allclose(from_onnx(x, t), from_run(x, t), atol=1e-5, rtol=1e-5)
    v = rng.standard_normal(x.shape).astype(np.float32)
    (_, vjp_run), (_, vjp_onnx) = from_run.engine.forward_with_vjp(x, t), from_onnx.engine.forward_with_vjp(x, t)
    np.testing.assert_allclose(vjp_onnx(v), vjp_run(v), atol=1e-4, rtol=1e-4)


def test_unknown_backend(unet_bundle):
    with pytest.raises(InputError, match="backend 'tflite' is unknown"):
        load(unet_bundle, backend="tflite")


BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "onnx", "onnxscript", "safetensors", "matplotlib", "tqdm"}:
                raise ImportError(f"blocked for this test: {name}")
    sys.meta_path.insert(0, Block())
    """
)


def test_full_sample_with_numpy_and_onnxruntime_alone(tmp_path, unet_bundle):
    """The lean path: the CLI's `sample` and the library, with torch and onnx unimportable."""
    out = tmp_path / "s.npy"
    code = BLOCK + textwrap.dedent(
        f"""
        import numpy as np
        from edgediff.runtime import load, sample
        d = load({str(unet_bundle)!r}, backend="ort")
        res = sample(d, d.schedule, (3, *d.sample_shape), method="ddim", steps=10, rng=np.random.default_rng(0))
        assert res.nfe == 10 and np.isfinite(res.x).all()
        from edgediff.tools.cli import main
        sys.argv = ["edgediff", "sample", {str(unet_bundle)!r}, "--n", "5", "--steps", "10", "--out", {str(out)!r}, "--quiet"]
        try:
            main()
        except SystemExit as e:
            assert e.code == 0, e.code
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
        assert not leaked, leaked
        print("lean ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lean ok" in proc.stdout and np.load(out).shape == (5, 2, 32)


def test_sampling_a_bundle_matches_manual_loop(unet_bundle):
    d = load(unet_bundle, backend="ort")
    a = sample(d, d.schedule, (4, 2, 32), method="ddim", steps=10, rng=np.random.default_rng(3)).x
    b = sample(d, d.schedule, (4, 2, 32), method="ddim", steps=10, rng=np.random.default_rng(3)).x
    np.testing.assert_array_equal(a, b)


def test_manifest_normalisation_is_validated(tmp_path, mlp_bundle):
    b = tmp_path / "b"
    shutil.copytree(mlp_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["normalisation"] = {"kind": "rms", "scale": -1}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="normalisation"):
        load(b, backend="ort")
    assert sha256_file(b / "model.onnx") == m["files"]["model.onnx"]["sha256"]
