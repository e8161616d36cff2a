"""Adopting a stage replaces what ships: a fault while the new bundle is copied in must leave the
shipped prior and the ledger as they were (the export and the measuring are stood in for: the fault
is in the copy, and the real chain is run by tests/tools/test_priors_continue.py)."""

import errno
import json
import shutil
from pathlib import Path

import pytest

from edgediff.export import bundle_onnx
from edgediff.tools import priors_adopt as pa


def _bundle(root: Path, tag: str, seed: int = 0) -> None:
    root.mkdir(parents=True)
    for name in ("model.onnx", "reference.npz"):
        (root / name).write_text(f"{tag} {name}")
    (root / "manifest.json").write_text(json.dumps({"tag": tag, "data": {"dataset": "rf-chirp", "seed": seed}}))


@pytest.fixture
def stage(tmp_path, monkeypatch):
    shipped, ledger, run = tmp_path / "priors", tmp_path / "ledger.json", tmp_path / "runs" / "rf-chirp-s3"
    _bundle(shipped / "rf-chirp", "shipped")
    run.mkdir(parents=True)
    ledger.write_text(json.dumps({"rf-chirp": {"frames_seen": 7, "stages": []}}))
    monkeypatch.setattr(bundle_onnx, "export_bundle", lambda run, out, options: _bundle(out, "stage"))
    figures = {"stage": 1.2, "shipped": 1.4}  # LSD, lower is better: the stage wins
    monkeypatch.setattr(pa, "measure_bundle", lambda bundle, n, seed=0, held_out_seed=None: {
        "dataset": "rf-chirp", "generated": {},
        "psd_lsd_db": figures[(bundle / "model.onnx").read_text().split()[0]]})
    monkeypatch.setattr(pa, "_carry_int8", lambda shipped, candidate, log: True)
    monkeypatch.setattr(pa, "stage_frames", lambda run: (1000, 2.0))
    monkeypatch.setattr(pa, "unrecorded_parents", lambda *args: [])
    monkeypatch.setattr(pa, "transferred_from", lambda run, prior: None)
    return run, shipped, ledger


def test_a_disk_full_mid_copy_keeps_the_shipped_prior_and_the_ledger(stage, monkeypatch):
    run, shipped, ledger = stage
    before = {p.name: p.read_bytes() for p in (shipped / "rf-chirp").iterdir()}
    ledger_before = ledger.read_bytes()
    copied: list[str] = []
    real_copytree = shutil.copytree

    def copy_then_fill_the_disk(src, dst, *args, **kwargs):
        def copy(a, b):
            if copied:
                raise OSError(errno.ENOSPC, "No space left on device", b)
            copied.append(shutil.copy2(a, b))
        return real_copytree(src, dst, *args, copy_function=copy, **kwargs)

    monkeypatch.setattr(shutil, "copytree", copy_then_fill_the_disk)
    with pytest.raises(OSError):
        pa.adopt(run, shipped, 8, ledger, log=print)
    assert copied  # it failed part-way, one file already copied
    assert {p.name: p.read_bytes() for p in (shipped / "rf-chirp").iterdir()} == before
    assert sorted(p.name for p in shipped.iterdir()) == ["rf-chirp"]  # no half-copied bundle beside it
    assert ledger.read_bytes() == ledger_before


def test_without_a_fault_the_stage_replaces_the_shipped_prior(stage):
    run, shipped, ledger = stage
    assert pa.adopt(run, shipped, 8, ledger, log=print, device="cpu (test)")
    assert (shipped / "rf-chirp" / "model.onnx").read_text() == "stage model.onnx"
    assert sorted(p.name for p in shipped.iterdir()) == ["rf-chirp"]
    entry = json.loads(ledger.read_text())["rf-chirp"]
    assert entry["frames_seen"] == 1007 and entry["stages"][0]["run"] == "rf-chirp-s3"
    assert entry["stages"][0]["sampler"] == "ddim-50 (uniform)"  # no grid of its own: the sample default


def test_a_stage_from_another_prior_s_weights_starts_a_lineage(stage, monkeypatch):
    """A transfer (rf-qpsk-fast from rf-qpsk's weights) is recorded with where it came from, and the
    prior's frames seen restart at its own: the frames the earlier stages saw are not behind it."""
    run, shipped, ledger = stage
    monkeypatch.setattr(pa, "transferred_from", lambda run, prior: "rf-qpsk")
    assert pa.adopt(run, shipped, 8, ledger, log=print, device="cpu (test)")
    entry = json.loads(ledger.read_text())["rf-chirp"]
    assert entry["frames_seen"] == 1000 and entry["stages"][-1]["from_prior"] == "rf-qpsk"
    assert entry["stages"][-1]["frames_seen_after"] == 1000


