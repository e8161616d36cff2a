"""One optimizer step as a fixed program over fixed memory: eager on the CPU, one CUDA graph on a GPU.

A step has two halves. Outside: every random number of the step is drawn from the step's generator
(seeded from (seed, step, rank) by the loop) into buffers this object owns, in a fixed order:
the frames' draws (resident set: the batch indices; generated: the generator's uniforms, bits and
normals), then the timesteps, the noise and the carrier phases. Inside: frames, forward process,
network, weighted loss, backward, clipping, AdamW and the EMA update, all tensor arithmetic on
those buffers, so that on CUDA the inside can be captured once as a graph and replayed for every
later step: one launch instead of hundreds, which is what small U-Nets need to fill a GPU.

Loss and eps MSE are summed on the device and read only when the loop logs (a sync every
``log_every`` steps, never inside a step).

On the CPU the program is the eager loop of before, draw for draw and operation for operation, so
runs and resumes are bitwise what they were. With graphs the learning rate and the EMA decay live in
device tensors refilled before each step, AdamW is fused and capturable, and the EMA is two foreach
calls on tensors; on CUDA the first ``GRAPH_WARMUP`` steps run eagerly on a side stream (they are
real steps), then the step is captured and replayed. On the CPU (nothing to capture) that same
program runs eagerly, which is how the tests check the GPU path's arithmetic and its resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from edgediff.runtime.errors import InputError
from edgediff.train import objective
from edgediff.train.reference import q_sample
from edgediff.train.rf_torch import GENERATED, FrameGenerator

log = logging.getLogger(__name__)

#: eager steps (on a side stream) before the capture: cuDNN/cuBLAS pick kernels, autograd and the
#: optimizer allocate their state
GRAPH_WARMUP = 3
FRAMES = ("auto", "resident", "generated")


@dataclass(frozen=True)
class StepOptions:
    """How a step runs on this device (resolved from the config; see :func:`resolve`)."""

    amp: bool = False  # bf16 autocast (CUDA; on the CPU when asked: pays where it has AMX-BF16)
    graphs: bool = False  # capture the step as one CUDA graph
    fused: bool = False  # fused AdamW kernels (with graphs: capturable, the learning rate a tensor)
    compile: bool = False  # torch.compile the network (default mode, before any capture)
    channels_last: bool = False  # the 1D convolutions as channels-last 2D ones (train.layers.use_channels_last)

    def describe(self) -> str:
        on = [k for k in ("amp", "graphs", "fused", "compile") if getattr(self, k)]
        on += ["cl"] if self.channels_last else []
        return "+".join(on) if on else "eager"


def resolve(train: Any, data: Any, device: torch.device, distributed: bool) -> tuple[Any, StepOptions]:
    """The training config with its ``auto`` settings decided for ``device``, and the step's options.

    auto means: on CUDA, frames generated on the device for built-in datasets, bf16 autocast, fused
    AdamW and CUDA graphs (not under DDP); on the CPU, the resident set and the eager step of before.
    bf16 autocast asked for on the CPU runs there (about 1.6x the frames/s where the CPU has AMX-BF16
    matrix units; unmeasured elsewhere and possibly slower, which is said); auto leaves it off, so that a CPU run's
    numbers do not change with the machine it lands on.
    ``compile`` is off unless asked for; None (the GPU stages' setting) compiles where the step is
    captured as a CUDA graph: its warm-up (about a minute) pays back on runs of several minutes.
    Explicit settings are kept; CUDA graphs asked for on the CPU are recorded and run as their program, eagerly.
    """
    cuda = device.type == "cuda"
    frames = train.frames
    if frames not in FRAMES:
        raise InputError(f"frames={frames!r} is unknown: expected one of {', '.join(FRAMES)}")
    builtin = data.path is None and data.dataset in GENERATED
    if frames == "auto":
        frames = "generated" if cuda and builtin else "resident"
    if frames == "generated" and not builtin:
        raise InputError("--frames generated needs a built-in dataset (" + ", ".join(GENERATED) + "): "
                         "user recordings train from the resident set (--frames resident)")
    train = replace(train, frames=frames,
                    amp=cuda if train.amp is None else train.amp,
                    fused=cuda if train.fused is None else train.fused,
                    graphs=(cuda and not distributed) if train.graphs is None else train.graphs)
    captured = bool(train.graphs and cuda and not distributed)
    train = replace(train, compile=captured if train.compile is None else train.compile)
    options = StepOptions(amp=bool(train.amp), graphs=train.graphs and not distributed, fused=train.fused,
                          compile=train.compile, channels_last=bool(train.channels_last))
    if train.graphs and not (cuda and options.graphs):
        log.info("CUDA graphs need one process on a CUDA device: the graph's program runs eagerly here")
    if options.amp and not cuda and not cpu_has_bf16_matrix_units():
        log.info("bf16 autocast on a CPU without AMX-BF16 may be slower than float32 (measure it: edgediff bench-train "
                 "--device cpu --variant today --variant today-bf16)")
    return train, options


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles with AVX512-BF16)."""
    tiles = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private probes: absent in older torch
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(tiles and bf16 and tiles() and bf16())


def configure_backends(device: torch.device) -> None:
    """Backend settings every training step on ``device`` runs with (the loop and bench-train alike):
    on CUDA, cuDNN benchmarks its convolution algorithms once for the step's fixed shapes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, options: StepOptions,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW: default (foreach) kernels, or fused; a captured step needs capturable state and a tensor lr."""
    if options.graphs:
        return torch.optim.AdamW(model.parameters(), lr=torch.tensor(lr, device=device), weight_decay=weight_decay,
                                 fused=True, capturable=True)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=options.fused or None)


