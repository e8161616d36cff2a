"""Several prepared runs trained in one process, their steps interleaved, each on its own CUDA stream.

Processes on one GPU take turns (stop 50: three stages side by side moved 1.05x one); the streams of
one process can run their kernels at the same time, which a small U-Net's step leaves room for.
``bench-train``'s ``copies=N`` measures the gain on a device; the prepared GPU session trains its
stages this way where it pays (:func:`edgediff.tools.priors_continue.together_pays`).

Each run is :func:`edgediff.train.loop.fit_steps` resumed from its run directory, driven one step at
a time in turn: its own seed, draws, checkpoints and logs, exactly as ``edgediff train --resume``
would run it alone (on the CPU bitwise the same weights; there is no stream to overlap on, the runs
just take turns). A time budget ends where the first run's would: a run set up later (the runs set
up and compile one after the other) gets what is left of it. A run that fails is reported and the
others train on.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from edgediff.runtime.errors import one_line
from edgediff.train.config import RunConfig
from edgediff.train.loop import fit_steps, prepare_run_dir, resolve_device

#: The run whose step is being driven: routes log records to that run's log file.
_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("edgediff_together_run", default=None)


class _RunFilter(logging.Filter):
    def __init__(self, run: str):
        super().__init__()
        self.run = run

    def filter(self, record: logging.LogRecord) -> bool:
        return _CURRENT.get() == self.run


def fit_together(runs: list[Path], device: str = "auto", *, log_name: str = "train.log",
                 log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    """Resume every run in ``runs`` (prepared run directories) in this process, one step of each in
    turn, until all have finished; returns, by run directory name, its summary or ``{"error": ...}``.
    Each run's warnings go to ``RUN/log_name``, followed by its closing line."""
    dev = resolve_device(device)
    names = [Path(r).name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs with the same name: {names}")
    streams = {n: torch.cuda.Stream(dev) if dev.type == "cuda" else None for n in names}
    handlers, active, results = {}, {}, {}
    root = logging.getLogger("edgediff")
    for name, run in zip(names, runs):
        handler = logging.FileHandler(Path(run) / log_name, mode="w")
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        handler.addFilter(_RunFilter(name))
        root.addHandler(handler)
        handlers[name] = handler
        prepare_run_dir(Path(run), True)
        active[name] = None  # set up at its first turn
    t0 = time.perf_counter()
    try:
        while active:
            for name in list(active):
                token = _CURRENT.set(name)
                try:
                    with torch.cuda.stream(streams[name]):  # None (the CPU): the current stream, a no-op
                        if active[name] is None:
                            run = Path(runs[names.index(name)])
                            active[name] = fit_steps(_on_deadline(RunConfig.load(run), time.perf_counter() - t0), run,
                                                     True, dev)
                        next(active[name])
                except StopIteration as done:
                    results[name] = done.value
                    del active[name]
                    _close(handlers[name], name, closing_line(done.value, runs[names.index(name)]), log, t0)
                except Exception as exc:  # one run's failure is its own: the others train on
                    logging.getLogger("edgediff.train.together").error("%s: %s", type(exc).__name__, exc, exc_info=True)
                    results[name] = {"error": one_line(exc)}
                    del active[name]
                    _close(handlers[name], name, f"failed: {results[name]['error']}", log, t0)
                finally:
                    _CURRENT.reset(token)
    finally:
        for handler in handlers.values():
            root.removeHandler(handler)
            handler.close()
    return results


def _on_deadline(config: RunConfig, late: float) -> RunConfig:
    """A run set up ``late`` seconds after the first keeps the first's deadline: the runs set up one
    after the other (each compiles at its first step), and a time budget counts from a run's own start."""
    budget = config.train.max_seconds
    if not budget or late <= 0:
        return config
    return replace(config, train=replace(config.train, max_seconds=max(1.0, budget - late)))


def closing_line(summary: dict[str, Any], out: Path) -> str:
    """The line ``edgediff train`` ends a run with."""
    return (f"trained {summary['steps']} steps ({summary['steps_this_session']} now) in {summary['seconds']:.1f} s, "
            f"{summary['samples_per_s']:.0f} samples/s on {summary['device']} x{summary['processes']}; "
            f"final loss {summary['final_loss']:.4f} (predicting zero: 1.0); run in {out}")


def _close(handler: logging.FileHandler, name: str, line: str, log: Callable[[str], Any], t0: float) -> None:
    handler.stream.write(line + "\n")
    handler.flush()
    log(f"{name}: after {time.perf_counter() - t0:.0f} s: {line}")
