"""Writing generated I/Q frames as a SigMF recording (cf32_le), atomically, with provenance.

Frames are written back to back; each gets an annotation whose ``core:generator`` names edgediff,
the bundle and the sampler settings.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgediff import __version__
from edgediff.runtime.atomic import TMP_PREFIX
from edgediff.runtime.errors import BackendUnavailableError, InputError


def sigmf_paths(out: Path) -> tuple[Path, Path]:
    base = out.with_suffix("") if out.suffix in (".sigmf-data", ".sigmf-meta", ".npy") else out
    return base.with_name(base.name + ".sigmf-data"), base.with_name(base.name + ".sigmf-meta")


def write_sigmf(out: Path, frames: np.ndarray, generator: str, description: str, sample_rate: float = 1.0) -> tuple[Path, Path]:
    """frames: float (N, 2, L) I/Q. Returns the data and meta paths (both renamed into place last)."""
    try:
        from sigmf import SigMFFile
    except ImportError:
        raise BackendUnavailableError("--format sigmf needs the sigmf package: pip install 'edgediff[sigmf]'") from None
    if frames.ndim != 3 or frames.shape[1] != 2:
        raise InputError(f"--format sigmf needs I/Q frames (N, 2, L); these samples have shape {frames.shape}: use npy")
    data_path, meta_path = sigmf_paths(out)
    n, _, length = frames.shape
    iq = np.stack([frames[:, 0], frames[:, 1]], axis=-1).astype("<f4")  # (N, L, 2) interleaved I, Q
    # build both files under their final names in a private directory, then move them into place
    # (data first), so a reader never sees a meta file without its data
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX, dir=data_path.parent) as tmp:
        tmp_data, tmp_meta = Path(tmp) / data_path.name, Path(tmp) / meta_path.name
        iq.tofile(tmp_data)
        meta: Any = SigMFFile(data_file=str(tmp_data), global_info={
            "core:datatype": "cf32_le", "core:sample_rate": float(sample_rate), "core:version": "1.0.0",
            "core:description": description, "core:recorder": f"edgediff {__version__}"})
        meta.add_capture(0, metadata={})
        for i in range(n):
            meta.add_annotation(i * length, length, metadata={"core:label": f"sample {i}", "core:generator": generator})
        meta.validate()
        tmp_meta.write_text(meta.dumps(pretty=True))
        for path in (tmp_data, tmp_meta):
            os.chmod(path, 0o644)
        os.replace(tmp_data, data_path)
        os.replace(tmp_meta, meta_path)
    return data_path, meta_path
