"""What a run reports while and after it trains (issue 15)."""
import json
import statistics
from pathlib import Path

import pytest

from resattn.layers.blocks import ResidualBlock
from resattn.workflow.data import load_dataset
from resattn.workflow.report import read_metrics
from resattn.workflow.stability import run_stability
from resattn.workflow.train import TrainConfig, train
from resattn.tools.weights import load_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=300, test_subset=100)


def test_end_of_run_gate_values_come_from_the_final_model(tmp_path, digits):
    # 300 images, batch 32: 9 steps, so the monitor (every 10th forward) samples only the first
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=32, lr=0.2, augment=False,
                      model_kwargs={"pattern": "dual"}, train_subset=300, test_subset=100)
    train(cfg, tmp_path, bundle=digits, progress=False)
    model, _ = load_model(tmp_path / "checkpoint.pt")
    gammas = [float(b.gated_paths()["skip_attn"].effective_gamma().detach().float().mean())
              for b in model.modules() if isinstance(b, ResidualBlock)
              and "skip_attn" in b.gated_paths()]
    final = statistics.fmean(gammas)
    assert final != 0.0  # the model moved away from its initial gamma_s = 0
    stab = run_stability(read_metrics(tmp_path))
    assert stab["final_gamma_s"] == pytest.approx(final, rel=1e-5, abs=1e-7)
    epoch = [r for r in read_metrics(tmp_path) if r["type"] == "epoch"][-1]
    sampled = statistics.fmean(v["gamma/skip_attn"] for v in epoch["gates"].values()
                               if "gamma/skip_attn" in v)
    assert sampled == pytest.approx(0.0, abs=1e-7)  # what reports showed before: the initial value


def test_one_line_per_epoch_and_no_bar_frames_off_a_terminal(tmp_path, digits, capsys):
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, augment=False,
                      model_kwargs={"pattern": "dual"}, train_subset=300, test_subset=100)
    train(cfg, tmp_path, bundle=digits, progress=True)  # progress on, but stderr is captured
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: train loss ")
    assert "test acc " in lines[1] and "img/s" in lines[1] and "skip gain min " in lines[1]
    assert "\r" not in err and "it/s" not in err  # no tqdm frames
