"""edgediff showcase (the end of make demo) at a tiny size: its two lines and two figures."""

import re
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")


def test_showcase_prints_both_cases_against_lmmse_and_draws_them(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgediff", "showcase", "--out", str(tmp_path), "--frames", "2",
                          "--steps", "5"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rec, sep, wrote = res.stdout.strip().splitlines()[-3:]
    assert re.search(r"diffusion NMSE -?\d+\.\d dB, SER \d\.\d{4}; LMMSE NMSE -?\d+\.\d dB, SER \d\.\d{4}", rec), rec
    assert re.search(r"diffusion BER \d\.\d{4}, SOI MSE -?\d+\.\d dB; LMMSE BER \d\.\d{4}", sep), sep
    for name in ("reconstruction.png", "separation.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and name in wrote
    again = subprocess.run([sys.executable, "-m", "edgediff", "showcase", "--out", str(tmp_path), "--frames", "2"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "pass --force" in again.stderr  # its own figures are not replaced silently
