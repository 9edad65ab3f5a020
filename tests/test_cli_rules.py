"""CLI rules that keep their word, help that says what an option does, and the habits of a
user's environment (issue 15)."""
import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from resattn.cli import build_parser, compare_config, main


def _compare(argv, tmp_path, yaml_text=None):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = ["--config", str(tmp_path / "c.yaml")] + argv
    return compare_config(build_parser().parse_args(["compare"] + argv))


def test_compare_precedence_is_flags_then_yaml_then_defaults(tmp_path):
    assert _compare([], tmp_path).epochs == 2  # default
    assert _compare([], tmp_path, "epochs: 5\n").epochs == 5  # YAML > default
    assert _compare(["--epochs", "7"], tmp_path, "epochs: 5\n").epochs == 7  # flag > YAML
    full = _compare([], tmp_path, "full: true\n")  # the same preset from YAML and from the flag
    assert (full.epochs, full.quick) == (15, False) == (_compare(["--full"], tmp_path).epochs,
                                                        _compare(["--full"], tmp_path).quick)
    assert _compare([], tmp_path, "full: true\nepochs: 3\n").epochs == 3  # a key beats its level's preset
    assert _compare(["--full", "--epochs", "3"], tmp_path).epochs == 3
    assert _compare(["--full"], tmp_path, "epochs: 3\n").epochs == 15  # flag level > YAML level
    # lr: was YAML > flag before
    assert _compare(["--lr", "0.05"], tmp_path, "lr: 0.2\n").lrs == [0.05]
    assert _compare([], tmp_path, "lr: [0.2, 0.3]\n").lrs == [0.2, 0.3]
    cfg = _compare(["--weight-decay", "0.01"], tmp_path, "weight_decay: 0.5\n")
    assert cfg.train_options["weight_decay"] == 0.01


def _help(parser, command):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help for a in sub.choices[command]._actions}


def test_every_option_has_help_and_train_says_its_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"resattn {name} {action.option_strings or action.dest}: no help"
    train = _help(parser, "train")
    for dest, default in (("model", "cifar_resnet20"), ("epochs", "2"), ("batch_size", "128"),
                          ("lr", "0.1"), ("seed", "0")):
        assert "default" in train[dest] and (default in train[dest] or "%(default)s" in train[dest])
    assert "default" in _help(parser, "export")["format"]


def test_train_resume_keeps_its_word(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "new"), "--dataset", "digits"]) == 2
    assert "has no checkpoint.pt to continue from" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --resume and --no-resume contradict each other
        build_parser().parse_args(["train", "--resume", "--no-resume"])


def test_study_without_a_budget_lists_the_budgets_and_runs_nothing(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    study = root / "studies" / "03-gamma-order.yaml"
    assert main(["study", str(study), "--out", str(tmp_path / "s")]) == 2
    out = capsys.readouterr().out
    assert "choose a budget with --budget" in out
    assert re.search(r"smoke\s+\d+ runs", out) and re.search(r"full\s+\d+ runs", out)
    assert not (tmp_path / "s").exists()
    assert main(["study", str(study), "--dry-run"]) == 0


def test_threads_sets_torch_threads(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("resattn.workflow.train.train", lambda *a, **k: (_ for _ in ()).throw(ValueError("stop")))
    assert main(["train", "--threads", "1", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    assert calls == [1]
    parser = build_parser()
    for command in ("train", "compare", "study"):
        assert "threads" in _help(parser, command)
    from resattn.workflow.executors import make_executor
    ray = pytest.importorskip("ray")  # noqa: F841
    assert make_executor("ray", threads=3).threads == 3


def test_inspect_accepts_a_run_folder_and_a_resattn_timm_name(tmp_path, capsys):
    from resattn.tools.weights import build_model, save_checkpoint
    save_checkpoint(build_model("cifar_resnet20", {"pattern": "dual"}), tmp_path / "checkpoint.pt")
    assert main(["inspect", str(tmp_path)]) == 0
    assert "dual" in capsys.readouterr().out
    assert main(["inspect", "resattn_resnet50_cbam"]) == 0
    assert "cbam" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "empty")]) == 2  # neither a folder nor a name
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    assert "without checkpoint.pt" in capsys.readouterr().err


@pytest.mark.parametrize("build,arch", [
    (lambda: __import__("torchvision").models.resnet18(num_classes=7), "torchvision:resnet18"),
    (lambda: __import__("torchvision").models.resnext50_32x4d(), "torchvision:resnext50_32x4d"),
    (lambda: __import__("timm").create_model("resnet18", num_classes=5), "timm:resnet18"),
])
def test_a_converted_model_remembers_its_source(tmp_path, build, arch):
    from resattn import convert
    from resattn.tools.weights import load_model, save_checkpoint
    model = build().eval()
    convert(model, "dual", res_gamma_init=0.0)
    with torch.no_grad():  # the saved weights must be the ones that come back
        for p in model.parameters():
            p.add_(0.01)
    path = save_checkpoint(model, tmp_path / "m.pt")  # no arch=: it was "arch is required"
    loaded, meta = load_model(path)
    assert meta["arch"] == arch
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
