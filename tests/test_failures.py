"""One bad run does not stop a grid; a bad file is diagnosed as what it is (issue 15)."""
import json
import os
from pathlib import Path

import pytest
import torch

import resattn.workflow.compare as compare_mod
from resattn.cli import main
from resattn.workflow.compare import CompareConfig, run_compare
from resattn.tools.weights import CheckpointError, build_model, load_model, read_checkpoint, save_checkpoint


def _cfg(out, **kw):
    opts = dict(dataset="digits", patterns=["none"], seeds=[0, 1], epochs=1, out=str(out),
                train_options={"augment": False, "log_every": 5})
    opts.update(kw)
    return CompareConfig(**opts)


def _quiet(_msg):
    pass


# ----------------------------------------------------------------------------- a corrupt run folder

def test_a_corrupt_checkpoint_fails_its_run_with_a_hint_and_the_grid_goes_on(tmp_path, capsys):
    bad = tmp_path / "runs" / "none-lr0.1-s0"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(os.urandom(4096))
    res = run_compare(_cfg(tmp_path), progress=False, log=_quiet)
    assert [r["status"] for r in res["rows"]] == ["failed", "finished"]
    err = res["rows"][0]["error"]
    assert "none-lr0.1-s0" in err and "--no-resume" in err and "delete" in err
    assert "is not a PyTorch checkpoint" in err and "weights_only=False" not in err
    assert not res["rows"][0]["defect"]
    assert "--no-resume" in (tmp_path / "report.md").read_text()
    # the CLI: exit 4 (a failed run), not 2 (an aborted grid); --no-resume starts it over
    args = ["compare", "--dataset", "digits", "--patterns", "none", "--seeds", "0,1", "--epochs",
            "1", "--out", str(tmp_path), "--no-progress", "--no-augment", "--log-every", "5"]
    assert main(args) == 4
    assert "none-lr0.1-s0: failed" in capsys.readouterr().err
    assert main(args + ["--no-resume"]) == 0
    assert json.loads((bad / "result.json").read_text())["status"] == "finished"


def test_a_defect_in_resattn_is_reported_as_one_with_its_log(tmp_path, monkeypatch, capsys):
    real_train = compare_mod.train

    def buggy(config, run_dir, **kw):
        if config.seed == 0:
            return {}["no such key"]  # a KeyError: resattn's own bug, not the run's
        return real_train(config, run_dir, **kw)

    monkeypatch.setattr(compare_mod, "train", buggy)
    res = run_compare(_cfg(tmp_path), progress=False, log=_quiet)
    row = res["rows"][0]
    assert row["status"] == "failed" and row["defect"] and res["rows"][1]["status"] == "finished"
    log = Path(row["log"])
    assert log == tmp_path / "runs" / "none-lr0.1-s0" / "error.log"
    assert "KeyError" in log.read_text() and "buggy" in log.read_text()
    report = (tmp_path / "report.md").read_text()
    assert "defect in resattn" in report and str(log) in report
    # a failure of the run itself (bad data, options, files) is not a defect
    monkeypatch.setattr(compare_mod, "train", lambda *a, **k: (_ for _ in ()).throw(ValueError("x")))
    res = run_compare(_cfg(tmp_path / "b", seeds=[0]), progress=False, log=_quiet)
    assert res["rows"][0]["status"] == "failed" and not res["rows"][0]["defect"]


# ----------------------------------------------------------------------------- checkpoint diagnosis

def _kinds(tmp_path):
    model = build_model("cifar_resnet20", {"num_classes": 10})
    good = save_checkpoint(model, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(os.urandom(5000))
    (tmp_path / "random80.pt").write_bytes(b"\x80\x02" + os.urandom(5000))  # looks like a pickle
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "script.pt"))
    torch.save({"state_dict": model.state_dict(), "x": Path("/")}, tmp_path / "objects.pt")
    other = build_model("cifar_resnet32", {"num_classes": 10})
    ckpt = read_checkpoint(save_checkpoint(other, tmp_path / "other.pt"))
    ckpt["arch"] = "cifar_resnet20"  # claims an architecture its tensors do not fit
    torch.save(ckpt, tmp_path / "wrong.pt")


