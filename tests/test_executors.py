"""Executors: a grid on a local Ray gives the sequential results, survives a killed worker,
records a failing run, stops on Ctrl-C, and says which extra to install when Ray is missing."""
import csv
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import resattn
from resattn.cli import main
from resattn.workflow.compare import CompareConfig, run_compare
from resattn.workflow.executors import RayExecutor, SequentialExecutor, make_executor, read_result
from resattn.tools.weights import read_checkpoint

RUN_IDS = ["none-lr0.1-s0", "none-lr0.1-s1", "branch-se-lr0.1-s0", "branch-se-lr0.1-s1"]


def _grid(out, **kw) -> CompareConfig:
    """4 tiny deterministic runs on digits (cifar_resnet20, 1 input channel, 8x8)."""
    opts = dict(dataset="digits", patterns=["none", "branch"], seeds=[0, 1], epochs=2, out=str(out),
                train_options={"deterministic": True, "augment": False, "log_every": 5})
    opts.update(kw)
    return CompareConfig(**opts)


def _rows(out):
    with (Path(out) / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _weights(run_dir):
    return read_checkpoint(Path(run_dir) / "checkpoint.pt")["state_dict"]


def _max_abs_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _attempts(run_dir):
    path = Path(run_dir) / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _quiet(_msg):
    pass


def _one_thread(fn):
    """Run ``fn`` with torch on one thread, as a Ray task with 1 CPU runs (the float sums of a
    convolution depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- without Ray

def test_missing_ray_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'resattn\[ray\]'"):
        RayExecutor()
    code = main(["compare", "--dataset", "digits", "--patterns", "none", "--epochs", "1",
                 "--out", str(tmp_path), "--executor", "ray", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--executor ray" in err and "resattn[ray]" in err
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_executor_options_are_checked(capsys):
    assert isinstance(make_executor(), SequentialExecutor)
    with pytest.raises(ValueError, match=r"executor='dask' is not allowed; allowed: sequential, processes, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match=r"address, gpus_per_run only apply to executor='ray'"):
        make_executor("sequential", address="auto", gpus_per_run=1)
    with pytest.raises(ValueError, match=r"cpus_per_run=0 must be a number > 0"):
        RayExecutor(cpus_per_run=0)
    with pytest.raises(ValueError, match=r"gpus_per_run=2 must be in \[0, 1\].*torchrun"):
        RayExecutor(gpus_per_run=2)
    assert main(["compare", "--dataset", "digits", "--address", "auto"]) == 2
    assert "address only apply to executor='ray' (--executor ray)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- on a local Ray

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'resattn[ray]')")
    # the workers import the resattn under test (they inherit this environment)
    src = str(Path(resattn.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([src] + ([old] if old else []))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def sequential_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    res = _one_thread(lambda: run_compare(_grid(out), progress=False, log=_quiet))
    return out, res


def test_ray_grid_gives_the_sequential_results(local_ray, sequential_grid, tmp_path):
    seq_out, seq = sequential_grid
    logs = []
    res = run_compare(_grid(tmp_path), progress=False, log=logs.append,
                      executor=RayExecutor(cpus_per_run=1))
    rows, seq_rows = _rows(tmp_path), _rows(seq_out)
    assert [r["run_id"] for r in rows] == RUN_IDS == [r["run_id"] for r in seq_rows]
    assert [r["status"] for r in rows] == ["finished"] * 4
    for key in ("final_acc", "best_acc", "params", "mflops"):
        assert [r[key] for r in rows] == [r[key] for r in seq_rows], key
    for run in RUN_IDS:
        assert _max_abs_diff(_weights(tmp_path / "runs" / run),
                             _weights(seq_out / "runs" / run)) == 0.0, run
        assert len(_attempts(tmp_path / "runs" / run)) == 1
        log = (tmp_path / "runs" / run / "train.log").read_text()
        assert f"--- {run}: attempt 1 on" in log and f"--- {run}: finished: best" in log
    assert [r["final_acc"] for r in res["rows"]] == [r["final_acc"] for r in seq["rows"]]
    assert any(line.startswith("ray: 4 runs as tasks on 2 CPUs") for line in logs)
    assert sum(": finished: best" in line for line in logs) == 4
    report = (tmp_path / "report.md").read_text()
    assert "| variant | attn | runs | params | MFLOPs | final_acc mean ± std | Δ vs baseline [95% CI] | verdict |" in report
    # the same command again skips every run, on either executor
    logs.clear()
    run_compare(_grid(tmp_path), progress=False, log=logs.append, executor=RayExecutor())
    assert sum("finished earlier, skipped" in line for line in logs) == 4


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(local_ray, tmp_path):
    # smaller batches and 4 epochs: the kill lands while 3 epochs (about 1 s each) remain
    cfg = _grid(tmp_path / "ray", epochs=4, batch_size=16)
    victim = tmp_path / "ray" / "runs" / "branch-se-lr0.1-s0"
    killed = {}

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 900  # a loaded 2-core machine took over 240 s
        while time.monotonic() < deadline and not killed:
            attempts = _attempts(victim)
            if (victim / "checkpoint.pt").exists() and attempts:
                killed.update(attempts[-1])
                os.kill(attempts[-1]["pid"], signal.SIGKILL)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    res = run_compare(cfg, progress=False, log=_quiet, executor=RayExecutor(cpus_per_run=1))
    watcher.join(timeout=5)
    assert killed, "the watcher never saw the first checkpoint"
    rows = _rows(tmp_path / "ray")
    assert [r["run_id"] for r in rows] == RUN_IDS
    assert [r["status"] for r in rows] == ["finished"] * 4 == [r["status"] for r in res["rows"]]
    attempts = _attempts(victim)
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["pid"] == killed["pid"] != attempts[1]["pid"]
    assert attempts[0]["resume_epoch"] is None and attempts[1]["resume_epoch"] >= 1
    assert "attempt 2 on" in (victim / "train.log").read_text()
    assert f"resuming after epoch {attempts[1]['resume_epoch']} (checkpoint.pt)" in (
        victim / "train.log").read_text()
    epochs = [json.loads(line)["epoch"] for line in (victim / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert epochs == [1, 2, 3, 4]  # the killed epoch's partial records were dropped
    assert read_result(victim)["epochs_done"] == 4
    # the resumed run ends where an uninterrupted one does
    spec_cfg = dataclasses.replace(cfg, patterns=["branch"], seeds=[0], out=str(tmp_path / "seq"))
    _one_thread(lambda: run_compare(spec_cfg, progress=False, log=_quiet))
    reference = tmp_path / "seq" / "runs" / "branch-se-lr0.1-s0"
    assert _max_abs_diff(_weights(victim), _weights(reference)) == 0.0
    assert read_result(victim)["final_acc"] == read_result(reference)["final_acc"]


def test_a_failing_run_is_recorded_and_the_others_finish(local_ray, tmp_path):
    cfg = _grid(tmp_path, epochs=1)
    (tmp_path / "runs").mkdir(parents=True)
    (tmp_path / "runs" / "none-lr0.1-s1").write_text("a file where the run folder goes")
    logs = []
    res = run_compare(cfg, progress=False, log=logs.append, executor=RayExecutor())
    assert [r["status"] for r in _rows(tmp_path)] == ["finished", "failed", "finished", "finished"]
    failed = res["rows"][1]
    assert failed["error"].startswith("FileExistsError") and "none-lr0.1-s1" in failed["error"]
    assert any("none-lr0.1-s1: failed: FileExistsError" in line for line in logs)
    assert "FileExistsError" in (tmp_path / "report.md").read_text()
    # fixed, the same command finishes what is missing
    (tmp_path / "runs" / "none-lr0.1-s1").unlink()
    logs.clear()
    res = run_compare(cfg, progress=False, log=logs.append, executor=RayExecutor())
    assert [r["status"] for r in _rows(tmp_path)] == ["finished"] * 4
    assert sum("skipped" in line for line in logs) == 3


def test_ctrl_c_stops_the_grid_and_the_same_command_finishes_it(local_ray, tmp_path):
    cfg = _grid(tmp_path, epochs=3)

    def interrupt_at_first_result(line):
        if ": finished: best" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, progress=False, log=interrupt_at_first_result, executor=RayExecutor())
    runs = [tmp_path / "runs" / r for r in RUN_IDS]
    started = [a for r in runs if read_result(r) is None for a in _attempts(r)]
    deadline = time.monotonic() + 30  # the cancelled tasks' workers are killed
    while time.monotonic() < deadline and any(_alive(a["pid"]) for a in started):
        time.sleep(0.2)
    assert not any(_alive(a["pid"]) for a in started)
    # counted once every worker is gone: a run may end between the interrupt and its cancellation
    done = [r for r in runs if read_result(r) is not None]
    assert 1 <= len(done) < 4
    assert not (tmp_path / "results.csv").exists()
    logs = []
    run_compare(cfg, progress=False, log=logs.append, executor=RayExecutor())
    assert [r["status"] for r in _rows(tmp_path)] == ["finished"] * 4
    assert sum("skipped" in line for line in logs) == len(done)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child not yet reaped is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
