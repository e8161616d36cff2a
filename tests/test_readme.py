"""The README's Python example runs as written (on a real bundle), so the README cannot rot."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]
    assert text.index("```bash") < 40  # the commands open the README


def test_readme_python_examples_run(unet_bundle):
    pytest.importorskip("onnxruntime")
    blocks = python_blocks()
    assert blocks
    for code in blocks:
        namespace: dict = {}
        exec(compile(code.replace("bundles/qpsk", str(unet_bundle)), "README.md", "exec"), namespace)
        if "frames" in namespace:
            assert namespace["frames"].shape == (8, 2, 32)


@pytest.mark.parametrize("page", [README, README.parent / "docs" / "priors.md"], ids=lambda p: p.name)
def test_the_contents_line_links_every_section_by_its_anchor(page):
    text = page.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("**Contents:**"))

    def anchor(heading: str) -> str:  # GitHub's: lower case, punctuation dropped, spaces to hyphens
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    headings = [anchor(h) for h in re.findall(r"^## (.+)$", text, flags=re.M)]
    assert re.findall(r"\]\(#([^)]+)\)", line) == headings
