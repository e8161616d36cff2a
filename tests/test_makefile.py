"""The README's main command, `make demo`, must run on a fresh clone and again on top of itself: every
output folder its recipe writes into is created first, and every fixed output is replaced on purpose."""

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def recipe(target: str) -> list[str]:
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def test_demo_creates_its_output_folders_and_can_run_twice():
    lines = recipe("demo")
    made = {p for line in lines if line.startswith("mkdir -p") for p in line.split()[2:]}
    for line in lines:
        if "$(EDGEDIFF)" not in line:
            continue
        command = line.split()[1]
        for flag, path in re.findall(r"(--out|--plot) (\S+)", line):
            parent = path if command == "showcase" else str(Path(path).parent)  # showcase writes into a folder
            if command != "train":  # train makes its run directory's parents; the others refuse a missing folder
                assert parent in made, f"`{line}` writes into {parent}/, which the recipe does not create"
        if command in ("export", "sample", "showcase"):
            assert "--force" in line, f"`{line}` would refuse its own output on a second run"
    # the demo ends with the shipped priors at work, whose lines are the last it prints
    assert lines[-1].split()[:2] == ["$(EDGEDIFF)", "showcase"] and "--out out" in lines[-1]
