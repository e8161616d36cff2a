"""The README's measured tables say what the benchmark JSON beside them says.

The separation and reconstruction tables are rewritten by hand after each `edgediff priors figures`;
a table left from an earlier run once survived a re-measurement. These tests rebuild each row from
docs/bench/*.json and look for it in the README, so a stale row fails here, not in a reader's hands.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH = ROOT / "docs" / "bench"

SEPARATION_COLUMNS = (
    "no mitigation (matched filter on y)",
    "LMMSE (both covariances)",
    "fixed Wiener filter",
    "joint DDNM+ (100)",
    "alpha-RGS (200)",
)


def table_after(text: str, heading: str) -> list[str]:
    """The data rows of the first markdown table from the line holding `heading` on."""
    start = text.rfind("\n", 0, text.index(heading)) + 1
    rows = []
    for line in text[start:].splitlines():
        if line.startswith("|"):
            rows.append(line.strip())
        elif rows:
            break
    assert len(rows) > 2, f"no table after {heading!r}"
    return rows[2:]  # header and rule


def separation_rows(point: dict, sinr: int) -> str:
    cells = [point[name] for name in SEPARATION_COLUMNS]
    measured = " | ".join(f"{c['ber']:.4f} / {c['mse_db']:.1f}" for c in cells[1:])
    return f"| {sinr:+d} | {cells[0]['ber']:.4f} | {measured} |"


@pytest.mark.parametrize("interferer", ["rf-chirp", "rf-qpsk-fast"])
def test_separation_table_matches_its_json(interferer):
    bench = json.loads((BENCH / "separate.json").read_text())
    points = bench["interferers"][interferer]
    expected = [separation_rows(points[str(s)], s) for s in bench["sinr_db"]]
    shown = table_after(README.read_text(), f"SOI rf-qpsk, interferer **{interferer}**")
    assert shown == expected, "README separation table differs from docs/bench/separate.json"


#: The time-travel table (README, Separation): LMMSE, one joint DDNM+ sample and the mean of 4, plain and walked
#: with the time-travel trick 10:4, and the best of those against LMMSE.
TRAVEL_COLUMNS = ("LMMSE (both covariances)", "joint DDNM+ (100)", "joint DDNM+ (100, mean of 4)",
                  "joint DDNM+ (100, travel 10x4)", "joint DDNM+ (100, travel 10x4, mean of 4)")


def against_lmmse(bench: dict, columns: tuple[str, ...]) -> list[str]:
    """A separation table's rows against rf-qpsk-fast: each point's cells (BER / SOI MSE) for ``columns``,
    LMMSE first, and the best of the others against LMMSE."""
    points, rows = bench["interferers"]["rf-qpsk-fast"], []
    for sinr in bench["sinr_db"]:
        cells = [points[str(sinr)][name] for name in columns]
        ratio = cells[0]["ber"] / max(min(c["ber"] for c in cells[1:]), 1e-6)
        rows.append(f"| {sinr:+d} | " + " | ".join(f"{c['ber']:.4f} / {c['mse_db']:.1f}" for c in cells)
                    + f" | {ratio:.2f}x |")
    return rows


def test_time_travel_table_matches_its_json():
    bench = json.loads((BENCH / "separate-travel.json").read_text())
    shown = table_after(README.read_text(), "SOI rf-qpsk, interferer rf-qpsk-fast, **time travel**")
    assert shown == against_lmmse(bench, TRAVEL_COLUMNS), "README time-travel table differs from its JSON"


#: The restarts table (README, Separation): LMMSE, the walked mean of 4, the rounds restarted from it and from
#: LMMSE, and the best of those against LMMSE.
RESTART_COLUMNS = ("LMMSE (both covariances)", "joint DDNM+ (100, travel 10x4, mean of 4)",
                   "joint DDNM+ (100, travel 10x4, mean of 4, restart 600/500/400/300)",
                   "joint DDNM+ (from LMMSE, travel 10x4, mean of 4, restart 600/500/400/300)")


def test_restarts_table_matches_its_json():
    bench = json.loads((BENCH / "separate-restart.json").read_text())
    shown = table_after(README.read_text(), "SOI rf-qpsk, interferer rf-qpsk-fast, **restarts from the mean**")
    assert shown == against_lmmse(bench, RESTART_COLUMNS), "README restarts table differs from its JSON"
    # the walked mean's row reproduces the time-travel table's at the same point, draw for draw
    points = bench["interferers"]["rf-qpsk-fast"]
    travel = json.loads((BENCH / "separate-travel.json").read_text())["interferers"]["rf-qpsk-fast"]
    for sinr in bench["sinr_db"]:
        assert points[str(sinr)][RESTART_COLUMNS[1]]["ber"] == travel[str(sinr)][RESTART_COLUMNS[1]]["ber"]


#: The restarts table with 8 samples a round (README, Separation): the recipe chosen on held-out frames
#: (--frame-seed 1) and scored on the bench's, its rows alone (--row).
RESTART8_COLUMNS = ("LMMSE (both covariances)", "joint DDNM+ (100, travel 10x4, mean of 8)",
                    "joint DDNM+ (100, travel 10x4, mean of 8, restart 600/500/400/300)")


def test_restarts_with_8_samples_table_matches_its_json():
    bench = json.loads((BENCH / "separate-restart-8.json").read_text())
    shown = table_after(README.read_text(), "SOI rf-qpsk, interferer rf-qpsk-fast, **restarts with 8 samples a round**")
    assert shown == against_lmmse(bench, RESTART8_COLUMNS), "README 8-sample restarts table differs from its JSON"
    assert bench["rows"] == ["(100, travel 10x4, mean of 8"] and "frame_seed" not in bench  # the bench's frames
    # its LMMSE row is the 4-sample table's, point for point: the same frames
    four = json.loads((BENCH / "separate-restart.json").read_text())["interferers"]["rf-qpsk-fast"]
    for sinr in bench["sinr_db"]:
        assert bench["interferers"]["rf-qpsk-fast"][str(sinr)][RESTART8_COLUMNS[0]] == four[str(sinr)][RESTART8_COLUMNS[0]]


def reconstruction_row(dataset: str, result: dict) -> str:
    methods = result["methods"]

    def best(kind):
        return min((m for m in methods.items() if m[1]["kind"] == kind), key=lambda m: m[1]["nmse_db"])

    def ser(m):
        return f", SER {m['ser']:.3f}" if "ser" in m else ""

    (dname, diff), (lname, listed) = best("diffusion"), best("listed")
    lmmse = next(m for name, m in methods.items() if name.startswith("LMMSE"))
    gain_listed, gain_all = result["gain_vs_listed_db"], result["gain_vs_all_classical_db"]
    return (
        f"| {dataset} | {result['case']} | {diff['nmse_db']:.1f} ({dname}{ser(diff)}) | "
        f"{listed['nmse_db']:.1f} ({lname}) | {lmmse['nmse_db']:.1f}{ser(lmmse)} | "
        f"{gain_listed:+.1f} | {gain_all:+.1f} | {'yes' if gain_all >= 3 else 'no'} |"
    )


def test_reconstruction_table_matches_its_json():
    bench = json.loads((BENCH / "reconstruct.json").read_text())
    expected = [
        reconstruction_row(dataset, result)
        for dataset, cases in bench["datasets"].items()
        for name, result in cases.items()
        if name != "note"
    ]
    shown = table_after(README.read_text(), "| dataset | case | best diffusion |")
    assert shown == expected, "README reconstruction table differs from docs/bench/reconstruct.json"


def progress_row(name: str, p: dict) -> str:
    slope = "-" if p["slope"] is None else f"{p['slope']:+.2f} ({p['fit_points']})"
    spent = f"{p['seconds'].get('GPU', 0) / 60:.0f} min / {p['seconds'].get('CPU', 0) / 3600:.1f} h"
    j = p["projection"]
    to = j["status"] if j["status"] != "open" else (
        f"{j['doublings']:.1f} doublings: {j['frames']:.2g} frames, {j['gpu_hours']:.3g} GPU hours")
    return f"| {name} | {p['frames_seen'] / 1e6:.1f} M | {p['now']:.2f} (≤ {p['target']:g}) | {slope} | {spent} | {to} |"


def test_priors_progress_table_matches_its_json_and_the_ledger():
    from edgediff.tools import priors_progress as pg
    from edgediff.tools.priors_continue import read_ledger

    bench = json.loads((BENCH / "priors-progress.json").read_text())["priors"]
    expected = [progress_row(name, p) for name, p in bench.items()]
    shown = table_after(README.read_text(), "| prior | frames seen | now (target) |")
    assert shown == expected, "README progress table differs from docs/bench/priors-progress.json"
    # and the JSON is what the ledger and the evaluate figures say today (a later adoption re-draws it)
    fresh = pg.as_json(pg.progress(read_ledger()))["priors"]
    assert [progress_row(n, p) for n, p in json.loads(json.dumps(fresh)).items()] == expected, \
        "docs/bench/priors-progress.json is stale: edgediff priors figures --stale"
