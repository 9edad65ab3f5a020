"""resattn bench: rows, saved-for-backward bytes, CSV and PNG (no timing asserted)."""
import csv

import pytest
import torch

from resattn.tools.bench import format_table, parse_variant, plot, run_bench, saved_bytes, write_csv
from resattn.workflow.train import TrainConfig


def test_parse_variant():
    assert parse_variant("none") == {"pattern": "none"}
    assert parse_variant("branch:eca") == {"pattern": "branch", "attn": "eca"}
    assert parse_variant("dual:se/se") == {"pattern": "dual", "skip_attn": "se", "res_attn": "se"}
    assert parse_variant("dual-gate") == {"pattern": "dual", "skip_attn": "eca", "res_attn": "cbam",
                                          "skip_modulation": "gate"}
    with pytest.raises(ValueError, match="pattern 'sideways' is not allowed"):
        parse_variant("sideways:se")


def test_bench_rows_bytes_and_files(tmp_path):
    rows = run_bench("cifar_resnet20", ["branch:se", "dual"], batch_size=2,
                     input_shape=(1, 16, 16), steps=1, rounds=1, progress=False)
    assert [(r.name, r.mode) for r in rows] == [
        ("none", "fused"), ("branch:se", "fused"), ("branch:se", "reference"), ("dual", "fused"),
        ("dual", "reference")]
    by = {(r.name, r.mode): r for r in rows}
    assert by[("none", "fused")].params == 269_434  # cifar_resnet20, in_chans=1
    # the fused dual keeps fewer bytes for backward than today's form, and more than plain
    assert (by[("none", "fused")].saved_bytes < by[("dual", "fused")].saved_bytes
            < by[("dual", "reference")].saved_bytes)
    assert all(len(r.train_s) == 1 and len(r.eval_s) == 1 and r.train_s[0] > 0 for r in rows)
    table = format_table(rows, "header")
    assert table.splitlines()[0] == "header" and len(table.splitlines()) == 3 + len(rows)
    path = write_csv(rows, tmp_path / "b.csv")
    with open(path) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(rows) and float(lines[0]["train_ratio"]) == 1.0
    assert float(lines[3]["flop_ratio"]) > 1.0
    assert plot(rows, tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.slow
def test_bench_timm_peers():
    rows = run_bench("resnet18", ["branch:se"], batch_size=2, input_shape=(3, 32, 32), steps=1,
                     rounds=1, reference=False, progress=False)
    assert [r.name for r in rows] == ["none", "branch:se", "timm resnet18", "timm seresnet18",
                                      "timm resnet18+eca", "timm resnet18+cbam"]
    # our plain resnet18 and timm's: same parameters and FLOPs
    assert rows[0].params == rows[2].params == 11_181_642
    assert rows[0].mflops == pytest.approx(rows[2].mflops)


def test_saved_bytes_counts_activations_not_parameters():
    lin = torch.nn.Linear(100, 100)
    x = torch.randn(8, 100)
    assert saved_bytes(lin, x) == 8 * 100 * 4  # the input only; the weight is a parameter


def test_bench_and_train_refuse_bad_options():
    with pytest.raises(ValueError, match="dtype='fp16'"):
        run_bench(dtype="fp16")
    with pytest.raises(ValueError, match="compile='yes'"):
        TrainConfig(compile="yes").validate()