@pytest.mark.parametrize("name,kind,says", [
    ("truncated.pt", "truncated", "is truncated"),
    ("empty.pt", "truncated", "empty"),
    ("random.pt", "not-a-checkpoint", "is not a PyTorch checkpoint"),
    ("random80.pt", "not-a-checkpoint", "is not a PyTorch checkpoint"),
    ("text.pt", "not-a-checkpoint", "is not a PyTorch checkpoint"),
    ("script.pt", "torchscript", "TorchScript archive"),
    ("objects.pt", "python-objects", "weights_only=False"),
    ("wrong.pt", "wrong-architecture", "another architecture"),
])
def test_checkpoint_problems_are_told_apart(tmp_path, name, kind, says):
    _kinds(tmp_path)
    with pytest.raises(CheckpointError, match=says) as info:
        load_model(tmp_path / name)
    assert info.value.kind == kind
    if kind != "python-objects":  # the only case where weights_only=False is the advice
        assert "weights_only=False" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    load_model(tmp_path / "good.pt")


def test_a_legacy_format_checkpoint_still_reads_and_a_random_pickle_never_does(tmp_path):
    from resattn.tools.weights import read_checkpoint
    sd = {"w": torch.arange(3.0)}
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(tmp_path / "legacy.pt")["w"], sd["w"])
    for i in range(20):  # random bytes after a pickle header: always told, never misread
        (tmp_path / "r.pt").write_bytes(b"\x80\x02" + os.urandom(200))
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(tmp_path / "r.pt")
        assert info.value.kind == "not-a-checkpoint"


# ----------------------------------------------------------------------------- metrics and Ray

def test_read_metrics_tolerates_only_a_truncated_last_line(tmp_path):
    from resattn.workflow.report import read_metrics
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "epoch", "epoch": 1}\n{"type": "epoch", "ep')  # killed mid-write
    assert read_metrics(tmp_path) == [{"type": "epoch", "epoch": 1}]
    path.write_text('{"type": "epoch", "epoch": 1}\ngarbage\n{"type": "epoch", "epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON record"):
        read_metrics(tmp_path)
    path.write_text('{"type": "epoch", "epoch": 1}\n{"type": "ep\n')  # complete line, bad
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(tmp_path)


def test_an_unreachable_ray_address_fails_in_the_stated_time(tmp_path, capsys):
    import socket
    import time
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'resattn[ray]')")
    from resattn.workflow.executors import RayExecutor, _check_reachable
    with socket.socket() as s:  # a port on this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"nothing answers at '{address}' within 2 s.*ray start --head"):
        RayExecutor(address, connect_timeout_s=2)._connect()
    assert time.monotonic() - t0 < 10
    # an address that never answers (a firewall dropping packets) times out the same way
    seen = {}

    def silent(addr, timeout):
        seen["timeout"] = timeout
        raise socket.timeout("timed out")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "create_connection", silent)
        with pytest.raises(ConnectionError, match=r"'ray://head:10001' within 0.5 s \(TimeoutError"):
            _check_reachable("ray://head:10001", 0.5)
    assert seen["timeout"] == 0.5
    code = main(["compare", "--dataset", "digits", "--patterns", "none", "--epochs", "1", "--out",
                 str(tmp_path), "--executor", "ray", "--address", address, "--no-progress"])
    assert code == 2 and f"nothing answers at '{address}'" in capsys.readouterr().err


STUDY = """
name: t
claim: a beats b.
hypothesis: {better: a, worse: b, metric: final_acc}
decision_rule: {test: paired, confidence: 0.95}
variants: {a: {pattern: dual}, b: {pattern: none}}
dataset: digits
budgets:
  smoke: {epochs: 1, train_subset: 100, test_subset: 50, seeds: [0, 1]}
"""


def test_a_corrupt_checkpoint_does_not_stop_a_study(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    from resattn.workflow.cache import run_key
    from resattn.workflow.study import load_study
    spec = next(s for s in load_study(path).specs("smoke") if s.run_id == "a-s0")
    bad = tmp_path / "cache" / run_key(spec.config)  # runs train in the cache beside the study
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"PK\x03\x04" + os.urandom(3000))  # a zip cut short
    args = ["study", str(path), "--budget", "smoke", "--out", str(out), "--no-progress"]
    assert main(args) == 4  # the grid ran to its end; one run failed
    err = capsys.readouterr().err
    assert "a-s0: failed" in err and "is truncated" in err and "--no-resume" in err
    doc = json.loads((out / "study.json").read_text())
    assert (doc["runs"], doc["finished"], doc["failed"]) == (4, 3, 1)
    assert main(args + ["--no-resume"]) == 0
