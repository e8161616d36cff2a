"""The runtime (and the CLI a device runs) must parse as Python 3.10, JetPack 6's Python."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([*(REPO / "runtime").rglob("*.py"), *(REPO / "tools").rglob("*.py"), *(REPO / "edgediff").glob("*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_parses_as_python_310(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_no_311_only_imports_in_the_runtime():
    for path in (REPO / "runtime").rglob("*.py"):
        text = path.read_text()
        for name in ("tomllib", "typing import Self", "ExceptionGroup", "asyncio.TaskGroup"):
            assert name not in text, f"{path} uses {name} (Python 3.11+)"
