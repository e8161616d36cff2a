"""The torch backend of ``edgediff.runtime.load``: the exporting run's EMA model, for parity checks.

Loaded by name from the runtime only when ``backend="torch"`` is asked for. Refuses a run whose
weights changed since the bundle was exported (their sha256 is in the manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgediff.runtime.bundle import Bundle, sha256_file
from edgediff.runtime.errors import BackendUnavailableError, BundleError
from edgediff.train.run import load_run


def check_device(device: str) -> torch.device:
    """A torch device that exists here, or the one-line error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendUnavailableError(f"--device {device!r} is not a torch device: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"--device {device}: the torch backend runs on cpu or cuda")
    return dev


class TorchEngine:
    """``engine(x_t float32, t float32) -> eps float32`` with the training model in eval mode."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.device = check_device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():  # gradients flow to the input only (DPS)
            p.requires_grad_(False)
        self.provider = f"torch {torch.__version__} eager on {self.device}"

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, device: str = "cpu", run_dir: str | Path | None = None) -> TorchEngine:
        source: dict[str, Any] = bundle.manifest.get("source_run", {})
        run = Path(run_dir or source.get("path", ""))
        if run_dir is not None and (run / "manifest.json").is_file():  # a bundle: its own weights, or another's
            source_bundle = bundle if run.resolve() == bundle.root.resolve() else Bundle.open(run)
            return cls(model_from_bundle(source_bundle, bundle), device)
        weights = run / "weights.safetensors"
        if not weights.is_file():
            raise BundleError(f"{weights}: the exporting run is not here; give the torch backend the run's folder, "
                              f"or the bundle's own to read its weights back from model.onnx: --run {bundle.root} "
                              f"(run_dir= in Python)")
        if sha256_file(weights) != source.get("weights_sha256"):
            raise BundleError(f"{weights}: changed since this bundle was exported; re-export to compare them")
        check_device(device)
        config, model = load_run(run, device)
        if config.schedule.fingerprint() != bundle.schedule.fingerprint():
            raise BundleError(f"{run}: schedule differs from the bundle's; re-export the bundle")
        return cls(model, device)

    @torch.no_grad()
    def __call__(self, x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(x_t).to(self.device)
        tt = torch.from_numpy(np.asarray(t, dtype=np.float32)).to(self.device)
        return self.model(x, tt).cpu().numpy()

    def forward_with_vjp(self, x_t: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """eps and a function v -> J^T v, J = d eps / d x_t (one forward now, one backward when called)."""
        x = torch.from_numpy(np.ascontiguousarray(x_t)).to(self.device).requires_grad_(True)
        eps = self.model(x, torch.from_numpy(np.asarray(t, dtype=np.float32)).to(self.device))

        def vjp(v: np.ndarray) -> np.ndarray:
            (grad,) = torch.autograd.grad(eps, x, grad_outputs=torch.from_numpy(np.ascontiguousarray(v)).to(self.device))
            return grad.cpu().numpy()

        return eps.detach().cpu().numpy(), vjp


def model_from_bundle(source: Bundle, bundle: Bundle) -> torch.nn.Module:
    """The epsilon network of ``source``'s model.onnx, rebuilt in torch (weights read back and proved on
    its reference.npz: ``train.bundle_weights``), for a ``bundle`` whose exporting run is not here."""
    from edgediff.train.bundle_weights import weights_from_bundle
    from edgediff.train.models import build_model, config_from_dict
    from edgediff.train.objective import EpsilonView

    if source.schedule.fingerprint() != bundle.schedule.fingerprint():
        raise BundleError(f"{source.root}: schedule differs from {bundle.root}'s; pass that bundle's own directory")
    model = build_model(config_from_dict(source.manifest["model"]["config"]))
    model.load_state_dict(weights_from_bundle(source.root, model))
    prediction = source.manifest["model"].get("trained_prediction", "eps")
    return (EpsilonView(model, source.schedule, prediction) if prediction != "eps" else model).eval()


class RunDenoiser(TorchEngine):
    """A training run's model in the bundle denoiser protocol (schedule, shape, normalisation, batch
    range), for measuring runs and their snapshots before they are exported."""

    def __init__(self, config: Any, model: torch.nn.Module, device: str = "cpu", max_batch: int = 1024):
        super().__init__(model, device)
        self.schedule, self.sample_shape = config.schedule, tuple(config.sample_shape)
        self.normalisation = config.normalisation
        self.min_batch, self.max_batch = 1, max_batch
        self.backend = "torch"