def test_transferred_from_names_the_prior_whose_data_the_starting_weights_learnt(tmp_path):
    pytest.importorskip("torch")
    from edgediff.runtime import NoiseSchedule
    from edgediff.runtime.atomic import write_json
    from edgediff.runtime.bundle import Bundle
    from edgediff.train.config import RunConfig, TrainConfig
    from edgediff.train.datasets import DataConfig
    from edgediff.train.models import UNet1DConfig

    def run(name, dataset, init):
        folder = tmp_path / name
        folder.mkdir()
        config = RunConfig(model=UNet1DConfig(), schedule=NoiseSchedule.cosine(T=1000), data=DataConfig(dataset=dataset),
                           train=TrainConfig(prediction="v", init_from=init))
        write_json(folder / "config.json", config.to_dict())
        return folder

    qpsk = run("rf-qpsk-s3", "rf-qpsk", None)
    assert pa.transferred_from(qpsk, "rf-qpsk") is None  # from scratch
    later = run("rf-qpsk-s4", "rf-qpsk", str(qpsk / "weights.safetensors"))
    assert pa.transferred_from(later, "rf-qpsk") is None  # a later stage of the same prior
    fast = run("rf-qpsk-fast-s7", "rf-qpsk-fast", str(qpsk / "weights.safetensors"))
    assert pa.transferred_from(fast, "rf-qpsk-fast") == "rf-qpsk"  # from another prior's run
    shipped = run("rf-qpsk-fast-s8", "rf-qpsk-fast", str(Bundle.open("rf-qpsk").root))
    assert pa.transferred_from(shipped, "rf-qpsk-fast") == "rf-qpsk"  # from another prior's bundle
    own = run("rf-qpsk-fast-s9", "rf-qpsk-fast", str(Bundle.open("rf-qpsk-fast").root))
    assert pa.transferred_from(own, "rf-qpsk-fast") is None


@pytest.mark.parametrize("stage_lsd, would", [(1.2, True), (1.6, False)])
def test_a_dry_run_says_which_way_it_would_go_and_changes_nothing(stage, monkeypatch, stage_lsd, would):
    run, shipped, ledger = stage
    figures = {"stage": stage_lsd, "shipped": 1.4}
    monkeypatch.setattr(pa, "measure_bundle", lambda bundle, n, seed=0, held_out_seed=None: {
        "dataset": "rf-chirp", "generated": {}, "psd_lsd_db": figures[(bundle / "model.onnx").read_text().split()[0]]})
    monkeypatch.setattr(pa, "_carry_int8", lambda *args: pytest.fail("a dry run quantized"))
    before = {p.name: p.read_bytes() for p in (shipped / "rf-chirp").iterdir()}
    ledger_before, lines = ledger.read_bytes(), []
    assert pa.adopt(run, shipped, 8, ledger, log=lines.append, dry_run=True) is would
    assert ("would go on to adopt" if would else "would keep the shipped prior") in lines[-1]
    assert {p.name: p.read_bytes() for p in (shipped / "rf-chirp").iterdir()} == before
    assert sorted(p.name for p in shipped.iterdir()) == ["rf-chirp"] and ledger.read_bytes() == ledger_before


def test_the_stage_and_the_shipped_prior_are_judged_on_the_same_held_out_frames(stage, monkeypatch):
    """A stage trains at its own seed (its number), and held-out frames derive from a bundle's seed: the
    two are measured against the shipped prior's, or a distance to the data would move with the draw."""
    run, shipped, ledger = stage
    shutil.rmtree(shipped / "rf-chirp")
    _bundle(shipped / "rf-chirp", "shipped", seed=11)
    monkeypatch.setattr(bundle_onnx, "export_bundle", lambda run, out, options: _bundle(out, "stage", seed=13))
    seen = {}

    def measure(bundle, n, seed=0, held_out_seed=None):
        tag = (bundle / "model.onnx").read_text().split()[0]
        seen[tag] = pa.data_seed(bundle) if held_out_seed is None else held_out_seed
        return {"dataset": "rf-chirp", "generated": {}, "psd_lsd_db": {"stage": 1.2, "shipped": 1.4}[tag]}

    monkeypatch.setattr(pa, "measure_bundle", measure)
    assert pa.adopt(run, shipped, 8, ledger, log=print, dry_run=True)
    assert seen == {"stage": 11, "shipped": 11}


def test_chirp_stages_show_their_pulses_beside_the_score():
    stage = {"generated": {"pulse_duty_median": 0.7}, "held_out": {"pulse_duty_median": 0.75}, "envelope_w1": 0.05}
    shipped = {"generated": {"pulse_duty_median": 0.58}, "held_out": {"pulse_duty_median": 0.75}, "envelope_w1": 0.17}
    assert pa.aside(stage, shipped) == ("pulses on for 70% of the frame against the shipped 58% (data 75%), "
                                        "envelope W1 0.050 against 0.170")
    assert pa.aside({"generated": {"evm": {}}}, {"generated": {"evm": {}}}) is None  # QPSK priors: the EVM says it


