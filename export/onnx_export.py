"""torch -> ONNX, one small step each: export, tidy, stamp metadata, check.

The graph takes ``x_t`` float32 (B, C, L) or (B, D) and ``t`` float32 (B,) and returns ``eps``;
the batch axis is dynamic unless a fixed batch is asked for. Exported with torch's dynamo exporter
(which folds constants), then node names are rewritten from their module scopes
(``down.0.norm1/InstanceNormalization_18``) so the graph reads well in Netron.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edgediff import __version__
from edgediff.runtime.bundle import FINGERPRINT_KEY, NORMALISATION_KEY
from edgediff.runtime.errors import BundleError, InputError
from edgediff.runtime.schedule import NoiseSchedule

log = logging.getLogger(__name__)

INPUTS = ("x_t", "t")
OUTPUTS = ("eps",)
DEFAULT_OPSET = 18
MIN_OPSET = 17
#: Node metadata the exporter adds (stack traces with local paths, FX dumps): not shipped to devices.
DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node", "pkg.torch.onnx.class_hierarchy",
                         "namespace")


def export(model: nn.Module, sample_shape: tuple[int, ...], *, opset: int = DEFAULT_OPSET, batch: int | None = None,
           max_batch: int = 64) -> onnx.ModelProto:
    """Trace ``model`` to ONNX. ``batch`` fixes the batch size; otherwise it is dynamic in [1, max_batch]."""
    if opset < MIN_OPSET:
        raise InputError(f"--opset {opset} is too old: expected {MIN_OPSET} or newer")
    example_batch = batch or 2
    x = torch.zeros(example_batch, *sample_shape)
    t = torch.zeros(example_batch)
    dynamic = None
    if batch is None:
        dim = torch.export.Dim("batch", min=1, max=max(2, max_batch))
        dynamic = {"x_t": {0: dim}, "t": {0: dim}}
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                _quiet_loggers("torch.onnx", "torch.export", "onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model.eval(), (x, t), None, input_names=list(INPUTS), output_names=list(OUTPUTS),
                dynamic_shapes=dynamic, opset_version=opset, dynamo=True, external_data=False, optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many kinds; the user gets one line
        log.debug("exporter output:\n%s", sink.getvalue())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"ONNX export failed ({type(exc).__name__}: {first}); see `edgediff -v` for the log") from None
    if program is None or program.model_proto is None:
        raise BundleError("ONNX export produced no model")
    proto = program.model_proto
    written = opset_of(proto)
    if written != opset:
        raise InputError(f"--opset {opset} is not available from this torch exporter (it wrote opset {written}); "
                         f"choose {MIN_OPSET}..{written}")
    return proto


def opset_of(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter logs warnings (e.g. about torchvision) through logging, past redirected streams."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def tidy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Readable node names from module scopes; drop exporter-only metadata (paths, stack traces)."""
    for i, node in enumerate(proto.graph.node):
        props = {p.key: p.value for p in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes", "")
        parts = [s.strip(" '") for s in scopes.strip("[]").split(",") if s.strip(" '")]
        module = parts[-2] if len(parts) >= 2 else ""
        node.name = f"{module}/{node.op_type}_{i}" if module else f"{node.op_type}_{i}"
        keep = [p for p in node.metadata_props if p.key not in DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    return proto


def stamp(proto: onnx.ModelProto, schedule: NoiseSchedule, model_kind: str,
          normalisation: dict[str, Any] | None = None) -> onnx.ModelProto:
    """Metadata that ties the graph to its schedule and normalisation, so a model and a manifest that
    disagree (another export's model, an edited scale) are detected when the bundle is loaded."""
    values = {FINGERPRINT_KEY: schedule.fingerprint(), "edgediff.model_kind": model_kind,
              "edgediff.version": __version__}
    if normalisation is not None:
        values[NORMALISATION_KEY] = json.dumps({"kind": normalisation["kind"], "scale": float(normalisation["scale"])})
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edgediff"
    proto.doc_string = f"edgediff {model_kind} epsilon network: eps = f(x_t, t), t a float timestep index"
    return proto


def check(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX checker (full check) and strict shape inference; float32 inputs only (no int64 inputs)."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BundleError(f"exported ONNX fails the checker: {str(exc).splitlines()[0]}") from None
    for value in proto.graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise BundleError(f"ONNX input {value.name} is not float32: TensorRT handles int64 inputs badly")
    return inferred


def export_checked(model: nn.Module, sample_shape: tuple[int, ...], schedule: NoiseSchedule, model_kind: str, *,
                   opset: int = DEFAULT_OPSET, batch: int | None = None, max_batch: int = 64,
                   normalisation: dict[str, Any] | None = None) -> onnx.ModelProto:
    """The whole chain: export -> tidy -> stamp -> check."""
    proto = export(model, sample_shape, opset=opset, batch=batch, max_batch=max_batch)
    return check(stamp(tidy(proto), schedule, model_kind, normalisation))


def save(proto: onnx.ModelProto, path: Path) -> None:
    """One self-contained file (no external data: the models are a few MB)."""
    onnx.save_model(proto, str(path), save_as_external_data=False)
