"""Raw samples on pipes: uneven writers, the file path's output, closed readers, Ctrl-C, bad streams.

Every fault here is synchronised on the program's own progress (bytes it wrote), never on a sleep: the
input never ends on its own, so the program cannot finish before the fault arrives."""

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.onnx
pytest.importorskip("onnxruntime")


def edgediff(*args):
    return [sys.executable, "-m", "edgediff", *args]


def samples(n, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.3).astype(np.complex64)


class Feeder(threading.Thread):
    """Writes bytes into a process's stdin in uneven pieces (1 byte to 5 kB, seeded), optionally forever."""

    def __init__(self, proc, data, forever=False):
        super().__init__(daemon=True)
        self.proc, self.data, self.forever = proc, data, forever
        self.rng = np.random.default_rng(7)

    def run(self):
        try:
            while True:
                i = 0
                while i < len(self.data):
                    n = int(self.rng.integers(1, 5000))
                    self.proc.stdin.write(self.data[i:i + n])
                    self.proc.stdin.flush()
                    i += n
                if not self.forever:
                    break
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the program stopped reading: that is what the fault tests make it do


def test_a_stream_written_unevenly_gives_the_file_paths_output(tmp_path, unet_bundle):
    z = samples(3000)
    np.save(tmp_path / "rec.npy", z)
    common = ["--sigma-y", "0.05", "--steps", "3", "--seed", "4", "--quiet"]
    res = subprocess.run(edgediff("denoise", str(unet_bundle), "--y", str(tmp_path / "rec.npy"), "--out",
                                  str(tmp_path / "file.npy"), *common), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    scale = float(np.sqrt(np.sum(np.abs(z.astype(np.complex128)) ** 2) / (2 * len(z))))  # the file path's scale
    proc = subprocess.Popen(edgediff("denoise", str(unet_bundle), "--y", "-", "--out", "-", "--scale", repr(scale), *common),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    feeder = Feeder(proc, z.tobytes())
    feeder.start()
    out = proc.stdout.read()  # not communicate(): it would close stdin under the feeder's feet
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err.decode()
    feeder.join(timeout=60)
    piped = np.frombuffer(out, np.complex64)
    assert np.array_equal(piped, np.load(tmp_path / "file.npy"))  # nothing but samples on stdout, all of them
    assert b"samples/s" in err and b"latency" in err


def test_integer_streams_keep_their_datatype(tmp_path, unet_bundle):
    counts = np.round(np.stack([samples(500).real, samples(500).imag], 1) * 2**15).astype(np.int16)
    res = subprocess.run(edgediff("denoise", str(unet_bundle), "--y", "-", "--out", "-", "--datatype", "ci16_le",
                                  "--sigma-y", "0.01", "--steps", "2", "--quiet"),
                         input=counts.tobytes(), capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    back = np.frombuffer(res.stdout, np.int16).reshape(-1, 2)
    assert back.shape == counts.shape and np.abs(back.astype(float)).max() > 1000  # counts, not +-1 floats


def test_a_reader_that_closes_the_pipe_ends_the_run_cleanly(unet_bundle):
    proc = subprocess.Popen(edgediff("denoise", str(unet_bundle), "--y", "-", "--out", "-", "--sigma-y", "0.05",
                                     "--steps", "2", "--batch", "1", "--quiet"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    Feeder(proc, samples(4000).tobytes(), forever=True).start()  # never ends: only the reader can stop it
    head = proc.stdout.read(800)
    proc.stdout.close()  # `| head -c 800`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert len(head) == 800 and "reader closed the output" in err and "Traceback" not in err


def _sigint_as_at_a_terminal() -> None:
    # a shell without job control starts background jobs with SIGINT ignored, and Python keeps an ignored
    # SIGINT ignored: a suite run that way (nohup make test &) would hand the child a deaf ear to Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_stream_leaves_no_file(tmp_path, unet_bundle):
    out = tmp_path / "clean.npy"
    proc = subprocess.Popen(edgediff("denoise", str(unet_bundle), "--y", "-", "--out", str(out), "--sigma-y", "0.05",
                                     "--steps", "2", "--batch", "1", "--quiet"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_sigint_as_at_a_terminal)
    try:
        Feeder(proc, samples(4000).tobytes(), forever=True).start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait for the program's own sign of work: samples in its temporary file
            tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
            if tmp and tmp[0].stat().st_size > 1024:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        # wait with the input still flowing (communicate() would close it: an end of stream racing the signal)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()  # a failed wait must not leave a stream running after the test
    err = proc.stderr.read().decode()
    assert code == 130 and "interrupted" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor its temporary file


@pytest.mark.parametrize("data, args, match", [
    (b"\x00" * 7, [], "partial cf32_le sample"),
    (np.array([np.nan + 0j] * 64, np.complex64).tobytes(), [], "NaN or Inf"),
    (b"", ["--datatype", "cu8"], "Invalid value for '--datatype'"),
    (samples(200).tobytes(), ["--operator", "mask", "--mask", "{tmp}/mask.npy"], "100 values"),
    (samples(200).tobytes(), ["--mask-label", "lost"], "a raw stream has none"),
    (samples(200).tobytes(), ["--batch", "100000"], "--batch"),
])
def test_bad_streams_are_one_line_and_exit_2(tmp_path, unet_bundle, data, args, match):
    np.save(tmp_path / "mask.npy", np.ones(100))
    cmd = ["reconstruct", str(unet_bundle), "--y", "-", "--out", "-", "--sigma-y", "0.05", "--steps", "2", "--quiet",
           *[a.format(tmp=tmp_path) for a in args]]
    if "--operator" not in args:
        cmd += ["--operator", "identity"]
    res = subprocess.run(edgediff(*cmd), input=data, capture_output=True, timeout=300)
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("edgediff: error: ") and match in err and "Traceback" not in err


def test_bench_stream_reports_consistent_figures(tmp_path, unet_bundle):
    import json

    out = tmp_path / "stream.json"
    res = subprocess.run(edgediff("bench-stream", str(unet_bundle), "--steps", "1,2", "--seconds", "0.2", "--rate", "1e5",
                                  "--batch", "2", "--no-memory", "--json", str(out)), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())["bundles"][str(unet_bundle)]["rows"]
    assert [r["steps"] for r in rows] == [1, 2]
    for r in rows:
        assert r["realtime_factor"] == pytest.approx(r["samples_per_s"] / 1e5)
        assert r["latency_samples"] == (2 - 1) * 16 + 32 - 1  # (batch - 1) hop + L - 1 for L = 32
        assert r["latency_ms"] == pytest.approx(1e3 * r["latency_samples"] / 1e5 + r["compute_per_batch_ms"])
    bad = subprocess.run(edgediff("bench-stream", str(unet_bundle), "--steps", "1,x"), capture_output=True, text=True)
    assert bad.returncode == 2 and "element 2 of '1,x'" in bad.stderr
