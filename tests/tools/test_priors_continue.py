"""The prepared GPU session, run as its dry run on the CPU: plan, train from the shipped weights,
curves, packing; then the trip back here: unpack and adopt."""

import hashlib
import json
import subprocess
import sys

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgediff.runtime.errors import InputError  # noqa: E402
from edgediff.tools import priors_adopt as pa  # noqa: E402
from edgediff.tools import priors_continue as pc  # noqa: E402
from edgediff.tools import priors_pack as pp  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.onnx, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
FRAMES = 16  # frames each adopt samples from both bundles: its score, not its quality, is under test


def test_make_gpu_priors_finds_a_relative_interpreter_and_keeps_dry_runs_out_of_runs_gpu():
    """The recipe runs from GPU_SITE, so a relative GPU_PYTHON (the Makefile's own example) is made absolute;
    a dry run's toy stages go to OUT/dry-runs unless GPU_RUNS is given, never beside the real runs."""
    def recipe(*args):
        res = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), "gpu-priors", *args], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    dry = recipe("GPU_PYTHON=.venv/bin/python", "OUT=out/x", "GPU_ARGS=--dry-run rf-qpsk")
    assert f" {ROOT}/.venv/bin/python -m edgediff priors continue" in dry
    assert f"--out {ROOT}/out/x --runs {ROOT}/out/x/dry-runs --dry-run rf-qpsk" in dry
    real = recipe("OUT=/tmp/o", "GPU_ARGS=--seconds 320 rf-qpsk")
    assert " python3 -m edgediff priors continue" in real and f"--runs {ROOT}/runs/gpu --seconds 320" in real
    carried = recipe("OUT=/tmp/o", "GPU_RUNS=runs/carry", "GPU_ARGS=--dry-run rf-qpsk")
    assert f"--runs {ROOT}/runs/carry --dry-run" in carried


