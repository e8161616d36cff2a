"""Live-stream figures: samples/s, the real-time factor at a sample rate, latency, memory over a long stream.

Each row pushes a synthetic stream (held-out frames of the prior's own dataset, end to end) through a
:class:`edgediff.runtime.stream.Streamer` with the denoise frame function, in chunks of ``chunk``
samples, for at least ``seconds`` (and at least two engine batches). Latency has two parts: the
streamer's buffering (``latency`` samples at the sample rate) and the engine's time for the batch
that releases a sample (the measured mean time per batch). Memory: a fresh process streams a short
and a ten times longer stream at one step and reports both peak RSS values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
from edgediff.runtime import load
from edgediff.runtime.stream import ReconstructionFrames, Streamer
d = load(sys.argv[1], backend="ort")
frames = ReconstructionFrames(d, 0.05, steps=1)
s = Streamer(frames, frames.frame_length, batch=frames.check_batch(None), scale=1.0)
rng = np.random.default_rng(0)
chunk = (rng.standard_normal(1 << 15) + 1j * rng.standard_normal(1 << 15)) * 0.7
for _ in range(int(sys.argv[2]) // len(chunk)):
    s.push(chunk)
s.flush()
print(json.dumps({"samples": s.n_in, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def stream_source(denoiser: Any, n: int) -> np.ndarray:
    """``n`` samples of the prior's own held-out frames end to end (complex, user units)."""
    from edgediff.tools.evaluate import reference

    data = denoiser.bundle.manifest.get("data") or {}
    L = int(denoiser.sample_shape[1])
    frames = reference(data.get("dataset"), -(-n // L), L, int(data.get("seed", 0)))
    return (frames[:, 0] + 1j * frames[:, 1]).reshape(-1)[:n]


def measure(denoiser: Any, steps: int, *, rate: float, seconds: float, chunk: int, batch: int | None,
            sigma_y: float = 0.05) -> dict[str, Any]:
    from edgediff.runtime.stream import ReconstructionFrames, Streamer

    frames = ReconstructionFrames(denoiser, sigma_y, steps=steps)
    z = stream_source(denoiser, 1 << 18)
    scale = float(np.sqrt(np.mean(np.abs(z) ** 2) / 2))
    s = Streamer(frames, frames.frame_length, batch=frames.check_batch(batch), scale=scale)
    s.push(z[: s.until_next_batch()])  # warm-up: one batch, not counted
    s.seconds, n0, out0, batches0 = 0.0, s.n_in, s.n_out, s.batches
    t0, i = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or s.batches - batches0 < 2:
        s.push(z[i % len(z): i % len(z) + chunk])
        i += chunk
    wall = time.perf_counter() - t0
    done = s.n_out - out0
    per_batch = s.seconds / max(1, s.batches - batches0)
    return {"steps": steps, "samples_per_s": done / wall, "realtime_factor": done / wall / rate, "batch": s.batch,
            "latency_samples": s.latency, "latency_buffer_ms": 1e3 * s.latency / rate, "compute_per_batch_ms": 1e3 * per_batch,
            "latency_ms": 1e3 * s.latency / rate + 1e3 * per_batch, "samples": s.n_in - n0, "wall_s": wall}


def memory(bundle: str, short: int, long: int) -> dict[str, Any]:
    out = {}
    for name, n in (("short", short), ("long", long)):
        res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, bundle, str(n)], capture_output=True, text=True,
                             timeout=3600)
        out[name] = json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr[-300:]}
    return out


def line(name: str, row: dict[str, Any]) -> str:
    return (f"{name:>12} {row['steps']:>4} steps  {row['samples_per_s']:>10.0f} samples/s  {row['realtime_factor']:>7.3f}x "
            f"real time  latency {row['latency_ms']:>8.1f} ms ({row['latency_samples']} samples buffered + "
            f"{row['compute_per_batch_ms']:.1f} ms per batch of {row['batch']})")
