"""INT8 bundles: quantize a tiny bundle for real, run the QDQ graph on ONNX Runtime, keep the manifest's
hashes, let the self-test catch a swapped model, span the schedule when calibrating, and write
nothing when the gate fails."""

import hashlib
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from click.testing import CliRunner  # noqa: E402

from edgediff.export import quantize as q  # noqa: E402
from edgediff.runtime.backends import load  # noqa: E402
from edgediff.runtime.bundle import Bundle, sha256_file  # noqa: E402
from edgediff.runtime.errors import BundleError, InputError  # noqa: E402
from edgediff.tools.cli import cli  # noqa: E402

pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, unet_bundle):
    out = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(unet_bundle, out)
    res = CliRunner().invoke(cli, ["export", "int8", str(out), "--calibration", "64", "--gate-frames", "64"])
    assert res.exit_code == 0, res.output
    return out


def test_the_int8_model_is_a_qdq_graph_in_the_manifest_and_samples(int8_bundle):
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["files"][q.INT8_FILE]["sha256"] == sha256_file(int8_bundle / q.INT8_FILE)
    assert m["int8"]["gate"]["passed"] and m["int8"]["calibration"]["method"] == "percentile"
    ops = {n.op_type for n in onnx.load(str(int8_bundle / q.INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    d = load(int8_bundle, precision="int8")  # self-test against reference.npz within the int8 tolerance
    assert d.self_test_error < q.SELF_TEST_RTOL and d.engine.precision == "int8"
    res = CliRunner().invoke(cli, ["sample", str(int8_bundle), "--precision", "int8", "--n", "3", "--steps", "4",
                                   "--out", str(int8_bundle.parent / "s.npy"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert np.isfinite(np.load(int8_bundle.parent / "s.npy")).all()


def int8_weights(path):
    """The int8 initializers (the quantized weights) of a QDQ model."""
    model = onnx.load(str(path))
    return [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]


def test_weights_keep_to_seven_bits_unless_eight_are_asked_for(tmp_path, int8_bundle):
    """7-bit weights: pairs of u8 x s8 products cannot saturate the 16-bit sums of x86 CPUs without VNNI."""
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["int8"]["weight_bits"] == 7 and m["int8"]["weights"] == "int8 per channel, 7-bit range"
    seven = int8_weights(int8_bundle / q.INT8_FILE)
    assert seven and max(int(np.abs(w.astype(np.int32)).max()) for w in seven) <= 64
    q.quantize(Bundle.open(int8_bundle), tmp_path / "eight.onnx", count=64, weight_bits=8)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in int8_weights(tmp_path / "eight.onnx")) > 64
    with pytest.raises(InputError, match="weight-bits"):
        q.quantize(Bundle.open(int8_bundle), tmp_path / "x.onnx", weight_bits=4)


def test_the_self_test_catches_a_swapped_int8_model(tmp_path, int8_bundle):
    bundle = tmp_path / "b"
    shutil.copytree(int8_bundle, bundle)
    model = onnx.load(str(bundle / q.INT8_FILE))
    for init in model.graph.initializer:  # every float tensor scaled: another network, same graph
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 1:
            arr = onnx.numpy_helper.to_array(init) * 1.7
            init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(model, str(bundle / q.INT8_FILE))
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][q.INT8_FILE]["sha256"] = sha256_file(bundle / q.INT8_FILE)  # the hash recomputed: only the self-test can tell
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not reproduce reference.npz"):
        load(bundle, precision="int8")


def test_calibration_spans_the_schedule(unet_bundle):
    batches = q.calibration_inputs(Bundle.open(unet_bundle), 128, seed=3)
    t = np.concatenate([b["t"] for b in batches])
    T = Bundle.open(unet_bundle).schedule.T
    assert len(t) == 128 and t.min() >= 0 and t.max() <= T - 1
    counts = np.bincount((t * 8 // T).astype(int), minlength=8)
    assert np.all(np.abs(counts - 16) <= 2), counts  # every eighth of the schedule, evenly (stratified, not random)


def test_a_failing_gate_writes_nothing(tmp_path, unet_bundle, monkeypatch):
    from edgediff.tools import int8_gate

    bundle = tmp_path / "b"
    shutil.copytree(unet_bundle, bundle)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir()}
    monkeypatch.setattr(int8_gate, "GATES", {k: -1.0 for k in int8_gate.GATES})  # nothing can pass
    res = CliRunner().invoke(cli, ["export", "int8", str(bundle), "--calibration", "32", "--gate-frames", "32"])
    assert res.exit_code == 2 and "int8 gate failed, nothing written" in res.output
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir()} == before
    assert not list(tmp_path.glob("**/*.int8.onnx"))


def test_int8_without_an_int8_model_names_the_command(unet_bundle):
    with pytest.raises(InputError, match="make it with `edgediff export int8 BUNDLE`"):
        load(unet_bundle, precision="int8")
    with pytest.raises(InputError, match="selects an ONNX model"):
        load(unet_bundle, backend="torch", precision="int8")