def test_continue_refuses_an_out_holding_an_earlier_calls_parts(tmp_path):
    """The packed parts of an earlier call not yet unpacked are never overwritten: refused before any training."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    (out / "runs.tar.part00").write_bytes(b"an earlier call's runs")
    res = subprocess.run([sys.executable, "-m", "edgediff", "priors", "continue", "rf-chirp", "--out", str(out), "--runs",
                          str(runs), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "holds runs.tar.part00 from an earlier call" in res.stderr and "another --out" in res.stderr
    assert [p.name for p in out.iterdir()] == ["runs.tar.part00"] and not runs.exists()
    assert (out / "runs.tar.part00").read_bytes() == b"an earlier call's runs"


def test_the_device_script_dry_run_then_unpack_and_adopt(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    # exactly what a GPU session runs (make gpu-priors: the package linked onto PYTHONPATH, no install)
    # the one-process route, its convolutions channels-last
    args = f"rf-chirp --runs {runs} --seconds 2 --bench-seconds 0.5 --together on --channels-last on --dry-run"
    stage = f"rf-chirp-s{pc.newest_weights('rf-chirp', runs, pc.read_ledger())[0]}"  # past the shipped ledger's
    cmd = ["make", "-s", "-C", str(ROOT), "gpu-priors", f"GPU_PYTHON={sys.executable}", f"OUT={out}",
           f"GPU_SITE={tmp_path / 'site'}", f"GPU_ARGS={args}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"rf-chirp: stage {runs / stage} from " in res.stdout
    config = json.loads((runs / stage / "config.json").read_text())
    assert config["train"]["frames"] == "generated" and config["train"]["init_from"].endswith("priors/rf-chirp")
    assert config["train"]["channels_last"] is True
    bench = json.loads((out / "bench-train.json").read_text())
    names = ["today", "fast", "fast-compile", "fast-compile-cl", "fast-compile-x4"]
    assert [r["variant"]["name"] for r in bench["rows"]] == names and all("error" not in r for r in bench["rows"])
    assert bench["rows"][3]["options"] == "graphs+fused+cl" and bench["rows"][4]["copies"] == 2  # models at once (on a GPU each on its own stream; four there, two here)
    # each variant's steps profiled, their traces kept beside for the trip back
    assert all("error" not in r["profile"] and r["profile"]["kernels"] > 0 for r in bench["rows"])
    assert sorted(p.name for p in (out / "profile").iterdir()) == sorted(f"{n}.trace.json.gz" for n in names)
    # trained in one process (`priors train-together`): its stage's log ends as `edgediff train` ends a run
    assert "train-together: exit 0" in res.stdout and (out / "together.log").is_file()
    assert (runs / stage / "train.log").read_text().strip().splitlines()[-1].startswith("trained ")
    parts = sorted(out.glob("runs.tar.part*"))
    assert parts and all(p.stat().st_size <= pp.PART_BYTES for p in parts)
    # here: the parts become runs again, and the stage is measured against what ships
    back = tmp_path / "back"
    restored = pp.unpack(parts, back)
    assert restored == [back / stage]
    assert sorted(p.name for p in restored[0].iterdir()) == sorted(
        ["config.json", "weights.safetensors", "loss.csv", "summary.json", "curve.json", "train.log", "curve.log"])
    shipped, ledger = tmp_path / "shipped", tmp_path / "ledger.json"
    shipped.mkdir()
    reuse_the_first_export(monkeypatch, tmp_path / "exported")
    assert pa.adopt(restored[0], shipped, FRAMES, ledger, log=print)  # nothing ships there yet: adopted
    entry = json.loads(ledger.read_text())["rf-chirp"]
    assert entry["stages"][0]["run"] == stage and entry["frames_seen"] == entry["stages"][0]["frames"] > 0
    # where it trained, in the ledger's words, from the run's own summary and config
    assert entry["stages"][0]["device"].startswith("cpu (") and ", batch " in entry["stages"][0]["device"]
    digest = hashlib.sha256((shipped / "rf-chirp" / "model.onnx").read_bytes()).hexdigest()
    assert not pa.adopt(restored[0], shipped, FRAMES, ledger, log=print)  # not better than itself: kept as it was
    assert hashlib.sha256((shipped / "rf-chirp" / "model.onnx").read_bytes()).hexdigest() == digest
    assert len(json.loads(ledger.read_text())["rf-chirp"]["stages"]) == 1
    # measured and kept out: recorded, so the next call neither starts from it nor takes its name again
    assert [d["run"] for d in json.loads(ledger.read_text())["rf-chirp"]["declined"]] == [stage]
    number, init = pc.newest_weights("rf-chirp", back, json.loads(ledger.read_text()))
    assert number == pc.stage_number("rf-chirp", restored[0]) + 1 and init.endswith("priors/rf-chirp")
    check_int8_is_carried(restored[0], shipped, ledger, monkeypatch)


def reuse_the_first_export(monkeypatch, keep):
    """adopt exports the same run four times here; the first export is real (and kept), the others copy
    it: what is under test is adopt's verdicts, and each export is 20-45 s of the suite."""
    import shutil

    from edgediff.export import bundle_onnx

    real = bundle_onnx.export_bundle

    def export_once(run_dir, out, opts=bundle_onnx.OnnxExportOptions()):
        if not keep.is_dir():
            real(run_dir, keep, opts)
        shutil.copytree(keep, out)
        return json.loads((out / "manifest.json").read_text())

    monkeypatch.setattr(bundle_onnx, "export_bundle", export_once)


