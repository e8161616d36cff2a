"""The GNU Radio blocks in a real GNU Radio 3.10 (Debian's, in .venv-gr: `make gr-env`): headless
flowgraphs give the streamer's output, tags become masks, errors stop the flowgraph cleanly, and the
example flowgraph compiles with grcc and runs."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GR_PYTHON = ROOT / ".venv-gr" / "bin" / "python"
CHECKS = Path(__file__).with_name("gr_checks.py")


def _gnuradio_ready() -> str | None:
    if not GR_PYTHON.exists():
        return "GNU Radio environment .venv-gr missing: `make gr-env` (needs Debian's gnuradio package)"
    res = subprocess.run([str(GR_PYTHON), "-c", "import gnuradio.gr, onnxruntime, edgediff.tools.gnuradio"],
                         capture_output=True, text=True)
    return None if res.returncode == 0 else f"GNU Radio environment unusable: {res.stderr.strip().splitlines()[-1:]}"


REASON = _gnuradio_ready()
pytestmark = [pytest.mark.onnx, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def check(case, bundle, outdir=""):
    res = subprocess.run([str(GR_PYTHON), str(CHECKS), case, str(bundle), str(outdir)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stdout + res.stderr  # GNU Radio logs to the console


def test_a_flowgraph_gives_the_streamers_output_one_batch_per_work_call(unet_bundle):
    got, _ = check("denoise", unet_bundle)
    assert got["aligned"] and got["n"] == 1500
    assert got["latency_tags"] == [got["latency"]] and got["most_batches_per_work"] == 1


def test_lost_spans_from_tags_or_a_mask_input_are_the_mask(unet_bundle):
    got, _ = check("reconstruct", unet_bundle)
    assert got == {"tags": True, "input": True}


def test_the_separate_block_gives_the_streamers_output(unet_bundle):
    assert check("separate", unet_bundle)[0] == {"aligned": True}


def test_an_error_inside_a_block_is_logged_and_stops_the_flowgraph(unet_bundle):
    got, err = check("error", unet_bundle)
    assert got["stopped_early"] and ":error: edgediff_denoise: the stream holds NaN or Inf" in err and "Traceback" not in err


def test_schedules_are_the_same_with_debians_numpy():
    from edgediff.runtime.schedule import NoiseSchedule

    got, _ = check("fingerprint", "-")  # Debian's numpy 1.24 computes cos differently from numpy 2: same bits here
    assert got["cosine"] == NoiseSchedule.cosine().fingerprint() and got["linear"] == NoiseSchedule.linear().fingerprint()


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc (GNU Radio Companion's compiler) not installed")
def test_the_example_flowgraph_compiles_with_grcc_and_runs_headless(tmp_path, unet_bundle):
    env = {"GRC_BLOCKS_PATH": str(ROOT / "tools" / "gnuradio" / "grc"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run(["grcc", "-o", str(tmp_path), str(ROOT / "tools" / "gnuradio" / "examples" / "denoise_file.grc")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and (tmp_path / "denoise_file.py").is_file(), res.stdout + res.stderr
    z = ((np.random.default_rng(5).standard_normal(2000) + 1j) * 0.4).astype(np.complex64)
    z.tofile(tmp_path / "capture.cf32")
    res = subprocess.run([str(GR_PYTHON), str(tmp_path / "denoise_file.py"), "-i", str(tmp_path / "capture.cf32"),
                          "-o", str(tmp_path / "clean.cf32"), "-b", str(unet_bundle), "-s", "3", "--scale", "0.4"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got, _ = check("expected", unet_bundle, tmp_path)
    assert got == {"aligned": True, "n": 2000}
