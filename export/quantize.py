"""INT8 engines: ONNX Runtime's static quantization to QDQ, calibrated across the schedule, kept only
if a receiver says the radio still works.

1. Calibration inputs are x_t = sqrt(abar) x0 + sqrt(1 - abar) eps drawn through the forward process
   from the bundle's own data (the built-in generator its manifest names, in network units; a user
   bundle's stats.npz Gaussian; unit normals for points without one), at timesteps stratified over
   the whole schedule: activation ranges drift with t (PTQ4DM, Shang et al. 2023; Q-Diffusion, Li et
   al. 2023), so a calibration at one noise level breaks the others.
2. ``onnxruntime.quantization.quantize_static``: QDQ format, per-channel int8 weights, uint8
   activations (u8s8: what x86 VNNI and Arm's dot products run fastest), the weights by default in a
   7-bit range (``weight_bits`` 7, ORT's ``reduce_range``): an x86 CPU without VNNI (AVX2, AVX-512 before
   VNNI) sums pairs of u8 x s8 products in saturating 16-bit lanes, which full 8-bit weights overflow
   (rf-chirp's 8-bit int8 model missed its reference by 0.153 on an AVX2 EPYC against 0.082 on a VNNI CPU;
   its 7-bit one by 0.069), on the convolutions and matrix products only, after ``quant_pre_process``.
   Kept in float: the timestep embedding, the first and the last convolution and the output norm
   (module scopes ``embed``, ``stem``, ``out``, ``out_norm``), normalisation and softmax (the usual
   sensitive layers), and the v-to-eps conversion around a v-trained network (its alphas_bar lookup
   is a MatMul that must not be quantized).
3. The gate (:mod:`edgediff.tools.int8_gate`) compares the int8 model with the fp32 one on what the
   data's user measures: blind EVM (PSK, within 0.5 dB), mean-PSD LSD (chirps, within 0.2 dB), mode
   shares (the 2D mixture, within 0.02), and for I/Q priors the NMSE of 75 % missing samples filled by
   DDNM+ (within 0.5 dB); for a user bundle without a receiver, the samples' LSD and power against
   fp32's (within 0.5 dB each).
   A failing gate raises with what it measured, and nothing is written.
4. The passing model is written as ``model.int8.onnx`` and the manifest gains an ``int8`` record (the
   calibration, the excluded nodes, the gate's figures, the self-test tolerance) and the file's hash.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgediff.runtime.atomic import atomic_path
from edgediff.runtime.bundle import Bundle
from edgediff.runtime.errors import BundleError, InputError

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
METHODS = ("minmax", "entropy", "percentile")
KEEP_FLOAT_SCOPES = ("embed", "stem", "out", "out_norm")
KEEP_FLOAT_OPS = ("Softmax", "InstanceNormalization", "LayerNormalization", "GroupNormalization", "Sin", "Cos")
#: Only the matrix work is quantized: quantizing the elementwise ops too (SiLU's Sigmoid and Mul, the
#: residual Adds) measured slower at batch 1 (QLinearSigmoid, QLinearMul: 1.39x against 1.59x over fp32)
#: and less accurate (relative error 3.1e-2 against 2.4e-2), and they lose ONNX Runtime's SiLU fusion.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
#: The self-test's relative-L2 allowance for the int8 model (measured ~3e-2 on the shipped priors).
SELF_TEST_RTOL = 0.15


def _scope(name: str) -> str:
    head = name.split("/")[0]
    return head[4:].split(".")[0] if head.startswith("net.") else head.split(".")[0]


def float_nodes(model_path: Path) -> list[str]:
    """Names of the nodes left in float: the sensitive scopes and op types (see the module docstring)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    # nodes outside any module scope are the v -> eps conversion around the network (the alphas_bar lookup)
    return [n.name for n in graph.node
            if "/" not in n.name or _scope(n.name) in KEEP_FLOAT_SCOPES or n.op_type in KEEP_FLOAT_OPS]


def calibration_inputs(bundle: Bundle, count: int, seed: int = 0, batch: int = 16) -> list[dict[str, np.ndarray]]:
    """``count`` x_t (in batches) from the forward process of the bundle's data, t stratified over [0, T)."""
    rng = np.random.default_rng(seed)
    x0 = _clean_frames(bundle, count, rng)
    T = bundle.schedule.T
    t = ((np.arange(count) + rng.random(count)) * T / count).astype(np.int64).clip(0, T - 1)  # one per stratum
    rng.shuffle(t)
    abar = bundle.schedule.alphas_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * rng.standard_normal(x0.shape)
    return [{"x_t": x_t[i:i + batch].astype(np.float32), "t": t[i:i + batch].astype(np.float32)}
            for i in range(0, count, batch)]


