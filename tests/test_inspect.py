"""The per-block table of inspect_model / format_table."""
import pytest
import timm
import torch
import torchvision

from resattn import create_model
from resattn.tools.convert import convert
from resattn.tools.inspect import format_table, inspect_model
from resattn.tools.weights import load_model, save_checkpoint
from conftest import n_params


def test_created_dual_model_rows():
    model = create_model("cifar_resnet20", pattern="dual", skip_attn="eca", res_attn="cbam")
    rows = inspect_model(model)
    assert [r["name"] for r in rows] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert [(r["stage"], r["index"]) for r in rows[:4]] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    assert rows[0]["pattern"] == "none" and rows[0]["attention"] == "-" and rows[0]["gamma"] == {}
    assert rows[3]["attention"] == "skip=eca(near_identity) res=cbam(near_identity)"
    assert rows[3]["gamma"] == {"skip": 0.0, "res": 0.0}
    assert sum(r["backbone_params"] + r["attention_params"] for r in rows) == n_params(
        model) - n_params(model.conv1) - n_params(model.bn1) - n_params(model.fc)
    assert sum(r["attention_params"] for r in rows) == sum(
        p.numel() for n, p in model.named_parameters() if "_attn." in n)


def test_converted_and_loaded_models(tmp_path):
    tv = torchvision.models.resnet18()
    assert [r["block"] for r in inspect_model(tv)][:1] == ["torchvision.BasicBlock"]
    convert(tv, "branch", attn="se", gamma_shape="channel", stages=[4])
    with torch.no_grad():
        tv.layer4[1].attn.gamma.fill_(0.5)
    rows = inspect_model(tv)
    assert rows[-1]["attention"] == "attn=se(near_identity)" and rows[-1]["gamma"] == {"attn": 0.5}
    assert rows[-1]["attention_params"] == 512 * 32 + 32 + 32 * 512 + 512 + 512
    path = save_checkpoint(tv, tmp_path / "tv.pth", arch="torchvision:resnet18")
    loaded, _ = load_model(path)
    assert inspect_model(loaded) == rows
    tm = timm.create_model("seresnet18")
    convert(tm, "post", attn="eca")
    rows = inspect_model(tm)
    assert rows[0]["block"] == "TimmBasicBlock" and rows[0]["attention"] == "attn=eca(near_identity)"
    assert rows[0]["attention_params"] == 3 + 1  # ECA conv1d k=3 and one gamma
    assert rows[0]["backbone_params"] == n_params(tm.layer1[0]) - 4  # timm's own SE included


def test_format_table_is_aligned_with_totals():
    rows = inspect_model(create_model("resnet50", pattern="dual"))
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["block", "stage", "idx", "type", "pattern"]
    assert len(lines) == 2 + 16 + 2
    assert "layer4.2" in lines[17] and "skip=eca(near_identity) res=cbam(near_identity)" in lines[17]
    assert lines[-1].startswith("total") and "16 blocks, 9 with attention" in lines[-1]
    assert "2,360,265" in lines[-1]  # attention parameters of the default dual ResNet-50
    # the numeric columns end at the same place on every row
    end = lines[2].index("layer1.0") + len("layer1.0")
    assert all(line[:end].strip() for line in lines[2:18])
    assert len({len(line.rstrip()) for line in lines[2:18]}) == 1


def test_no_blocks():
    with pytest.raises(ValueError, match="model=Linear has no residual block"):
        inspect_model(torch.nn.Linear(2, 2))