class ResidentFrames:
    """Frames from a set held on the device (x_all, normalised): a batch of random indices per step."""

    def __init__(self, x_all: torch.Tensor, batch: int):
        self.x_all = x_all
        self.idx = torch.empty(batch, dtype=torch.long, device=x_all.device)

    def draw(self, generator: torch.Generator) -> None:
        torch.randint(0, self.x_all.shape[0], self.idx.shape, generator=generator, out=self.idx)

    def frames(self) -> torch.Tensor:
        return self.x_all[self.idx]


class TrainStep:
    """The loop's step: ``step(generator, lr, decay)`` trains once; ``take_metrics()`` reads the sums."""

    def __init__(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict[str, torch.Tensor],
                 sched: dict[str, torch.Tensor], source: ResidentFrames | FrameGenerator, config: Any, batch: int,
                 device: torch.device, options: StepOptions, sample_shape: tuple[int, ...]):
        self.net, self.model, self.optimizer, self.ema, self.sched = net, model, optimizer, ema, sched
        self.source, self.cfg, self.T, self.options, self.device = source, config.train, config.schedule.T, options, device
        # the EMA's float entries, paired with the live parameters and buffers they follow
        state = model.state_dict()
        self.ema_pairs = [(ema[k], v) for k, v in state.items() if v.dtype.is_floating_point]
        self.ema_copies = [(ema[k], v) for k, v in state.items() if not v.dtype.is_floating_point]
        self.t = torch.empty(batch, dtype=torch.long, device=device)
        self.noise = torch.empty((batch, *sample_shape), device=device)
        # generated frames already carry a uniform carrier phase: the rotation is for the resident set
        self.rotate = self.cfg.augment == "phase" and isinstance(source, ResidentFrames)
        self.theta = torch.empty(batch, device=device) if self.rotate else None
        self.sums = torch.zeros(2, device=device)  # loss, eps MSE
        self.count = 0
        self.decay = torch.zeros((), device=device)
        self.keep = torch.zeros((), device=device)  # 1 - decay
        self.capture = options.graphs and device.type == "cuda"
        self.graph: Any = None
        self.eager_steps = 0
        if self.rotate and (len(sample_shape) != 2 or sample_shape[0] != 2):
            raise InputError(f"--augment phase needs I/Q frames (N, 2, L); the data has samples of shape {sample_shape}")

    # --- outside the graph -----------------------------------------------------------------------------
    def __call__(self, generator: torch.Generator, lr: float, decay: float) -> None:
        self.source.draw(generator)
        torch.randint(0, self.T, self.t.shape, generator=generator, out=self.t)
        torch.randn(self.noise.shape, generator=generator, out=self.noise)
        if self.theta is not None:
            torch.rand(self.theta.shape, generator=generator, out=self.theta)
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self.count += 1
        if not self.options.graphs:
            self._compute(1 - decay)
            return
        self.decay.fill_(decay)
        self.keep.fill_(1 - decay)
        if not self.capture:
            self._compute(None)
        elif self.graph is not None:
            self.graph.replay()
        elif self.eager_steps < GRAPH_WARMUP:
            self._side_stream_step()
        elif self._capture():
            self.graph.replay()
        else:
            self._compute(None)

    def take_metrics(self) -> tuple[float, float]:
        """Mean loss and eps MSE over the steps since the last call (reads the device: a sync)."""
        loss, eps = (self.sums / max(1, self.count)).tolist()
        self.sums.zero_()
        self.count = 0
        return loss, eps

    def _side_stream_step(self) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._compute(None)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.eager_steps += 1

    def _capture(self) -> bool:
        """Capture the step; if this torch or device refuses (an op that cannot be captured), say so and
        go on eagerly with the same program: a GPU session is too short to lose to a failed capture."""
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates the grads it refills
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._compute(None, capturing=True)
        except RuntimeError as exc:
            log.warning("CUDA graph capture failed (%s): training on with eager steps", str(exc).splitlines()[0])
            self.capture = False
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(self.device)
            return False
        self.graph = graph
        log.info("training step captured as a CUDA graph after %d eager steps", self.eager_steps)
        return True

    # --- inside the graph ------------------------------------------------------------------------------
    def _compute(self, ema_weight: float | None, capturing: bool = False) -> None:
        """One step on the drawn buffers: the weighted DDPM loss, backward, clip, AdamW, EMA
        (``ema_weight`` = 1 - decay as a number, or None: the decay tensors of the graph's program)."""
        cfg = self.cfg
        # 1. clean frames, rotated by a random carrier phase where asked
        x0 = self.source.frames()
        if self.theta is not None:
            x0 = objective.rotate_by(x0, self.theta * (2 * torch.pi))
        # 2. forward process x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and the target (eps or v)
        x_t = q_sample(self.sched, x0, self.t, self.noise)
        abar = self.sched["alphas_bar"][self.t]
        target = objective.target(cfg.prediction, x0, self.noise, abar)
        # 3. weighted squared error, per sample mean over the signal's axes
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.amp,
                            cache_enabled=not self.options.graphs):
            out = self.net(x_t, self.t.to(torch.float32))
        out = out.float()
        per_sample = ((out - target) ** 2).flatten(1).mean(dim=1)
        loss = torch.mean(objective.loss_weights(cfg.loss_weight, cfg.prediction, abar, cfg.snr_gamma) * per_sample)
        # 4. backward (a captured graph refills the grads it allocated), clip, AdamW
        if not capturing:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            eps_mse = torch.mean((objective.eps_from_output(cfg.prediction, out, x_t, abar) - self.noise) ** 2)
            # 5. ema <- decay ema + (1 - decay) weights, fused over the float tensors
            emas, live = [e for e, _ in self.ema_pairs], [v for _, v in self.ema_pairs]
            if ema_weight is None:
                torch._foreach_mul_(emas, self.decay)
                torch._foreach_add_(emas, torch._foreach_mul(live, self.keep))
            else:
                torch._foreach_lerp_(emas, live, ema_weight)
            for e, v in self.ema_copies:
                e.copy_(v)
            self.sums += torch.stack([loss.detach(), eps_mse])