def _clean_frames(bundle: Bundle, count: int, rng: np.random.Generator) -> np.ndarray:
    """Clean samples in network units: the built-in generator, else the stats' Gaussian, else N(0, I)."""
    from edgediff.train.datasets import BUILTINS, builtin

    data = bundle.manifest.get("data") or {}
    shape = bundle.sample_shape
    if data.get("dataset") in BUILTINS and data.get("path") is None:
        raw = builtin(data["dataset"], count, int(shape[-1]) if len(shape) == 2 else 0, int(data.get("seed", 0)) + 7)
        return bundle.normalisation.to_network(raw)
    stats = bundle.stats()
    if stats is not None:
        mean, cov = stats
        return rng.multivariate_normal(mean, cov, size=count, method="eigh").reshape(count, *shape)
    return rng.standard_normal((count, *shape))


#: Weight ranges: 7 (no u8s8 saturation on x86 CPUs without VNNI; the default since stop 69) or 8 (the full
#: int8 range; int8 records without ``weight_bits`` were made so).
WEIGHT_BITS = (7, 8)


def quantize(bundle: Bundle, out: Path, method: str = "percentile", count: int = 512, seed: int = 0,
             weight_bits: int = 7) -> list[str]:
    """Write the QDQ int8 model of ``bundle`` to ``out``; returns the nodes kept in float."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise InputError(f"--method {method!r} is unknown: expected one of {', '.join(METHODS)}")
    if weight_bits not in WEIGHT_BITS:
        raise InputError(f"--weight-bits {weight_bits} is unknown: expected 7 or 8")
    inputs = calibration_inputs(bundle, count, seed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(bundle.path("model.onnx")), str(pre), skip_symbolic_shape=True)
        keep = float_nodes(pre)
        calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}[method]
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=weight_bits == 7,
                        nodes_to_exclude=keep,
                        op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=calibrate,
                        extra_options={"CalibTensorRangeSymmetric": False})
    return keep


def add_int8(bundle: Bundle, candidate: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Put the gated ``candidate`` in the bundle as model.int8.onnx and rewrite the manifest last."""
    from edgediff.export import manifest as manifest_io

    root = Path(bundle.root)
    err = self_test_error(bundle, candidate)
    with atomic_path(root / INT8_FILE) as tmp_out:
        tmp_out.write_bytes(candidate.read_bytes())
    m = dict(bundle.manifest)
    m["files"] = {**m["files"], INT8_FILE: manifest_io.file_entry(root / INT8_FILE)}
    bits = int(record.get("weight_bits", 8))
    m["int8"] = {"file": INT8_FILE, "format": "QDQ", "weights": f"int8 per channel, {bits}-bit range",
                 "activations": "uint8",
                 "self_test_rtol": SELF_TEST_RTOL, "reference_rel_l2": err, **record}
    manifest_io.write(root, m)
    return m


def check_quantizable(bundle: Bundle, force: bool) -> None:
    if bundle.manifest.get("distilled"):
        raise InputError(f"{bundle.root}: a distilled bundle runs few steps at its own grid; quantize its teacher instead")
    if INT8_FILE in bundle.manifest["files"] and not force:
        raise InputError(f"{bundle.root} already has {INT8_FILE}: pass --force to replace it")


def candidate_denoiser(bundle: Bundle, path: Path, threads: int = 0) -> Any:
    """A denoiser on an ONNX model of the bundle's network that is not (yet) in the bundle: the int8
    candidate, or a bench's converted variants."""
    from edgediff.runtime.backends import BundleDenoiser
    from edgediff.runtime.backends.ort import OrtEngine, OrtOptions

    return BundleDenoiser(bundle, OrtEngine(path, OrtOptions(device="cpu", threads=threads, channels_first=True)), "ort",
                          "candidate model", bundle.batch_range)


def self_test_error(bundle: Bundle, path: Path) -> float:
    ref = bundle.reference()
    d = candidate_denoiser(bundle, path)
    n = max(d.min_batch, min(len(ref["t"]), d.max_batch))
    got = np.asarray(d(ref["x_t"][:n], ref["t"][:n]), dtype=np.float64)
    err = float(np.linalg.norm(got - ref["eps"][:n]) / max(np.linalg.norm(ref["eps"][:n]), 1e-30))
    if not np.isfinite(got).all() or err > SELF_TEST_RTOL:
        raise BundleError(f"the int8 model misses the bundle's reference by {err:.2e} (> {SELF_TEST_RTOL}); nothing written")
    return err
