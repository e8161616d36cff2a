"""Faults inflicted for real: SIGKILL mid-export, mid-checkpoint and mid-recording; a full disk (a
file-size limit on the process); a read-only output folder; an output folder deleted mid-run.

Each test synchronises on the program's own progress (a temporary file it created, a checkpoint it
wrote, bytes in its output) and never on a sleep that hopes the work is still running: where a kill
lands at a seeded random moment, every moment must leave the promised state, so the verdict is the
same on a slow or a fast machine. Promises checked: nothing under a final name but a complete file
(or the previous complete version), temporary files reclaimed by the next run, `train --resume`
continuing from the newest intact checkpoint to the uninterrupted weights, and one line naming the
path and the cause with exit 2.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from safetensors.torch import load_file  # noqa: E402

from edgediff.runtime.bundle import Bundle  # noqa: E402
from edgediff.train.checkpoint import intact, list_checkpoints  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.onnx]


def edgediff(*args):
    return [sys.executable, "-m", "edgediff", *map(str, args)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def wait_for(predicate, proc, what, timeout=240):
    """Poll the program's own sign of progress; fail if it ends or never shows it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the program ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    raise AssertionError(f"no {what} within {timeout} s")


def one_line(res, *needles):
    err = res.stderr if isinstance(res.stderr, str) else res.stderr.decode()
    assert res.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("edgediff: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# ---- SIGKILL ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])  # after the temporary bundle appears (seeded grid)
def test_a_killed_export_leaves_the_previous_bundle_or_the_new_one(tmp_path, mlp_run, mlp_bundle, delay):
    out = tmp_path / "bundle"
    shutil.copytree(mlp_bundle, out)  # a previous complete version, replaced with --force
    before = (out / "manifest.json").read_bytes()
    proc = subprocess.Popen(edgediff("export", "onnx", mlp_run, "--out", out, "--force"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: leftovers(tmp_path) or proc.poll() == 0, proc, "a temporary bundle")
    time.sleep(delay)  # anywhere in the write: the verdict below holds for every moment
    proc.kill()
    proc.wait(timeout=60)
    Bundle.open(out)  # the previous version or the complete new one (hashes checked), never a half bundle
    if (out / "manifest.json").read_bytes() != before:  # the new one arrived: only after its temporary was complete
        assert json.loads((out / "manifest.json").read_text())["created"] != json.loads(before)["created"]
    res = subprocess.run(edgediff("export", "onnx", mlp_run, "--out", out, "--force"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert leftovers(tmp_path) == []  # the dead process's temporary directories were reclaimed
    Bundle.open(out)


def test_a_killed_replacement_between_its_two_renames_brings_the_old_bundle_back(tmp_path, mlp_bundle):
    """The one moment with nothing under the final name: the old bundle moved aside, the new one not yet
    in. A dead process's leftovers in exactly that state are put back by the next write."""
    from edgediff.runtime.atomic import reclaim

    out = tmp_path / "bundle"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    aside = tmp_path / f".tmp-bundle.{pid}.old.abc"
    aside.mkdir()
    shutil.copytree(mlp_bundle, aside / "x")
    (tmp_path / f".tmp-bundle.{pid}.xyz").mkdir()  # its unfinished successor
    reclaim(out)
    Bundle.open(out)
    assert leftovers(tmp_path) == []


def test_a_prune_stopped_midway_leaves_no_half_checkpoint_under_a_final_name(tmp_path, monkeypatch):
    """The deletion of an old checkpoint stopped after its first file, as a kill would stop it: the checkpoints
    under final names stay whole (the old one is renamed away before anything of it is deleted), and what the
    stopped deletion left is a temporary name."""
    import torch

    from edgediff.train import checkpoint

    weights = {"w": torch.arange(3.0)}
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    for step in (1, 2):
        checkpoint.save_checkpoint(tmp_path, step, weights, weights, optimizer, {}, keep=2)

    def killed_after_one_file(path, ignore_errors=False):
        next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
        raise KeyboardInterrupt  # the process stops here

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, 3, weights, weights, optimizer, {}, keep=2)
    files = {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"}
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert all({f.name for f in p.iterdir()} == files for p in list_checkpoints(tmp_path))
    assert len(leftovers(tmp_path)) == 1


def test_a_run_killed_during_checkpoint_writes_resumes_to_the_uninterrupted_weights(tmp_path):
    args = ["train", "--dataset", "gmm2d", "--width", "32", "--T", "100", "--steps", "150", "--batch", "64",
            "--checkpoint-every", "1", "--quiet", "--device", "cpu"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert subprocess.run(edgediff(*args, "--out", full), capture_output=True, timeout=300).returncode == 0
    rng = np.random.default_rng(0)
    proc = subprocess.Popen(edgediff(*args, "--out", killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list_checkpoints(killed / "checkpoints")) >= 2, proc, "two checkpoints")
    time.sleep(float(rng.uniform(0, 0.2)))  # checkpoints are written every step: most moments are mid-write
    proc.kill()
    proc.wait(timeout=60)
    assert not (killed / "summary.json").exists(), "the run ended before it was killed"
    written = list_checkpoints(killed / "checkpoints")
    assert len(list(intact(killed / "checkpoints"))) == len(written)  # no half checkpoint under a final name
    res = subprocess.run(edgediff("train", "--out", killed, "--resume", "--quiet", "--device", "cpu"), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    a, b = load_file(str(full / "weights.safetensors")), load_file(str(killed / "weights.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert leftovers(killed) == [] and leftovers(killed / "checkpoints") == []


def test_a_killed_recording_leaves_no_output_and_its_temporary_file_is_reclaimed(tmp_path, unet_bundle):
    out = tmp_path / "clean.npy"
    proc = subprocess.Popen(edgediff("denoise", unet_bundle, "--y", "-", "--out", out, "--sigma-y", "0.05", "--steps", "2",
                                     "--batch", "1", "--quiet"), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    chunk = (np.ones(4096) * 0.3 + 0.1j).astype(np.complex64).tobytes()

    def feed():  # the input never ends: only the kill stops the run
        try:
            while True:
                proc.stdin.write(chunk)
                proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    wait_for(lambda: any(p.stat().st_size > 4096 for p in tmp_path.glob(".tmp-*")), proc, "samples in its temporary file")
    proc.kill()
    proc.wait(timeout=60)
    assert not out.exists() and len(leftovers(tmp_path)) == 1
    np.save(tmp_path / "rec.npy", (np.ones(600) * 0.3 + 0.1j).astype(np.complex64))
    res = subprocess.run(edgediff("denoise", unet_bundle, "--y", tmp_path / "rec.npy", "--out", out, "--sigma-y", "0.05",
                                  "--steps", "2", "--quiet"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert np.load(out).shape == (600,) and leftovers(tmp_path) == []


# ---- a full disk: a file-size limit on the process ----------------------------------------------------

def limited(kib):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))
    return apply


def test_a_full_disk_is_one_line_and_keeps_what_was_there(tmp_path, mlp_run, unet_bundle):
    # export: model.onnx outgrows the limit
    res = subprocess.run(edgediff("export", "onnx", mlp_run, "--out", tmp_path / "b"), capture_output=True, text=True,
                         timeout=300, preexec_fn=limited(16))
    one_line(res, str(tmp_path / "b"), "File too large", "disk is full")
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []
    # sample with --force over an existing file: the old file stays as it was
    old = np.arange(6, dtype=np.float32)
    np.save(tmp_path / "s.npy", old)
    res = subprocess.run(edgediff("sample", unet_bundle, "--n", "4000", "--steps", "2", "--out", tmp_path / "s.npy", "--force",
                                  "--quiet"), capture_output=True, text=True, timeout=300, preexec_fn=limited(256))
    one_line(res, str(tmp_path / "s.npy"), "disk is full")
    assert np.array_equal(np.load(tmp_path / "s.npy"), old) and leftovers(tmp_path) == []
    # a recording written chunk by chunk
    np.save(tmp_path / "rec.npy", (np.ones(40_000) * 0.3 + 0.1j).astype(np.complex64))
    res = subprocess.run(edgediff("denoise", unet_bundle, "--y", tmp_path / "rec.npy", "--out", tmp_path / "clean.npy",
                                  "--sigma-y", "0.05", "--steps", "1", "--quiet"), capture_output=True, text=True,
                         timeout=300, preexec_fn=limited(200))
    one_line(res, str(tmp_path / "clean.npy"), "disk is full")
    assert not (tmp_path / "clean.npy").exists() and leftovers(tmp_path) == []


# ---- folders that refuse or vanish ----------------------------------------------------------------------

def without_root_powers(cmd):
    """As root, a read-only folder is writable: drop the capability that overrides file permissions."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): a read-only folder cannot be made to refuse root")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]


def test_a_read_only_output_folder_is_one_line_and_nothing_is_written(tmp_path, unet_bundle):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        res = subprocess.run(without_root_powers(edgediff("sample", unet_bundle, "--n", "2", "--steps", "2", "--out",
                                                          folder / "s.npy", "--quiet")),
                             capture_output=True, text=True, timeout=300)
        one_line(res, str(folder), "is not writable")  # the output policy checks before any work
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_an_output_folder_deleted_mid_run_is_one_line(tmp_path, unet_bundle):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.Popen(edgediff("denoise", unet_bundle, "--y", "-", "--out", folder / "clean.npy", "--sigma-y", "0.05",
                                     "--steps", "2", "--batch", "1", "--quiet"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write((np.ones(2000) * 0.3 + 0.1j).astype(np.complex64).tobytes())
    proc.stdin.flush()
    wait_for(lambda: any(p.stat().st_size > 1024 for p in folder.glob(".tmp-*")), proc, "samples in its temporary file")
    shutil.rmtree(folder)  # the folder goes while the program writes into it
    proc.stdin.close()  # the end of the stream: the program finishes and tries to put its output in place
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2, err
    assert err.count("\n") == 1 and str(folder / "clean.npy") in err and "No such file or directory" in err
    assert "Traceback" not in err and not folder.exists()


def test_the_fault_tests_promises_are_named_in_the_readme():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for promise in ("leave no file under the final name", "resume", "full disk"):
        line = next((ln for ln in text.splitlines() if promise in ln and "tests/test_faults.py" in ln), None)
        assert line is not None, f"the README's promise about {promise!r} does not name tests/test_faults.py"