def check_int8_is_carried(run, shipped, ledger, monkeypatch):
    """A prior that ships an int8 model keeps one when a stage is adopted: quantized and gated with the
    shipped one's settings; a stage whose int8 model fails that gate is not adopted."""
    from edgediff.export import quantize
    from edgediff.runtime.bundle import Bundle
    from edgediff.tools import int8_gate

    # the dry-run stage trained for seconds, not steps: its weights (and so its int8 figures) depend on
    # the machine's speed, so the gate's bounds are set here to pass, and below to fail, whatever they are;
    # so is the int8 model's self-test on the reference (a slow host's toy stage missed it by 0.20 > 0.15)
    for key in int8_gate.GATES:
        monkeypatch.setitem(int8_gate.GATES, key, 1e9)
    monkeypatch.setattr(quantize, "SELF_TEST_RTOL", 1e9)
    int8_gate.quantize_gated(shipped / "rf-chirp", calibration=16, frames=16, log=print)
    measure = pa.measure_bundle

    def shipped_worse(bundle, n, seed=0, held_out_seed=None):  # the stage must win for adopt to get that far
        report = measure(bundle, n, seed, held_out_seed)
        if bundle == shipped / "rf-chirp":
            report["psd_lsd_db"] += 10.0
        return report

    monkeypatch.setattr(pa, "measure_bundle", shipped_worse)
    lines = []
    with monkeypatch.context() as strict:
        strict.setitem(int8_gate.GATES, "lsd_db", -1.0)  # no int8 model can pass this gate
        before = (shipped / "rf-chirp" / "manifest.json").read_bytes()
        assert not pa.adopt(run, shipped, FRAMES, ledger, log=lines.append)
        assert "not adopted" in lines[-1] and (shipped / "rf-chirp" / "manifest.json").read_bytes() == before
        # better float weights whose int8 model failed: not declined (the next call trains on from them)
        assert [d["why"] for d in json.loads(ledger.read_text())["rf-chirp"]["declined"]] == [
            "measured no better than the shipped prior"]  # the earlier verdict on the same run, unchanged
    assert pa.adopt(run, shipped, FRAMES, ledger, log=lines.append)
    bundle = Bundle.open(shipped / "rf-chirp")  # hashes verified
    record = bundle.manifest["int8"]
    assert "model.int8.onnx" in bundle.manifest["files"] and record["gate"]["passed"]
    assert (record["calibration"]["inputs"], record["gate"]["frames"]) == (16, 16)
    assert len(json.loads(ledger.read_text())["rf-chirp"]["stages"]) == 2
    assert json.loads(ledger.read_text())["rf-chirp"]["declined"] == []  # adopted after all: no longer declined


def test_the_next_stage_continues_the_newest_local_run(tmp_path):
    (tmp_path / "rf-qpsk-s5").mkdir()
    (tmp_path / "rf-qpsk-s5" / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "rf-qpsk-s6").mkdir()  # an unfinished stage: no weights
    number, init = pc.newest_weights("rf-qpsk", tmp_path, {"rf-qpsk": {"stages": [{}] * 4}})
    assert number == 6 and init == str(tmp_path / "rf-qpsk-s5" / "weights.safetensors")
    number, init = pc.newest_weights("rf-chirp", tmp_path, {"rf-chirp": {"stages": [{}]}})
    assert number == 2 and init.endswith("priors/rf-chirp")
    # an adopted stage whose number skips one (s2 was never adopted): the next is past it, not a second s3
    number, _ = pc.newest_weights("rf-chirp", tmp_path, {"rf-chirp": {"stages": [{"run": "rf-chirp"}, {"run": "rf-chirp-s3"}]}})
    assert number == 4
    # a stage adopt declined is neither continued nor carried, and its number is not taken again
    ledger = {"rf-qpsk": {"stages": [{}] * 4, "declined": [{"run": "rf-qpsk-s5"}]}}
    number, init = pc.newest_weights("rf-qpsk", tmp_path, ledger)
    assert number == 6 and init.endswith("priors/rf-qpsk")
    (tmp_path / "rf-qpsk-s5" / "config.json").write_text("{}")
    assert pc.carry(tmp_path, tmp_path / "carry", ledger=ledger) == []
    assert [p.name for p in pc.carry(tmp_path, tmp_path / "carry2", ledger={})] == ["rf-qpsk-s5"]


def test_the_ledger_counts_the_unadopted_stages_an_adopted_one_continued(tmp_path, mlp_run):
    """s6 trained on from s5, which was never adopted; s5 from the shipped bundle: adopting s6 counts s5."""
    base = json.loads((mlp_run / "config.json").read_text())
    back, elsewhere = tmp_path / "back", tmp_path / "device-runs"
    for stage, steps, init in ((4, 7, str(tmp_path / "shipped" / "rf-qpsk")), (5, 3, str(back / "rf-qpsk-s4" / "weights.safetensors")),
                               (6, 5, str(elsewhere / "rf-qpsk-s5" / "weights.safetensors"))):
        (back / f"rf-qpsk-s{stage}").mkdir(parents=True)
        config = {**base, "train": {**base["train"], "steps": steps, "batch": 10, "init_from": init}}
        (back / f"rf-qpsk-s{stage}" / "config.json").write_text(json.dumps(config))
    parents = pa.unrecorded_parents(back / "rf-qpsk-s6", "rf-qpsk", set(), log=print)
    assert parents == [back / "rf-qpsk-s4", back / "rf-qpsk-s5"]  # s5 found beside s6, not where the device had it
    assert pa.unrecorded_parents(back / "rf-qpsk-s6", "rf-qpsk", {"rf-qpsk-s4"}, log=print) == [back / "rf-qpsk-s5"]
    lines = []
    (back / "rf-qpsk-s5" / "config.json").unlink()
    (back / "rf-qpsk-s5").rmdir()
    assert pa.unrecorded_parents(back / "rf-qpsk-s6", "rf-qpsk", set(), log=lines.append) == []
    assert "not counted" in lines[0]
    assert [pa.stage_frames(p)[0] for p in parents[:1]] == [70]


