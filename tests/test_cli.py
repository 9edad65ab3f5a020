"""The command line: convert, inspect, train, bench (compare is in test_compare.py)."""
import json
import subprocess
import sys

import torch

from resattn.cli import main
from resattn.tools.weights import load_model


def test_convert_prints_parity_and_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "dual18.pt"
    code = main(["convert", "torchvision:resnet18", "--pattern", "dual", "--res-attn", "se",
                 "--size", "64", "--batch", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "max |logit diff| 0" in printed and "top-1 agreement 100.0% -> PASS" in printed
    model, meta = load_model(out)
    assert meta["arch"] == "torchvision:resnet18"
    assert meta["convert_kwargs"] == {"pattern": "dual", "res_attn": "se"}
    assert sum(1 for n, _ in model.named_parameters() if n.endswith(".gamma")) == 8  # 4 dual blocks x 2
    main(["inspect", str(out)])
    table = capsys.readouterr().out
    assert "layer3.0" in table and "dual" in table and "se(near_identity)" in table


def test_convert_with_gate_on_the_skip_warns(tmp_path, capsys, recwarn):
    code = main(["convert", "cifar_resnet20", "--pattern", "dual", "--skip-modulation", "gate",
                 "--size", "32", "--batch", "4"])
    printed = capsys.readouterr().out
    # the function changed: said in the output and the warning, and the exit status says so too
    assert code == 5 and "FAIL" in printed
    assert any("gate" in str(w.message) for w in recwarn)


def test_train_cli_writes_result_and_resumes(tmp_path, capsys):
    args = ["train", "--dataset", "digits", "--pattern", "pre", "--attn", "eca",
            "--out", str(tmp_path), "--no-progress", "--no-augment"]
    assert main(args + ["--epochs", "1"]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "finished" and result["model_kwargs"]["attn"] == "eca"
    capsys.readouterr()
    # the folder holds a 1-epoch run: other options are refused, not silently mixed in
    assert main(args + ["--epochs", "2", "--resume"]) == 2
    assert "other options (epochs: 1 -> 2)" in capsys.readouterr().err
    assert main(args + ["--epochs", "2", "--no-resume"]) == 0  # starts over
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2


def test_python_m_resattn_help():
    proc = subprocess.run([sys.executable, "-m", "resattn", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for cmd in ("train", "compare", "convert", "inspect", "bench"):
        assert cmd in proc.stdout