def test_mix_stages_show_the_two_parts_of_their_score():
    """rf-mix's score adds the chirp-share error to the QPSK frames' EVM: adopt shows which part moved."""
    stage = {"dataset": "rf-mix", "generated": {"chirp_share": 0.3301, "evm": {"median_db": -16.93}},
             "held_out": {"chirp_share": 0.5049}}
    shipped = {"dataset": "rf-mix", "generated": {"chirp_share": 0.3398, "evm": {"median_db": -16.61}},
               "held_out": {"chirp_share": 0.5049}}
    split = pa.parts("rf-mix", stage, shipped)
    assert split == {"chirp_share": 0.3301, "shipped_chirp_share": 0.3398, "data_chirp_share": 0.5049,
                     "evm_median_db": -16.93, "shipped_evm_median_db": -16.61}
    assert pa.parts_words(split) == ("chirp share 33.0% against the shipped 34.0% (data 50.5%), "
                                     "QPSK frames' EVM median -16.93 against -16.61 dB")
    # the parts add up to the score (points of share error, EVM in tens of dB)
    assert pa.score("rf-mix", stage) == pytest.approx(17.48 - 1.693)
    assert pa.parts("rf-qpsk", stage, shipped) is None  # one number: the EVM says it all
    assert pa.parts("rf-mix", {"generated": {}}, shipped) is None  # nothing to split


def test_a_declined_mix_stage_keeps_its_score_s_parts_in_the_ledger(stage, monkeypatch):
    """rf-mix's stage 6 lost on the chirp share while its QPSK frames gained: the record says so, not only the sum."""
    run, shipped, ledger = stage
    reports = {"stage": (0.334, -16.94), "shipped": (0.3413, -16.61)}

    def measure(bundle, n, seed=0, held_out_seed=None):
        share, evm = reports[(bundle / "model.onnx").read_text().split()[0]]
        return {"dataset": "rf-mix", "generated": {"chirp_share": share, "evm": {"median_db": evm}},
                "held_out": {"chirp_share": 0.5117}}

    monkeypatch.setattr(pa, "measure_bundle", measure)
    lines = []
    assert not pa.adopt(run, shipped, 8, ledger, log=lines.append, device="cpu (test)")
    [record] = json.loads(ledger.read_text())["rf-chirp"]["declined"]
    assert record["parts"] == {"chirp_share": 0.334, "shipped_chirp_share": 0.3413, "data_chirp_share": 0.5117,
                               "evm_median_db": -16.94, "shipped_evm_median_db": -16.61}
    assert record["score"] == pytest.approx((0.5117 - 0.334) * 100 - 1.694, abs=1e-3)  # the parts add up
    assert any("the score's parts: chirp share 33.4% against the shipped 34.1% (data 51.2%)" in line for line in lines)


def test_the_shipped_prior_s_own_grid_is_carried_to_the_stage_before_either_is_measured(stage, monkeypatch):
    """A shipped prior that samples on its own DDIM grid (rf-mix) is compared with the stage on that grid,
    and the adopted stage ships with it: adopting new weights must not drop how the prior samples."""
    run, shipped, ledger = stage
    manifest = json.loads((shipped / "rf-chirp" / "manifest.json").read_text())
    grid = {"steps": 2, "timesteps": [900, 100], "spec": "999-0:2"}
    (shipped / "rf-chirp" / "manifest.json").write_text(json.dumps({**manifest, "sampling": grid}))
    seen = {}

    def measure(bundle, n, seed=0, held_out_seed=None):
        tag = (bundle / "model.onnx").read_text().split()[0]
        seen[tag] = json.loads((bundle / "manifest.json").read_text()).get("sampling")
        return {"dataset": "rf-chirp", "generated": {}, "psd_lsd_db": {"stage": 1.2, "shipped": 1.4}[tag]}

    monkeypatch.setattr(pa, "measure_bundle", measure)
    lines = []
    assert pa.adopt(run, shipped, 8, ledger, log=lines.append, device="cpu (test)")
    assert seen == {"stage": grid, "shipped": grid}
    assert any("own grid carried over (999-0:2)" in line for line in lines)
    after = json.loads((shipped / "rf-chirp" / "manifest.json").read_text())
    assert after["tag"] == "stage" and after["sampling"] == grid
    # the ledger says which sampler the score is of: a prior's default changes between its stages
    assert json.loads(ledger.read_text())["rf-chirp"]["stages"][0]["sampler"] == "ddim on 999-0:2"
    assert pa.sampler_words(shipped.parent / "priors" / "rf-chirp") == "ddim on 999-0:2"