def test_bad_names_and_archives_are_refused(tmp_path):
    with pytest.raises(InputError, match="not continued"):
        pc.plan(["gmm2d"], tmp_path, 10, study=[])
    with pytest.raises(InputError, match="study variant"):
        pc.plan([], tmp_path, 10, study=["qpsk-w999"])
    bad = tmp_path / "runs.tar.part00"
    bad.write_bytes(b"not a tar")
    with pytest.raises(InputError, match="do not form a tar"):
        pp.unpack([bad], tmp_path / "x")


def test_stages_train_together_only_where_four_models_at_once_moved_enough_more():
    def bench(one, many, many_error=None):
        rows = [{"variant": {"name": "fast-compile"}, "frames_per_s": one, "loss_finite": True},
                {"variant": {"name": "fast-compile-x4"}, "loss_finite": True,
                 **({"error": many_error} if many_error else {"frames_per_s": many})}]
        return {"rows": rows}

    yes, why = pc.together_pays(bench(80_000, 160_000))
    assert yes and "2.00x" in why and "together" in why
    no, why = pc.together_pays(bench(80_000, 96_000))
    assert not no and "1.20x" in why and f"{pc.TOGETHER_GAIN}x" in why
    assert not pc.together_pays(bench(80_000, 0, many_error="RuntimeError: out of memory"))[0]
    assert not pc.together_pays({"rows": []})[0] and not pc.together_pays({})[0]  # no benchmark: processes


def test_stages_run_channels_last_only_where_the_benchmark_measured_it_faster(tmp_path):
    def bench(plain, cl, cl_loss=1.0):
        return {"rows": [{"variant": {"name": "fast-compile"}, "frames_per_s": plain, "loss_finite": True},
                         {"variant": {"name": "fast-compile-cl"}, "frames_per_s": cl, "mean_loss": cl_loss,
                          "loss_finite": cl_loss == cl_loss}]}

    yes, why = pc.channels_last_pays(bench(80_000, 100_000))
    assert yes and "1.25x" in why and "channels-last" in why
    no, why = pc.channels_last_pays(bench(80_000, 84_000))
    assert not no and "1.05x" in why and f"{pc.CHANNELS_LAST_GAIN}x" in why
    no, why = pc.channels_last_pays(bench(80_000, 200_000, cl_loss=float("nan")))
    assert not no and "loss nan" in why  # fast but diverged: not taken
    assert not pc.channels_last_pays({"rows": []})[0] and not pc.channels_last_pays({})[0]
    stages = pc.with_channels_last(pc.plan(["rf-chirp"], tmp_path / "runs", 2, study=[], dry_run=True))
    assert stages[0].config.train.channels_last


def test_a_failed_fast_step_sends_every_stage_to_todays_step(tmp_path):
    stages = pc.plan(["rf-chirp"], tmp_path / "runs", 2, study=["qpsk-w32"], dry_run=True)
    pc.prepare(stages)
    today = {"variant": {"name": "today"}, "loss_finite": True, "mean_loss": 0.1}
    fine = {"rows": [today, {"variant": {"name": "fast"}, "loss_finite": True, "mean_loss": 0.1}]}
    assert pc.step_fallback(stages, fine) == (stages, None)
    diverged = {"rows": [today, {"variant": {"name": "fast"}, "loss_finite": False, "mean_loss": float("nan")}]}
    assert "loss nan" in pc.step_fallback(stages, diverged)[1]
    failed = {"rows": [today, {"variant": {"name": "fast"}, "error": "RuntimeError: operation not permitted when stream is capturing"}]}
    changed, why = pc.step_fallback(stages, failed, frames=256)
    assert "not permitted when stream is capturing" in why and [s.name for s in changed] == ["rf-chirp", "qpsk-w32"]
    pc.rewrite(changed)
    config = json.loads((changed[0].run / "config.json").read_text())
    assert (config["train"]["frames"], config["train"]["graphs"], config["train"]["fused"]) == ("resident", False, False)
    assert config["train"]["init_from"].endswith("priors/rf-chirp") and config["data"]["n"] == 256
    # the rewritten stage really trains that way (the loop's own record of its step program)
    assert pc.launch(changed[:1], "cpu", log=print) == {"rf-chirp": 0}
    summary = json.loads((changed[0].run / "summary.json").read_text())
    assert summary["step_program"]["frames"] == "resident" and summary["steps_this_session"] > 0


