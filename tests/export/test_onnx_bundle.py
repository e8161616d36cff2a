"""Export to ONNX with the parity gate, the bundle's contents, and every way a bundle can be bad."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgediff.export.bundle_onnx import OnnxExportOptions, export_bundle  # noqa: E402
from edgediff.export.onnx_export import export as onnx_export_fn  # noqa: E402
from edgediff.runtime import BundleError, InputError, load  # noqa: E402
from edgediff.runtime.bundle import FINGERPRINT_KEY, Bundle  # noqa: E402
from edgediff.train.run import load_run  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.onnx]


def edgediff(*args):
    return subprocess.run([sys.executable, "-m", "edgediff", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("which", ["unet", "mlp"])
def test_bundle_contents_and_manifest(which, unet_bundle, mlp_bundle, unet_run, mlp_run):
    bundle_dir, run = (unet_bundle, unet_run) if which == "unet" else (mlp_bundle, mlp_run)
    b = Bundle.open(bundle_dir)
    m = b.manifest
    expected = {"model.onnx", "reference.npz"} | ({"model.fp16.onnx", "stats.npz"} if which == "unet" else set())
    assert set(m["files"]) == expected
    if which == "unet":  # the training frames' mean and covariance, for LMMSE on the device
        mean, cov = b.stats()
        assert mean.shape == (64,) and cov.shape == (64, 64) and np.allclose(cov, cov.T, atol=1e-6)
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(expected | {"manifest.json"})
    assert m["parity"]["passed"] and len(m["parity"]["checks"]) == 12
    for check in m["parity"]["checks"]:
        assert {"max_abs", "max_rel", "cosine", "snr_db"} <= set(check) and check["max_abs"] < 1e-4
    assert {c["name"] for c in m["parity"]["checks"]} >= {"batch 1, t=0", "batch 7, t=T-1", "batch 16, t=random"}
    assert set(m["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert m["schedule"]["fingerprint"] == b.schedule.fingerprint() and m["schedule"]["kind"] == "linear"
    assert m["io"]["inputs"][0]["name"] == "x_t" and m["io"]["inputs"][1]["dtype"] == "float32"
    assert m["batch"] == {"min": 1, "opt": 1, "max": 16, "dynamic": True}
    config, _ = load_run(run)
    assert tuple(m["sample_shape"]) == config.sample_shape and m["normalisation"] == config.normalisation.to_dict()
    assert m["source_run"]["path"] == str(run.resolve())


def test_onnx_graph_is_clean_checked_and_stamped(unet_bundle):
    proto = onnx.load(str(unet_bundle / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["x_t", "t"] and [o.name for o in proto.graph.output] == ["eps"]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in proto.graph.input)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert max(o.version for o in proto.opset_import if o.domain == "") == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[FINGERPRINT_KEY] == Bundle.open(unet_bundle).schedule.fingerprint()
    names = [n.name for n in proto.graph.node]
    assert "embed/Sin_2" in names and any(n.startswith("down.0.norm1/") for n in names)
    assert not any(p.key == "pkg.torch.onnx.stack_trace" for n in proto.graph.node for p in n.metadata_props)
    # constants folded: no compute node whose inputs are all constants
    constants = {i.name for i in proto.graph.initializer} | {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    foldable = [n.name for n in proto.graph.node if n.op_type != "Constant" and n.input and all(i in constants for i in n.input)]
    assert foldable == []


def test_reference_npz_is_the_torch_models_output(unet_bundle, unet_run):
    with np.load(unet_bundle / "reference.npz") as raw:  # the file itself, in the model's own dtypes
        ref = {k: raw[k] for k in ("x_t", "t", "eps")}
    _, model = load_run(unet_run)
    assert ref["x_t"].dtype == np.float32 and ref["t"].dtype == np.float32 and len(ref["t"]) == 8
    assert 0 in ref["t"] and 99 in ref["t"]
    with torch.no_grad():
        expected = model(torch.from_numpy(ref["x_t"]), torch.from_numpy(ref["t"])).numpy()
    np.testing.assert_array_equal(ref["eps"], expected)
    sess = ort.InferenceSession(str(unet_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x_t": ref["x_t"], "t": ref["t"]})[0]  # replayed as stored
    np.testing.assert_allclose(got, ref["eps"], atol=1e-5, rtol=1e-5)


def test_fp16_onnx_keeps_norms_softmax_and_embedding_in_fp32(unet_bundle):
    proto = onnx.load(str(unet_bundle / "model.fp16.onnx"))
    types = {i.name: i.data_type for i in proto.graph.initializer}
    cast_to = {o: a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to" for o in n.output}
    for node in proto.graph.node:
        if node.op_type in ("InstanceNormalization", "Softmax", "Sin", "Cos"):
            for name in node.input:
                dtype = types.get(name, cast_to.get(name, onnx.TensorProto.FLOAT))
                assert dtype == onnx.TensorProto.FLOAT, (node.name, name)
    assert sum(1 for t in types.values() if t == onnx.TensorProto.FLOAT16) > 10
    report = Bundle.open(unet_bundle).manifest["fp16"]
    assert report["worst_rel_l2"] < 1e-2 and report["fp32_nodes"] > 0
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.FLOAT] * 2


def test_fixed_batch_and_opset_17(tmp_path, mlp_run):
    m = export_bundle(mlp_run, tmp_path / "b", OnnxExportOptions(batch=4, opset=17))
    proto = onnx.load(str(tmp_path / "b" / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert max(o.version for o in proto.opset_import if o.domain == "") == 17
    assert m["batch"] == {"min": 4, "opt": 4, "max": 4, "dynamic": False}
    assert {c["name"].split(",")[0] for c in m["parity"]["checks"]} == {"batch 4"}
    assert Bundle.open(tmp_path / "b").reference()["x_t"].shape[0] == 4


def test_failing_gate_exits_nonzero_and_leaves_nothing(tmp_path, mlp_run):
    res = edgediff("export", "onnx", mlp_run, "--out", tmp_path / "b", "--atol", "0", "--rtol", "0")
    assert res.returncode == 2 and "parity gate failed" in res.stderr and res.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_exporter_failure_is_one_clear_error():
    class Broken(torch.nn.Module):
        def forward(self, x, t):
            raise RuntimeError("cannot trace this")

    with pytest.raises(BundleError, match="ONNX export failed"):
        onnx_export_fn(Broken(), (2,))


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda b: corrupt(b / "model.onnx"), r"model.onnx: sha256 .* does not match"),
        (lambda b: corrupt(b / "reference.npz"), r"reference.npz: sha256"),
        (lambda b: (b / "model.onnx").unlink(), r"model.onnx: listed in the manifest but missing"),
        (lambda b: (b / "manifest.json").write_text("{oops"), "corrupt JSON"),
        (lambda b: (b / "manifest.json").unlink(), "manifest.json: missing"),
    ],
)
def test_tampered_bundles_are_refused_before_parsing(tmp_path, mlp_bundle, damage, match):
    b = tmp_path / "b"
    shutil.copytree(mlp_bundle, b)
    damage(b)
    with pytest.raises(BundleError, match=match):
        load(b, backend="ort")


def test_manifest_paths_cannot_leave_the_bundle(tmp_path, mlp_bundle):
    b = tmp_path / "b"
    shutil.copytree(mlp_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["../secret"] = {"sha256": "0" * 64}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="plain file name inside the bundle"):
        Bundle.open(b)


def test_model_from_another_export_is_detected(tmp_path, mlp_run, mlp_bundle):
    """A model.onnx whose schedule differs from the manifest's: hashes fixed up, fingerprint still disagrees."""
    from edgediff.runtime.bundle import sha256_file
    from edgediff.train.config import RunConfig
    from edgediff.runtime import NoiseSchedule

    other_run = tmp_path / "run2"
    shutil.copytree(mlp_run, other_run)
    cfg = json.loads((other_run / "config.json").read_text())
    cfg["schedule"] = NoiseSchedule.cosine(T=100).to_dict()
    (other_run / "config.json").write_text(json.dumps(cfg))
    assert RunConfig.load(other_run).schedule.kind == "cosine"
    export_bundle(other_run, tmp_path / "other", OnnxExportOptions(max_batch=16))
    b = tmp_path / "b"
    shutil.copytree(mlp_bundle, b)
    shutil.copy(tmp_path / "other" / "model.onnx", b / "model.onnx")
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["model.onnx"]["sha256"] = sha256_file(b / "model.onnx")
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="schedule fingerprint .* does not match manifest.json"):
        load(b, backend="ort")


