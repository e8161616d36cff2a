"""A bundle's network weights, read back from its ``model.onnx``: so a shipped prior can be trained on.

The exporter keeps every parameter as an ONNX initializer under its module path (``net.`` in front
when the network was wrapped as an epsilon view), except GroupNorm's scale and bias: those become
the constant operands, shaped (C, 1), of the ``Mul`` and ``Add`` that follow the
InstanceNormalization inside the norm's scope (``net.down.0.norm1/Mul_14``). Both are read here and
the result is proved, not trusted: the rebuilt torch network must reproduce the bundle's own
``reference.npz`` before the weights are handed out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgediff.runtime.bundle import Bundle
from edgediff.runtime.errors import BundleError, InputError

#: How close the rebuilt network must reproduce the bundle's reference outputs (float32 round trip).
REFERENCE_RTOL = 1e-4


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def learnt_from(path: str | Path) -> tuple[Any, dict[str, Any] | None] | None:
    """(normalisation, data record) that the starting weights at ``path`` learnt: a bundle's manifest, or
    the run config beside a run's weights file; None where neither is there."""
    from edgediff.train.config import RunConfig

    if is_bundle(path):
        bundle = Bundle.open(path)
        return bundle.normalisation, bundle.manifest.get("data")
    parent = Path(path).parent
    if (parent / "config.json").is_file():
        run = RunConfig.load(parent)
        return run.normalisation, run.data.to_dict()
    return None


def weights_from_bundle(bundle_dir: str | Path, model: nn.Module, schedule_check: bool = True) -> dict[str, torch.Tensor]:
    """``model``'s state dict filled from the bundle's fp32 ONNX model, checked on ``reference.npz``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise InputError("reading weights from a bundle needs the onnx package: pip install 'edgediff[export]'") from None
    bundle = Bundle.open(bundle_dir)
    graph = onnx.load(str(bundle.path("model.onnx"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    prediction = bundle.manifest.get("model", {}).get("trained_prediction", "eps")
    prefix = "net." if prediction != "eps" else ""
    norm_params = _norm_parameters(graph, inits)
    state = {}
    for name, value in model.state_dict().items():
        array = inits.get(prefix + name)
        if array is None:
            array = norm_params.get(prefix + name)
        if array is None or array.size != value.numel():
            raise BundleError(f"{bundle_dir}: model.onnx holds no weights for {name} of shape {tuple(value.shape)}; "
                              "the bundle's network differs from this model (choose the same --width and kind)")
        state[name] = torch.from_numpy(np.array(array, dtype=np.float32).reshape(value.shape))
    _prove(bundle, model, state, prediction)
    return state


def _norm_parameters(graph, inits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GroupNorm ``scope.weight`` / ``scope.bias`` from the (C, 1) constants of the scope's Mul / Add."""
    found: dict[str, np.ndarray] = {}
    for node in graph.node:
        scope, _, op = node.name.rpartition("/")
        kind = {"Mul": "weight", "Add": "bias"}.get(node.op_type)
        if not scope or kind is None or not op.startswith(node.op_type):
            continue
        consts = [inits[i] for i in node.input if i in inits and inits[i].ndim == 2 and inits[i].shape[1] == 1]
        if len(consts) == 1 and f"{scope}.{kind}" not in found:
            found[f"{scope}.{kind}"] = consts[0].reshape(-1)
    return found


def _prove(bundle: Bundle, model: nn.Module, state: dict[str, torch.Tensor], prediction: str) -> None:
    """Run the rebuilt network on the bundle's reference inputs; refuse weights that do not reproduce it."""
    from edgediff.train.objective import EpsilonView

    net = type(model)(model.config)
    net.load_state_dict(state)
    eps_net: nn.Module = EpsilonView(net, bundle.schedule, prediction) if prediction != "eps" else net
    ref = bundle.reference()
    with torch.no_grad():
        got = eps_net.eval()(torch.from_numpy(ref["x_t"]), torch.from_numpy(ref["t"])).numpy()
    want = ref["eps"].astype(np.float32)
    err = float(np.max(np.abs(got - want)) / max(1e-12, float(np.max(np.abs(want)))))
    if not np.isfinite(err) or err > REFERENCE_RTOL:
        raise BundleError(f"{bundle.root}: the weights read from model.onnx do not reproduce reference.npz "
                          f"(relative error {err:.2g} > {REFERENCE_RTOL}); train from a run directory instead")
