"""The shipped priors: each loads by short name, keeps its hashes, matches its reference outputs."""

from pathlib import Path

import numpy as np
import pytest

from edgediff.runtime.bundle import SHIPPED_DIR, Bundle, label, resolve, shipped
from edgediff.runtime.errors import BundleError

NAMES = ("rf-qpsk", "rf-chirp", "rf-mix", "rf-qpsk-fast", "gmm2d", "radar-rd")


def test_every_prior_is_shipped_and_small():
    assert set(NAMES) <= set(shipped())
    for name in NAMES:
        size = sum(p.stat().st_size for p in (SHIPPED_DIR / name).iterdir())
        assert size <= 12e6, f"{name}: {size / 1e6:.1f} MB"


@pytest.mark.onnx
@pytest.mark.parametrize("name", NAMES)
def test_prior_verifies_against_its_reference(name):
    pytest.importorskip("onnxruntime")
    from edgediff.runtime.backends import load
    from edgediff.tools.verify import verify

    denoiser = load(name, backend="ort")
    assert denoiser.bundle.root == SHIPPED_DIR / name
    report = verify(denoiser)
    reference = report.cases[0]
    assert reference["name"].startswith("reference.npz") and reference["passed"], reference


def test_short_names_resolve_and_paths_win(tmp_path, monkeypatch):
    assert resolve("rf-qpsk") == SHIPPED_DIR / "rf-qpsk"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rf-qpsk").mkdir()  # a local directory of that name is what the user meant
    assert resolve("rf-qpsk") == Path("rf-qpsk")
    with pytest.raises(BundleError, match="no shipped prior of that name"):
        Bundle.open("rf-nope")


def test_reports_name_a_shipped_prior_by_its_name_and_other_bundles_by_their_path(tmp_path, monkeypatch):
    assert label(SHIPPED_DIR / "rf-qpsk") == "rf-qpsk" == label(resolve("rf-qpsk"))
    monkeypatch.chdir(SHIPPED_DIR.parent)
    assert label(Path("priors") / "rf-qpsk") == "rf-qpsk"  # relative, from the checkout's root
    (tmp_path / "rf-qpsk").mkdir()  # a copy elsewhere under the same name is not the shipped one
    (tmp_path / "rf-qpsk" / "manifest.json").write_text("{}")
    assert label(tmp_path / "rf-qpsk") == str(tmp_path / "rf-qpsk")


def test_altered_prior_is_refused(tmp_path):
    import shutil

    copy = tmp_path / "rf-chirp"
    shutil.copytree(SHIPPED_DIR / "rf-chirp", copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Bundle.open(copy)
    assert np.isfinite(Bundle.open(SHIPPED_DIR / "rf-chirp").reference()["eps"]).all()



@pytest.mark.onnx
@pytest.mark.parametrize("name", ["rf-qpsk", "rf-chirp"])
def test_shipped_int8_models_load_and_reproduce_their_reference(name):
    pytest.importorskip("onnxruntime")
    from edgediff.runtime.backends import load

    d = load(name, precision="int8")  # hashes checked, then the self-test at the int8 tolerance
    gate = d.bundle.manifest["int8"]["gate"]
    assert gate["passed"] and d.self_test_error < d.bundle.manifest["int8"]["self_test_rtol"]


def test_a_shipped_prior_carries_its_recipe_s_own_grid_and_no_other():
    """`make priors` gives the rebuilt bundle the grid of tools/priors.GRIDS; the shipped one has the same."""
    from edgediff.runtime import grids
    from edgediff.tools.priors import GRIDS

    assert set(GRIDS) <= set(NAMES)
    for name in NAMES:
        bundle = Bundle.open(name)
        if name in GRIDS:
            own = GRIDS[name]
            assert bundle.manifest["sampling"] == grids.record(own.spec, bundle.schedule.T, own.why, own.method)
        else:
            assert "sampling" not in bundle.manifest
