"""The content-addressed run cache (two studies sharing a variant train it once) and the
processes executor (several runs at a time on one machine)."""
import json
import os
from pathlib import Path

import pytest

from resattn.workflow.cache import run_key
from resattn.workflow.executors import ProcessExecutor, SequentialExecutor, make_executor
from resattn.workflow.study import load_study, run_studies, run_study
from resattn.workflow.train import TrainConfig, train

STUDY = """
name: {name}
claim: x.
hypothesis: {{better: shared, worse: {other}, metric: final_acc}}
decision_rule: {{test: paired, confidence: 0.95}}
variants: {{shared: {{pattern: dual}}, {other}: {{pattern: none}}}}
fixed: {{log_every: 1, monitor: false, deterministic: true, augment: false}}
dataset: digits
budgets:
  smoke: {{epochs: 1, train_subset: 100, test_subset: 100, seeds: [0, 1]}}
"""


def _write(tmp_path, name, other, shared="{pattern: dual}"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, other=other).replace("shared: {pattern: dual}",
                                                                 f"shared: {shared}"))
    return load_study(path)


class FakeTrain:
    """Counts trainings; writes what a finished run writes (result.json, metrics.jsonl)."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, run_dir, bundle=None, resume=True, progress=False):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append((config.model_kwargs.get("pattern"), config.seed, run_dir.name))
        (run_dir / "metrics.jsonl").write_text(
            json.dumps({"type": "step", "step": 1, "loss": 2.3}) + "\n"
            + json.dumps({"type": "epoch", "epoch": 1, "train_loss": 0.5}) + "\n")
        acc = 60.0 + config.seed + (1.0 if config.model_kwargs.get("pattern") == "dual" else 0.0)
        (run_dir / "result.json").write_text(json.dumps(
            {"status": "finished", "best_acc": acc, "final_acc": acc, "config": config.to_dict()}))


def test_the_key_ignores_where_a_run_executes_and_spelled_out_defaults():
    a = TrainConfig(model_kwargs={"pattern": "dual"})
    b = TrainConfig(model_kwargs={"pattern": "dual", "skip_gamma_max": 0.25, "stages": [2, 3]},
                    device="cpu", num_workers=0, data_dir="/elsewhere")
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(TrainConfig(model_kwargs={"pattern": "dual", "stages": [1, 2, 3]}))
    assert run_key(a) != run_key(TrainConfig(model_kwargs={"pattern": "dual"}, seed=1))
    assert run_key(a) != run_key(TrainConfig(model_kwargs={"pattern": "dual"}, log_every=1))


def test_two_studies_sharing_a_variant_train_it_once(tmp_path):
    one, two = _write(tmp_path, "one", "plain"), _write(tmp_path, "two", "other",
                                                        shared="{pattern: dual, skip_gamma_max: 0.25}")
    fake = FakeTrain()
    cache = tmp_path / "out" / "cache"
    run_study(one, "smoke", tmp_path / "out" / "one", command="c", progress=False, log=lambda m: None,
              executor=SequentialExecutor(train_fn=fake))
    run_study(two, "smoke", tmp_path / "out" / "two", command="c", progress=False, log=lambda m: None,
              executor=SequentialExecutor(train_fn=fake))
    patterns = sorted(p for p, _, _ in fake.calls)
    # dual x 2 seeds once; plain (study one) and other (study two: the same plain model) once
    assert patterns == ["dual", "dual", "none", "none"], fake.calls
    for study in ("one", "two"):
        run = tmp_path / "out" / study / "runs" / "shared-s0"
        key = json.loads((run / "cache.json").read_text())["cache_key"]
        assert json.loads((run / "result.json").read_text())["cache_key"] == key
        assert (cache / key / "result.json").is_file()
    doc = json.loads((tmp_path / "out" / "two" / "study.json").read_text())
    assert doc["finished"] == 4 and doc["hypotheses"][0]["cells"][0]["diff"] == pytest.approx(1.0)
    # one grid of both studies: nothing left to train
    run_studies([one, two], "smoke", {"one": tmp_path / "out" / "one", "two": tmp_path / "out" / "two"},
                command="c", progress=False, log=lambda m: None, executor=SequentialExecutor(train_fn=fake))
    assert len(fake.calls) == 4


def test_make_executor_processes_and_its_errors():
    ex = make_executor("processes", workers=3, cpus_per_run=2)
    assert isinstance(ex, ProcessExecutor) and (ex.workers, ex.threads) == (3, 2)
    with pytest.raises(ValueError, match="workers only applies to executor='processes'"):
        make_executor("sequential", workers=2)
    with pytest.raises(ValueError, match=r"workers=0 must be an integer >= 1"):
        ProcessExecutor(0)


def test_a_study_on_two_worker_processes(tmp_path):
    """A smoke study with --executor processes --workers 2: every run trains in a worker process
    (its own pid), writes train.log, and the verdicts come out as with one process."""
    st = _write(tmp_path, "p", "plain")
    out = tmp_path / "runs" / "p"
    res = run_study(st, "smoke", out, command="c", progress=False, log=lambda m: None,
                    executor=ProcessExecutor(2, threads=1, train_fn=train))
    assert [r["status"] for r in res["rows"]] == ["finished"] * 4
    cache = tmp_path / "runs" / "cache"
    pids = {json.loads((d / "attempts.jsonl").read_text().splitlines()[0])["pid"]
            for d in cache.iterdir() if d.is_dir() and (d / "attempts.jsonl").exists()}
    assert len(pids) >= 1 and os.getpid() not in pids
    assert all((out / "runs" / r["run_id"] / "train.log").is_file() for r in res["rows"])
    # the same grid again: every run comes from the cache, no process trains
    again = run_study(st, "smoke", tmp_path / "runs" / "p2", command="c", progress=False,
                      log=lambda m: None, executor=ProcessExecutor(2, threads=1, train_fn=train))
    assert [r["final_acc"] for r in again["rows"]] == [r["final_acc"] for r in res["rows"]]


def test_the_cli_runs_several_studies_as_one_grid_into_one_folder(tmp_path, capsys):
    from resattn.cli import main
    one, two = _write(tmp_path, "one", "plain"), _write(tmp_path, "two", "other")
    root = tmp_path / "results"
    assert main(["study", one.path, two.path, "--budget", "smoke", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "one.yaml: valid; budget smoke: 4 runs (4 distinct)" in dry and "all: 4 distinct runs" in dry
    code = main(["study", one.path, two.path, "--budget", "smoke", "--out", str(root),
                 "--executor", "processes", "--workers", "2", "--cpus-per-run", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in root.iterdir()} == {"one-smoke", "two-smoke", "cache"}
    # the cache holds the 4 trainings and nothing else (no staging copies of the study folders)
    assert len([p for p in (root / "cache").iterdir() if (p / "result.json").is_file()]) == 4
    assert len(list((root / "cache").iterdir())) == 4
    assert sorted(p.name for p in (root / "one-smoke" / "runs").iterdir()) == [
        "plain-s0", "plain-s1", "shared-s0", "shared-s1"]
    doc = json.loads((root / "two-smoke" / "study.json").read_text())
    assert doc["finished"] == 4 and "--executor processes --workers 2" in doc["command"]


def test_report_only_reads_the_cache_and_trains_nothing(tmp_path):
    from resattn.workflow.executors import ReportOnlyExecutor
    one = _write(tmp_path, "one", "plain")
    fake = FakeTrain()
    root = tmp_path / "out"
    run_study(one, "smoke", root / "a", command="c", progress=False, log=lambda m: None,
              executor=SequentialExecutor(train_fn=fake))
    # a cache brought back with one run missing: the report says so, nothing trains
    key = json.loads((root / "a" / "runs" / "plain-s1" / "cache.json").read_text())["cache_key"]
    (root / "cache" / key / "result.json").unlink()
    res = run_study(one, "smoke", root / "b", command="c", progress=False, log=lambda m: None,
                    executor=ReportOnlyExecutor())
    assert len(fake.calls) == 4
    assert [r["status"] for r in res["rows"]] == ["finished", "finished", "finished", "missing"]
    assert res["results"][0]["verdict"] == "incomplete"


def test_the_key_does_not_depend_on_how_torch_prints_a_module(monkeypatch):
    """A run trained under another torch version (whose module reprs differ) keeps its key."""
    import torch.nn as nn

    from resattn import cache
    cfg = TrainConfig(model="cifar_resnet20", model_kwargs={"pattern": "dual"}, dataset="digits")
    before = run_key(cfg)
    cache._MODEL_KEYS.clear()
    monkeypatch.setattr(nn.BatchNorm2d, "extra_repr", lambda self: "printed differently")
    assert run_key(cfg) == before
    cache._MODEL_KEYS.clear()


def test_rekey_moves_runs_to_their_current_keys(tmp_path):
    from resattn.workflow.cache import rekey
    cfg = TrainConfig(model="cifar_resnet20", model_kwargs={"pattern": "none"}, dataset="digits")
    old = tmp_path / "0123456789abcdef0123"
    old.mkdir()
    (old / "result.json").write_text(json.dumps({"status": "finished", "cache_key": old.name,
                                                 "config": cfg.to_dict()}))
    (old / "metrics.jsonl").write_text("{}\n")
    assert rekey(tmp_path) == {old.name: run_key(cfg)}
    moved = tmp_path / run_key(cfg)
    assert json.loads((moved / "result.json").read_text())["cache_key"] == run_key(cfg)
    assert (moved / "metrics.jsonl").is_file() and not old.exists()
    assert rekey(tmp_path) == {}
