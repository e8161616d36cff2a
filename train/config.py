"""The run configuration: typed dataclasses in memory, ``config.json`` on disk, with a round trip."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgediff import __version__
from edgediff.runtime.errors import BundleError, InputError
from edgediff.runtime.schedule import NoiseSchedule
from edgediff.runtime.normalisation import Normalisation
from edgediff.train.datasets import DataConfig
from edgediff.train.objective import AUGMENTS, LOSS_WEIGHTS, PREDICTIONS, check_choice
from edgediff.train.step import FRAMES
from edgediff.train.models import ModelConfig, config_from_dict, config_to_dict

CONFIG_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    prediction: str = "eps"  # the network's target: eps or v (exported as eps either way)
    loss_weight: str = "none"  # none or min-snr (Hang et al. 2023)
    snr_gamma: float = 5.0
    augment: str = "none"  # none or phase (random carrier phase per frame; I/Q data only)
    max_seconds: float | None = None  # stop after this much training time; the LR follows the time fraction
    amp: bool | None = None  # bf16 autocast on CUDA (None: auto, on for CUDA)
    frames: str = "auto"  # resident (a set on the device) or generated (built-ins, fresh each step); auto: by device
    graphs: bool | None = None  # capture the step as a CUDA graph (None: auto, on for one CUDA process)
    fused: bool | None = None  # fused AdamW (None: auto, on for CUDA)
    compile: bool | None = False  # torch.compile the network (None: auto, on when the step is a CUDA graph)
    channels_last: bool = False  # run the 1D convolutions as channels-last 2D ones (NHWC for cuDNN's bf16 kernels)
    snapshot_every: int = 0  # keep the EMA weights every K steps in snapshots/ (0: none)
    init_from: str | None = None  # start from these weights (safetensors) instead of a random init

    def __post_init__(self) -> None:
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("loss_weight", self.loss_weight, LOSS_WEIGHTS)
        check_choice("augment", self.augment, AUGMENTS)
        check_choice("frames", self.frames, FRAMES)
        checks = {
            "steps": self.steps >= 1, "batch": self.batch >= 1, "lr": self.lr > 0, "warmup": self.warmup >= 0,
            "ema": 0 <= self.ema < 1, "grad_clip": self.grad_clip > 0, "checkpoint_every": self.checkpoint_every >= 1,
            "log_every": self.log_every >= 1, "snr_gamma": self.snr_gamma > 0, "snapshot_every": self.snapshot_every >= 0,
            "max_seconds": self.max_seconds is None or self.max_seconds > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"training setting {name}={getattr(self, name)!r} is out of range")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run directory's ``config.json`` records."""

    model: ModelConfig
    schedule: NoiseSchedule
    data: DataConfig
    train: TrainConfig
    normalisation: Normalisation = Normalisation()
    versions: dict[str, str] = field(default_factory=dict)
    #: set on distilled runs: the student's timesteps, sampler and NFE (see edgediff.train.distill)
    distilled: dict[str, Any] | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.model.sample_shape

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "model": config_to_dict(self.model),
            "schedule": self.schedule.to_dict(),
            "data": self.data.describe(),
            "normalisation": self.normalisation.to_dict(),
            "train": asdict(self.train),
            "versions": self.versions or current_versions(),
            **({"distilled": self.distilled} if self.distilled else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if d.get("format") != CONFIG_FORMAT:
            raise InputError(f"config format {d.get('format')!r} is not {CONFIG_FORMAT}: written by another edgediff")
        data_fields = {f.name for f in fields(DataConfig)}
        return cls(
            model=config_from_dict(d["model"]),
            schedule=NoiseSchedule.from_dict(d["schedule"]),
            data=DataConfig(**{k: v for k, v in d["data"].items() if k in data_fields}),
            train=TrainConfig(**d["train"]),
            normalisation=Normalisation.from_dict(d["normalisation"]),
            versions=dict(d.get("versions", {})),
            distilled=d.get("distilled"),
        )

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        from edgediff.train.run_schema import MAX_CONFIG_BYTES, read, validate_config

        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise BundleError(f"{path}: missing; {run_dir} is not a training run (run `edgediff train` first)")
        d = read(path, MAX_CONFIG_BYTES)
        validate_config(d, str(path))  # every field a reader uses, before a model is built
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise BundleError(f"{path}: unusable run config ({type(exc).__name__}: {exc})") from None


def current_versions() -> dict[str, str]:
    import numpy
    import torch

    return {"edgediff": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__}