def test_a_declined_stage_records_where_and_how_it_trained(stage, monkeypatch):
    run, shipped, ledger = stage
    monkeypatch.setattr(pa, "measure_bundle", lambda bundle, n, seed=0, held_out_seed=None: {
        "dataset": "rf-chirp", "generated": {},
        "psd_lsd_db": {"stage": 1.5, "shipped": 1.4}[(bundle / "model.onnx").read_text().split()[0]]})
    before = (shipped / "rf-chirp" / "model.onnx").read_bytes()
    assert not pa.adopt(run, shipped, 8, ledger, log=print, device="2 CPU cores (one thread, 41 min)")
    assert (shipped / "rf-chirp" / "model.onnx").read_bytes() == before
    [record] = json.loads(ledger.read_text())["rf-chirp"]["declined"]
    assert (record["run"], record["score"], record["shipped_score"]) == ("rf-chirp-s3", 1.5, 1.4)
    assert record["device"] == "2 CPU cores (one thread, 41 min)" and record["sampler"] == "ddim-50 (uniform)"
    assert (record["frames"], record["seconds"]) == (1000, 2.0)  # the fixture's stage_frames: its time is counted


def _measured_by_seed(monkeypatch, lsd):
    """measure_bundle stood in by ``lsd[(tag, sampler seed)]``; returns the (tag, seed) pairs measured."""
    calls = []

    def measure(bundle, n, seed=0, held_out_seed=None):
        tag = (bundle / "model.onnx").read_text().split()[0]
        calls.append((tag, seed))
        return {"dataset": "rf-chirp", "generated": {}, "psd_lsd_db": lsd[tag, seed]}

    monkeypatch.setattr(pa, "measure_bundle", measure)
    return calls


def test_a_gain_within_a_draw_that_does_not_hold_at_another_seed_is_declined(stage, monkeypatch):
    """Stage 19 of rf-qpsk-fast was adopted on -15.69 against -15.68 dB at one sampler seed: a gain that
    small is measured again at the next seeds, and the first where the stage is not better decides."""
    run, shipped, ledger = stage
    calls = _measured_by_seed(monkeypatch, {("stage", 0): 1.39, ("shipped", 0): 1.40,
                                            ("stage", 1): 1.42, ("shipped", 1): 1.38})
    before, lines = (shipped / "rf-chirp" / "model.onnx").read_bytes(), []
    assert not pa.adopt(run, shipped, 8, ledger, log=lines.append, device="cpu (test)")
    assert calls == [("stage", 0), ("shipped", 0), ("stage", 1), ("shipped", 1)]  # seed 1 decided; no seed 2
    assert (shipped / "rf-chirp" / "model.onnx").read_bytes() == before
    [record] = json.loads(ledger.read_text())["rf-chirp"]["declined"]
    assert record["confirmed_at"] == [{"seed": 1, "score": 1.42, "shipped_score": 1.38}]
    assert "within one draw, but not at seed 1 (1.42 against 1.38)" in record["why"]
    assert any("measured again at sampler seeds 1, 2" in line for line in lines)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_gain_within_a_draw_that_holds_at_every_seed_is_adopted(stage, monkeypatch, dry_run):
    run, shipped, ledger = stage
    lsd = {("stage", s): 1.39 - 0.01 * s for s in (0, 1, 2)} | {("shipped", s): 1.40 for s in (0, 1, 2)}
    calls = _measured_by_seed(monkeypatch, lsd)
    assert pa.adopt(run, shipped, 8, ledger, log=print, device="cpu (test)", dry_run=dry_run)
    assert sorted(seed for _, seed in calls) == [0, 0, 1, 1, 2, 2]
    if not dry_run:
        [record] = json.loads(ledger.read_text())["rf-chirp"]["stages"]
        assert [s["seed"] for s in record["confirmed_at"]] == [1, 2] and record["score"] == 1.39


def test_a_gain_beyond_a_draw_is_measured_at_one_seed(stage, monkeypatch):
    run, shipped, ledger = stage
    calls = _measured_by_seed(monkeypatch, {("stage", 0): 1.30, ("shipped", 0): 1.40})  # 0.10 > 0.05 dB
    assert pa.adopt(run, shipped, 8, ledger, log=print, device="cpu (test)")
    assert calls == [("stage", 0), ("shipped", 0)]
    assert "confirmed_at" not in json.loads(ledger.read_text())["rf-chirp"]["stages"][0]
    assert pa.within_a_draw("rf-qpsk-fast") == 0.3 and pa.within_a_draw("rf-mix") == 1.0