def test_stages_compile_on_a_cuda_graph_and_drop_compile_when_the_benchmark_saw_it_fail(tmp_path):
    import torch

    from edgediff.train.step import resolve

    stages = pc.plan(["rf-qpsk"], tmp_path / "runs", 2, study=[], dry_run=True)
    train, data = stages[0].config.train, stages[0].config.data
    assert train.compile is None  # auto: decided by the device
    assert resolve(train, data, torch.device("cuda"), False)[1].describe() == "amp+graphs+fused+compile"
    assert resolve(train, data, torch.device("cuda"), True)[1].compile is False  # DDP: no graph, no compile
    assert resolve(train, data, torch.device("cpu"), False)[1].compile is False  # the dry run stays eager
    today = {"variant": {"name": "today"}, "loss_finite": True, "mean_loss": 0.1}
    fast = {"variant": {"name": "fast"}, "loss_finite": True, "mean_loss": 0.1}
    broken = {"variant": {"name": "fast-compile"}, "error": "BackendCompilerFailed: inductor raised"}
    changed, why = pc.step_fallback(stages, {"rows": [today, fast, broken]})
    assert "torch.compile failed" in why and "inductor raised" in why
    t = changed[0].config.train
    assert (t.compile, t.frames, t.graphs) == (False, "generated", None)  # the fast step stays


