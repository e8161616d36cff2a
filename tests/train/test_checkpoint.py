"""Weights files: the same tensors and metadata are the same bytes (a file's sha256 names its content)."""

import hashlib

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from edgediff.train.checkpoint import load_weights, save_weights, weights_metadata  # noqa: E402

pytestmark = pytest.mark.torch


def test_the_same_weights_are_the_same_bytes_and_keep_their_metadata(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {"down.0.weight": torch.randn(4, 3, generator=g), "b": torch.randn(5, generator=g).double(),
             "a.bias": torch.zeros(2)}
    meta = {"kind": "ema", "step": "1200", "dataset": "rf-qpsk", "seed": "3", "note": "x"}
    digests = set()
    for i in range(6):  # safetensors writes a metadata map of several keys in a random order per call
        save_weights(tmp_path / f"w{i}.safetensors", state, meta)
        digests.add(hashlib.sha256((tmp_path / f"w{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    assert weights_metadata(tmp_path / "w0.safetensors") == meta
    back = load_weights(tmp_path / "w0.safetensors")
    assert sorted(back) == sorted(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_files_written_before_read_their_metadata_as_they_are(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "old.safetensors"), metadata={"kind": "ema", "step": "7"})
    assert weights_metadata(tmp_path / "old.safetensors") == {"kind": "ema", "step": "7"}
    save_weights(tmp_path / "none.safetensors", {"w": torch.ones(2)})
    assert weights_metadata(tmp_path / "none.safetensors") == {}