@pytest.mark.parametrize(
    "prepare, match",
    [
        (lambda r: shutil.rmtree(r), "no such run directory"),
        (lambda r: (r / "weights.safetensors").unlink(), "weights.safetensors: missing"),
        (lambda r: (r / "weights.safetensors").write_bytes(b"\x00" * 64), "corrupt safetensors"),
        (lambda r: (r / "config.json").write_text("{"), "config.json: corrupt JSON"),
        (lambda r: (r / "config.json").write_text(
            (r / "config.json").read_text().replace('"kind": "mlp"', '"kind": "transformer"')), "model.kind is 'transformer'"),
    ],
)
def test_bad_run_directories(tmp_path, mlp_run, prepare, match):
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    prepare(run)
    res = edgediff("export", "onnx", run, "--out", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    assert match in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(tmp_path, mlp_run):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = edgediff("export", "onnx", mlp_run, "--out", out)
    assert res.returncode == 2 and "--force" in res.stderr and (out / "keep.txt").exists()
    # --force replaces bundles and empty directories only: a folder of the user's files is never deleted
    res = edgediff("export", "onnx", mlp_run, "--out", out, "--force")
    assert res.returncode == 2 and "not an edgediff bundle" in res.stderr and (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    res = edgediff("export", "onnx", mlp_run, "--out", out, "--force", "--max-batch", "8")
    assert res.returncode == 0, res.stderr
    assert Bundle.open(out).batch_range == (1, 8)
    res = edgediff("export", "onnx", mlp_run, "--out", out, "--force", "--max-batch", "4")  # a bundle: replaced
    assert res.returncode == 0 and Bundle.open(out).batch_range == (1, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers


def test_bad_opset(tmp_path, mlp_run):
    with pytest.raises(InputError, match="--opset 16 is too old"):
        export_bundle(mlp_run, tmp_path / "b", OnnxExportOptions(opset=16))
