"""The runtime's wall: numpy plus, inside one adapter each, an engine package; never torch or onnx."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or any(name.startswith(b + ".") or name == b for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(blocked: str, body: str) -> subprocess.CompletedProcess:
    code = BLOCKER + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, blocked], capture_output=True, text=True, timeout=120)


def test_runtime_imports_and_samples_with_numpy_alone():
    proc = run_blocked(
        "torch,onnx,onnxruntime,tensorrt,scipy,matplotlib,edgediff.train,edgediff.export",
        """
        import numpy as np
        import edgediff.runtime as rt
        s = rt.NoiseSchedule.cosine(T=100)
        gmm = rt.GaussianMixtureDenoiser.from_spec(s)
        res = rt.sample(gmm, s, (64, 2), method="ddim", steps=10, rng=np.random.default_rng(0))
        assert res.nfe == 10 and np.isfinite(res.x).all()
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnx", "onnxruntime"})
        assert not leaked, leaked
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


ENGINE_ADAPTERS = {
    "onnxruntime": {"backends/ort.py"},
    "tensorrt": {"backends/trt.py"},
    "tensorrt_lean": {"backends/trt.py"},
    "cuda": {"backends/cuda.py", "backends/trt.py"},
}
NEVER = {"torch", "onnx", "onnxscript", "matplotlib", "scipy", "safetensors", "click", "tqdm", "sigmf"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_sources_respect_the_wall():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        rel = path.relative_to(RUNTIME).as_posix()
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in NEVER, f"runtime/{rel} imports {name}"
            if name.startswith("edgediff"):
                assert name.startswith("edgediff.runtime"), f"runtime/{rel} imports {name}: runtime imports nothing of ours"
            if top in ENGINE_ADAPTERS:
                assert rel in ENGINE_ADAPTERS[top], f"runtime/{rel} imports {name}: only its adapter may"