def test_carry_takes_the_newest_stage_of_each_prior_and_only_its_weights_and_config(tmp_path):
    runs = tmp_path / "runs"
    for run, files in {"rf-qpsk-s5": CARRY_FILES, "rf-qpsk-s6": CARRY_FILES + ("checkpoints/step.pt",),
                       "rf-qpsk-s7": ("config.json",), "rf-chirp-s2": CARRY_FILES, "qpsk-w40": CARRY_FILES}.items():
        for f in files:
            (runs / run / f).parent.mkdir(parents=True, exist_ok=True)
            (runs / run / f).write_text(run)
    out = tmp_path / "carry"
    copied = pc.carry(runs, out)
    assert sorted(p.name for p in copied) == ["rf-chirp-s2", "rf-qpsk-s6"]  # s7 has no weights; study runs stay
    assert sorted(p.name for p in (out / "rf-qpsk-s6").iterdir()) == ["config.json", "weights.safetensors"]
    number, init = pc.newest_weights("rf-qpsk", out, {})
    assert (number, init) == (7, str(out / "rf-qpsk-s6" / "weights.safetensors"))
    with pytest.raises(InputError, match="carry into an empty folder"):
        pc.carry(runs, out)
    # refused before anything is copied: rf-qpsk's run would go first, rf-chirp's target is in the way
    other = tmp_path / "carry2"
    (other / "rf-chirp-s2").mkdir(parents=True)
    with pytest.raises(InputError, match="rf-chirp-s2 exists"):
        pc.carry(runs, other)
    assert [p.name for p in other.iterdir()] == ["rf-chirp-s2"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file: give a folder"):
        pc.carry(runs, tmp_path / "file")


CARRY_FILES = ("config.json", "weights.safetensors")


def test_a_grown_variant_trains_beside_its_prior_from_the_same_weights_and_adopts_as_it(tmp_path):
    runs = tmp_path / "runs"
    stages = pc.plan(["rf-qpsk-fast"], runs, 2, study=["rf-qpsk-fast-attn"], dry_run=True)
    plain, grown = stages
    assert grown.run.name == plain.run.name.replace("rf-qpsk-fast", "rf-qpsk-fast-attn") and grown.init == plain.init
    assert plain.config.model.attn_levels == () and grown.config.model.attn_levels == (2,)
    assert plain.config.train == grown.config.train and plain.config.model == replace(grown.config.model, attn_levels=())
    # a stage's seed is its number (a new stage draws new frames); the twin's is the same (the same frames)
    number = int(plain.run.name.rsplit("-s", 1)[1])
    assert plain.config.train.seed == plain.config.data.seed == grown.config.train.seed == number > 0
    pc.prepare(stages)
    assert pc.launch([grown], "cpu", log=print) == {"rf-qpsk-fast-attn": 0}
    from safetensors.torch import load_file

    assert any(k.startswith("level_attn.up") for k in load_file(str(grown.run / "weights.safetensors")))
    assert json.loads((grown.run / "summary.json").read_text())["final_loss"] < 0.3  # grown from the prior, not from 1
    # the next call trains the grown run on, as itself; carry takes it along
    again = pc.plan([], runs, 2, study=["rf-qpsk-fast-attn"], dry_run=True)[0]
    assert again.init == str(grown.run / "weights.safetensors") and again.config.model.attn_levels == (2,)
    assert again.run.name.endswith(f"-s{pc.stage_number('rf-qpsk-fast-attn', grown.run) + 1}")
    assert [p.name for p in pc.carry(runs, tmp_path / "carry")] == [grown.run.name]
    shipped, ledger = tmp_path / "shipped", tmp_path / "ledger.json"
    shipped.mkdir()
    # an explicit parity tolerance (`--atol`) is the bundle's, recorded in its manifest
    assert pa.adopt(grown.run, shipped, 32, ledger, log=print, tolerance=(3e-5, 1e-5))  # replaces its prior
    assert json.loads((shipped / "rf-qpsk-fast" / "manifest.json").read_text())["parity"]["tolerance"]["atol"] == 3e-5
    manifest = json.loads((shipped / "rf-qpsk-fast" / "manifest.json").read_text())
    assert manifest["model"]["config"]["attn_levels"] == [2]
    assert json.loads(ledger.read_text())["rf-qpsk-fast"]["stages"][-1]["run"] == grown.run.name


def test_unpack_never_merges_a_new_run_into_an_earlier_one(tmp_path):
    """A run of the same stage name from an earlier call is refused, nothing written; --replace swaps it whole."""
    src = tmp_path / "device"
    (src / "rf-qpsk-s19").mkdir(parents=True)
    (src / "rf-qpsk-s19" / "config.json").write_text('{"new": 1}')
    (src / "summary.json").write_text("{}")
    parts = pp.pack([src / "rf-qpsk-s19"], [src / "summary.json"], tmp_path / "out")
    runs = tmp_path / "runs"
    assert pp.unpack(parts, runs) == [runs / "rf-qpsk-s19"]
    assert pp.unpack(parts, runs) == [runs / "rf-qpsk-s19"]  # the same parts again: nothing to refuse
    (runs / "rf-qpsk-s19" / "snapshot-500.safetensors").write_text("the earlier call's")
    (runs / "rf-qpsk-s19" / "config.json").write_text('{"old": 1}')
    before = sorted((p.relative_to(runs).as_posix(), p.read_bytes()) for p in runs.rglob("*") if p.is_file())
    with pytest.raises(InputError, match=r"already holds rf-qpsk-s19 from an earlier call.*--replace"):
        pp.unpack(parts, runs)
    assert sorted((p.relative_to(runs).as_posix(), p.read_bytes()) for p in runs.rglob("*") if p.is_file()) == before
    assert pp.unpack(parts, runs, replace_existing=True) == [runs / "rf-qpsk-s19"]
    assert sorted(p.name for p in (runs / "rf-qpsk-s19").iterdir()) == ["config.json"]  # replaced whole, not merged
    assert json.loads((runs / "rf-qpsk-s19" / "config.json").read_text()) == {"new": 1}
    assert sorted(p.name for p in runs.iterdir()) == ["rf-qpsk-s19", "summary.json"]  # no scratch left
    res = subprocess.run([sys.executable, "-m", "edgediff", "priors", "unpack", *map(str, parts), "--runs", str(runs)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "restored" in res.stdout
    (runs / "rf-qpsk-s19" / "config.json").write_text('{"old": 1}')
    res = subprocess.run([sys.executable, "-m", "edgediff", "priors", "unpack", *map(str, parts), "--runs", str(runs)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "--replace" in res.stderr
