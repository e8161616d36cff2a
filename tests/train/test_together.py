"""Several prepared runs trained in one process, one step of each in turn (train/together.py): each
run ends exactly where it would alone, and one run's failure is its own."""

import csv
import json

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from edgediff.runtime import NoiseSchedule  # noqa: E402
from edgediff.runtime.atomic import write_json  # noqa: E402
from edgediff.train.config import RunConfig, TrainConfig  # noqa: E402
from edgediff.train.datasets import DataConfig  # noqa: E402
from edgediff.train.loop import fit  # noqa: E402
from edgediff.train.models import UNet1DConfig  # noqa: E402
from edgediff.train.together import fit_together  # noqa: E402

pytestmark = pytest.mark.torch
TINY = UNet1DConfig(base_width=8, mults=(1, 2), heads=2, norm_groups=4, emb_dim=16)


def config(seed, dataset="rf-qpsk", **changes):
    train = {"steps": 12, "batch": 8, "lr": 3e-3, "warmup": 2, "seed": seed, "checkpoint_every": 6, "log_every": 3,
             "snapshot_every": 4, "frames": "generated", "graphs": True, "fused": True, **changes}
    return RunConfig(model=TINY, schedule=NoiseSchedule.cosine(T=100),
                     data=DataConfig(dataset=dataset, n=128, length=32, seed=seed), train=TrainConfig(**train))


def prepared(path, cfg):
    path.mkdir(parents=True)
    write_json(path / "config.json", cfg.to_dict())
    return path


def losses(run):
    """loss.csv without its frames/s column (the clock's)."""
    with open(run / "loss.csv") as fh:
        return [{k: v for k, v in row.items() if "per_s" not in k and "rate" not in k} for row in csv.DictReader(fh)]


def same_tensors(a, b):
    """The files' tensors, bit for bit, and so the files themselves (their metadata is written in one order)."""
    x, y = load_file(str(a)), load_file(str(b))
    return sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x) and a.read_bytes() == b.read_bytes()


def test_runs_trained_together_end_exactly_where_each_ends_alone(tmp_path):
    configs = {"qpsk-a": config(1), "chirp-b": config(2, dataset="rf-chirp", prediction="v"), "qpsk-c": config(3, steps=7)}
    for name, cfg in configs.items():
        fit(cfg, tmp_path / "alone" / name, device="cpu", progress=False)
    runs = [prepared(tmp_path / "together" / name, cfg) for name, cfg in configs.items()]
    lines = []
    results = fit_together(runs, "cpu", log=lines.append)
    assert sorted(results) == sorted(configs) and all("error" not in r for r in results.values())
    assert results["qpsk-c"]["steps"] == 7 and results["qpsk-a"]["steps"] == 12
    for name in configs:
        alone, together = tmp_path / "alone" / name, tmp_path / "together" / name
        # bitwise: interleaving another run's steps changes nothing in this one's arithmetic
        assert same_tensors(together / "weights.safetensors", alone / "weights.safetensors")
        assert losses(together) == losses(alone)
        assert sorted(p.name for p in (together / "snapshots").iterdir()) == sorted(p.name for p in (alone / "snapshots").iterdir())
        assert sorted(p.name for p in (together / "checkpoints").iterdir()) == sorted(p.name for p in (alone / "checkpoints").iterdir())
        log = (together / "train.log").read_text().strip().splitlines()
        assert log[-1].startswith(f"trained {results[name]['steps']} steps") and log[-1].endswith(str(together))
    # the shortest run finished first, and each closing line says which run it was
    assert lines[0].startswith("qpsk-c: after ") and sorted(line.split(":")[0] for line in lines) == sorted(configs)


def test_a_failing_run_is_reported_and_the_others_train_on(tmp_path):
    good = prepared(tmp_path / "good", config(1))
    bad = prepared(tmp_path / "bad", config(2))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["train"]["init_from"] = str(tmp_path / "nowhere")  # fails when the run sets up, inside the driver's loop
    (bad / "config.json").write_text(json.dumps(cfg))
    results = fit_together([bad, good], "cpu", log=lambda line: None)
    assert "error" in results["bad"] and "nowhere" in results["bad"]["error"]
    assert results["good"]["steps"] == 12 and (good / "weights.safetensors").is_file()
    assert "failed: " in (bad / "train.log").read_text() and "nowhere" not in (good / "train.log").read_text()


def test_priors_train_together_cli_refuses_what_it_cannot_run(tmp_path):
    a = prepared(tmp_path / "x" / "run", config(1))
    b = prepared(tmp_path / "y" / "run", config(2))
    empty = tmp_path / "empty"
    empty.mkdir()
    from click.testing import CliRunner

    from edgediff.tools.cli import cli

    for args, words in (([str(a), str(b)], "share a name"), ([str(empty)], "no config.json")):
        res = CliRunner().invoke(cli, ["priors", "train-together", *args, "--device", "cpu"])
        assert res.exit_code == 2 and words in res.stderr and "Traceback" not in res.output
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (a / "train.log").exists()  # refused before anything was written


def test_a_run_set_up_later_keeps_the_first_runs_deadline():
    from dataclasses import replace

    from edgediff.train.together import _on_deadline

    budgeted = replace(config(1), train=replace(config(1).train, max_seconds=100.0))
    assert _on_deadline(budgeted, 30.0).train.max_seconds == pytest.approx(70.0)
    assert _on_deadline(budgeted, 0.0) == budgeted and _on_deadline(config(1), 30.0) == config(1)
    assert _on_deadline(budgeted, 500.0).train.max_seconds == 1.0  # late beyond the budget: a token second, not none
