"""The README's prior-derived figures: every registered command parses as the CLI would take it, a
prior selects what reads it, and the runner runs, copies and goes on past a failure."""

import json

import click
import pytest

from edgediff.runtime.bundle import shipped
from edgediff.runtime.errors import InputError
from edgediff.tools import figures as fg
from edgediff.tools.cli import cli


def parse(args):
    """Parse ``args`` down to the leaf command, as `edgediff ARGS` would, without running it."""
    ctx = click.Context(cli, info_name="edgediff")
    command, rest = cli, list(args)
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


@pytest.mark.parametrize("figure", fg.FIGURES, ids=lambda f: f.name)
def test_every_figure_is_a_valid_command_on_shipped_priors_writing_into_docs(figure, tmp_path):
    ctx = parse(a.replace("{scratch}", str(tmp_path)) for a in figure.args)
    assert ctx.command.callback is not None
    assert set(figure.priors) <= set(shipped())
    outputs = [a for a in figure.args if a.startswith("docs/")] + [dst for _, dst in figure.copies]
    assert outputs and all(o.startswith(("docs/bench/", "docs/img/")) for o in outputs)


def test_every_figure_names_a_place_that_quotes_it():
    """`priors figures --list` tells where each figure is quoted, so that the prose can be rewritten after a
    re-measurement: a heading of the README, a bold paragraph in it, or a heading of docs/priors.md, which
    took the priors' history out of the README."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = {"README": (root / "README.md").read_text(), "docs/priors.md": (root / "docs" / "priors.md").read_text()}
    places = {name: re.findall(r"^#+ (.+)$", text, flags=re.M) + re.findall(r"^\*\*(.+?)\*\*", text, flags=re.M)
              for name, text in docs.items()}
    for f in fg.FIGURES:
        if f.section.startswith("the top of the README"):
            continue
        m = re.fullmatch(r"(.+?)(?: \((.+)\))?", f.section)
        doc, part, inner = ("docs/priors.md", m.group(2), None) if m.group(1) == "docs/priors.md" else \
            ("README", m.group(1), m.group(2))
        assert any(h.startswith(part) for h in places[doc]), f"{f.name}: no heading {part!r} in {doc}"
        if inner:
            assert any(h.startswith(inner) for h in places[doc]), f"{f.name}: no {inner!r} in {doc}"


def test_a_prior_selects_the_figures_that_read_it():
    fast = [f.name for f in fg.select(["rf-qpsk-fast"])]
    assert fast == ["evaluate-rf-qpsk-fast", "evaluate-rf-qpsk-fast-denoise", "separate", "separate-smc",
                    "separate-posterior-mean", "separate-samples-4", "separate-travel", "separate-restart", "separate-restart-8",
                    "priors-progress"]
    assert len(fg.select([])) == len(fg.FIGURES)
    assert all("rf-mix" in f.priors for f in fg.select(["rf-mix"]))
    with pytest.raises(InputError, match="no README figure reads a prior named 'rf-nope'"):
        fg.select(["rf-nope"])


def test_a_name_selects_one_figure_and_a_wrong_one_is_one_line():
    assert [f.name for f in fg.select([], ["separate", "constellation"])] == ["constellation", "separate"]
    assert [f.name for f in fg.select(["rf-qpsk-fast"], ["separate"])] == ["separate"]
    with pytest.raises(InputError, match="no README figure is called 'seperate'.*--list"):
        fg.select([], ["seperate"])
    with pytest.raises(InputError, match="none of the figures constellation reads rf-mix"):
        fg.select(["rf-mix"], ["constellation"])
    assert "--figure" in [p.opts[0] for p in parse(["priors", "figures", "--figure", "separate"]).command.params]


def test_the_runner_writes_copies_and_goes_on_past_a_failure(tmp_path):
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "img").mkdir()
    figures = [
        fg.Figure("broken", ("rf-qpsk",), ("evaluate", "rf-nope", "--n", "16"), "nowhere", 0.1),
        fg.Figure("tiny", ("rf-qpsk",), ("evaluate", "rf-qpsk", "--n", "16", "--steps", "4", "--json",
                                         "docs/bench/tiny.json"), "nowhere", 0.1),
        fg.Figure("picture", ("rf-qpsk",), ("plot", "schedule", "--out", "{scratch}/schedule.png"), "nowhere", 0.1,
                  copies=(("schedule.png", "docs/img/schedule.png"),)),
    ]
    lines = []
    done = fg.run(figures, root=tmp_path, log=lines.append)
    assert [d["exit"] for d in done.values()] == [2, 0, 0]
    assert any("rf-nope" in line for line in lines)  # the failure's own one-line error is logged
    report = json.loads((tmp_path / "docs" / "bench" / "tiny.json").read_text())
    assert report["generated"]["evm"]["median_db"] < 0
    assert (tmp_path / "docs" / "img" / "schedule.png").read_bytes()[:4] == b"\x89PNG"
    assert "rf-nope" in (tmp_path / "out" / "figures" / "broken.log").read_text()  # whole outputs kept
    # what ran is recorded with the prior it read, and how long it took here; what failed is not
    assert fg.stale(figures, tmp_path) == {"broken": "rf-qpsk: never recorded"}
    took = fg.last_seconds(figures, tmp_path)
    assert set(took) == {"tiny", "picture"} and abs(took["tiny"] - done["tiny"]["seconds"]) <= 0.5


def test_a_figure_is_stale_for_the_prior_whose_model_changed_and_mark_records_only_the_named_one(tmp_path):
    figure = fg.Figure("two", ("rf-qpsk", "rf-chirp"), ("evaluate", "rf-qpsk"), "nowhere", 0.1)
    assert fg.stale([figure], tmp_path) == {"two": "rf-qpsk: never recorded; rf-chirp: never recorded"}
    fg.mark([figure], tmp_path, priors=["rf-chirp"])
    assert fg.stale([figure], tmp_path) == {"two": "rf-qpsk: never recorded"}
    fg.mark([figure], tmp_path)
    assert fg.stale([figure], tmp_path) == {}
    # an adoption changes the model: the record still names the stage it was measured with
    path = tmp_path / fg.RECORD
    record = json.loads(path.read_text())
    record["figures"]["two"]["priors"]["rf-qpsk"].update(stage="rf-qpsk-s2", model_sha256="0" * 64)
    path.write_text(json.dumps(record))
    assert fg.stale([figure], tmp_path) == {"two": f"rf-qpsk: measured with rf-qpsk-s2, shipped is {fg.identity('rf-qpsk')['stage']}"}
    fg.mark([figure], tmp_path, priors=["rf-qpsk"])
    assert fg.stale([figure], tmp_path) == {}


def test_a_figure_whose_command_changed_is_stale_until_measured_with_the_new_one(tmp_path):
    old = fg.Figure("one", ("rf-qpsk",), ("evaluate", "rf-qpsk", "--n", "512"), "nowhere", 0.1)
    fg.mark([old], tmp_path)
    assert fg.stale([old], tmp_path) == {}
    new = fg.Figure("one", ("rf-qpsk",), ("evaluate", "rf-qpsk", "--n", "2048"), "nowhere", 0.1)
    assert fg.stale([new], tmp_path) == {"one": "its command changed since it was measured with `edgediff evaluate "
                                                "rf-qpsk --n 512`"}
    fg.mark([new], tmp_path)
    assert fg.stale([new], tmp_path) == {}
    # a record from before commands were kept judges the priors only
    path = tmp_path / fg.RECORD
    record = json.loads(path.read_text())
    del record["figures"]["one"]["args"]
    path.write_text(json.dumps(record))
    assert fg.stale([old], tmp_path) == {}


def test_a_corrupt_record_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / fg.RECORD).parent.mkdir(parents=True)
    (tmp_path / fg.RECORD).write_text("{not json")
    with pytest.raises(InputError, match="not the figures record .* fix it or delete it"):
        fg.stale(fg.FIGURES[:1], tmp_path)


def test_a_figure_is_stale_when_its_prior_s_own_grid_changed(tmp_path, monkeypatch):
    """A prior's own DDIM grid changes what its default sampler makes: the figure names both grids."""
    figure = fg.Figure("one", ("rf-qpsk",), ("evaluate", "rf-qpsk"), "nowhere", 0.1)
    shipped_identity = {k: v for k, v in fg.identity("rf-qpsk").items() if k != "grid"}  # on the uniform grid
    monkeypatch.setattr(fg, "identity", lambda prior: {**shipped_identity, "grid": "999-0:50"})
    fg.mark([figure], tmp_path)
    assert fg.stale([figure], tmp_path) == {}
    monkeypatch.setattr(fg, "identity", lambda prior: dict(shipped_identity))
    assert fg.stale([figure], tmp_path) == {"one": "rf-qpsk: measured on 999-0:50, shipped samples on the trailing grid"}
    # a figure that runs its own steps (another sampler, a posterior method) does not read the grid
    own_steps = fg.Figure("two", ("rf-qpsk",), ("evaluate", "rf-qpsk", "--sampler", "unipc"), "nowhere", 0.1)
    monkeypatch.setattr(fg, "identity", lambda prior: {**shipped_identity, "grid": "999-0:50"})
    fg.mark([own_steps], tmp_path)
    monkeypatch.setattr(fg, "identity", lambda prior: dict(shipped_identity))
    assert fg.stale([own_steps], tmp_path) == {}
    assert {f.name for f in fg.FIGURES if f.samples_by_default} >= {"evaluate-rf-mix", "samplers-mix", "evaluate-rf-chirp",
                                                                             "constellation"}
    assert not {f.name for f in fg.FIGURES if f.samples_by_default} & {"separate", "reconstruct", "evaluate-rf-qpsk-sde20"}

