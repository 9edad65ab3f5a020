import itertools

import pytest
import torch
import torchvision

import resattn
from resattn import ATTN_NAMES, ResNet, create_model, list_models
from conftest import n_params


def test_list_models():
    assert list_models() == sorted(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                    "cifar_resnet20", "cifar_resnet32", "cifar_resnet44",
                                    "cifar_resnet56", "cifar_resnet110"])
    assert list_models("cifar_*") == ["cifar_resnet110", "cifar_resnet20", "cifar_resnet32",
                                      "cifar_resnet44", "cifar_resnet56"]


@pytest.mark.parametrize("name,kwargs,expected", [
    ("resnet18", {}, 11_689_512),
    ("resnet50", {}, 25_557_032),
    ("resnet50", dict(pattern="branch", attn="se"), 28_088_024),   # = timm seresnet50
    ("resnet101", dict(pattern="branch", attn="se"), 49_326_872),
    ("resnet18", dict(pattern="branch", attn="se"), 11_779_624),
    ("resnet50", dict(pattern="branch", attn="eca"), 25_557_118),
    ("resnet50", dict(pattern="branch", attn="cbam"), 28_073_576),
    ("cifar_resnet20", {}, 269_722),
    ("cifar_resnet56", {}, 853_018),
    ("cifar_resnet110", {}, 1_727_962),
    ("cifar_resnet20", dict(shortcut="B"), 269_722 + 2_752),
    ("cifar_resnet56", dict(shortcut="B"), 853_018 + 2_752),
    ("cifar_resnet110", dict(shortcut="B"), 1_727_962 + 2_752),
])
def test_parameter_counts(name, kwargs, expected):
    kwargs.setdefault("num_classes", 1000 if name.startswith("resnet") else 10)
    assert n_params(create_model(name, **kwargs)) == expected


def test_pattern_1_with_se_matches_timm_seresnet50_count():
    import timm
    assert n_params(timm.create_model("seresnet50")) == n_params(
        create_model("resnet50", pattern="branch", attn="se"))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_none_loads_torchvision_state_dict_strict(name):
    tv = getattr(torchvision.models, name)().eval()
    ours = create_model(name).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() == 0.0


@pytest.mark.parametrize("pattern,attn", list(itertools.product(["none", "branch", "post", "pre", "dual"],
                                                               ["se", "cbam", "coord"])))
def test_models_on_non_square_sizes_and_batch_consistency(pattern, attn):
    model = create_model("resnet18", num_classes=7, pattern=pattern, attn=attn, res_attn=attn).eval()
    for hw in [(97, 131), (160, 160)]:
        x = torch.randn(3, 3, *hw)
        with torch.no_grad():
            y = model(x)
            y1 = model(x[:1])
        assert y.shape == (3, 7) and torch.isfinite(y).all()
        assert (y[:1] - y1).abs().max().item() <= 1e-5


@pytest.mark.parametrize("attn", ATTN_NAMES)
def test_every_attention_in_cifar_dual_and_branch(attn):
    for pattern in ("branch", "dual"):
        model = create_model("cifar_resnet20", in_chans=1, pattern=pattern, attn=attn,
                             skip_attn=attn, res_attn=attn)
        x = torch.randn(2, 1, 28, 28)
        y = model.train()(x)
        assert y.shape == (2, 10) and torch.isfinite(y).all()


def _gated_blocks(model):
    return [(name, sorted(b.gated_paths())) for name, b in model.named_modules()
            if isinstance(b, resattn.ResidualBlock) and b.gated_paths()]


def test_default_placement():
    dual = create_model("cifar_resnet20", pattern="dual")
    assert [n for n, _ in _gated_blocks(dual)] == [f"layer{s}.{b}" for s in (2, 3) for b in range(3)]
    assert all(p == ["res_attn", "skip_attn"] for _, p in _gated_blocks(dual))
    branch = create_model("resnet18", pattern="branch")
    assert len(_gated_blocks(branch)) == 8
    dual50 = create_model("resnet50", pattern="dual")
    assert [n for n, _ in _gated_blocks(dual50)][0] == "layer3.0" and len(_gated_blocks(dual50)) == 9


def test_stage_and_block_placement():
    m = create_model("cifar_resnet20", pattern="post", stages=[1, 3])
    assert [n for n, _ in _gated_blocks(m)] == ["layer1.0", "layer1.1", "layer1.2",
                                                "layer3.0", "layer3.1", "layer3.2"]
    m = create_model("cifar_resnet20", pattern="dual", stages=lambda stage, block: block == 0)
    assert [n for n, _ in _gated_blocks(m)] == ["layer1.0", "layer2.0", "layer3.0"]
    with pytest.raises(ValueError, match=r"stages=\[0, 2\]: each stage must be an integer in 1..3"):
        create_model("cifar_resnet20", pattern="pre", stages=[0, 2])
    with pytest.raises(ValueError, match="1..4"):
        create_model("resnet18", pattern="pre", stages=[5])


def test_create_model_kwargs_reach_blocks():
    m = create_model("resnet50", num_classes=5, in_chans=1, pattern=4, skip_attn="se",
                     res_attn="coord", skip_modulation="gate", res_gamma_init=0.1,
                     res_gamma_max=0.5, gamma_shape="channel", norm_layer="groupnorm",
                     stages=[4])
    b = m.layer4[0]
    assert m.conv1.in_channels == 1 and m.fc.out_features == 5
    assert b.skip_attn.mode == "gate" and b.skip_attn.attn_type == "se"
    assert b.res_attn.gamma.shape == (1, 2048, 1, 1)
    assert abs(b.res_attn.effective_gamma().mean().item() - 0.1) < 1e-6
    assert isinstance(b.bn1, torch.nn.GroupNorm) and b.bn1.num_groups == 32


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(pattern="middle"), ValueError, "pattern='middle'"),
    (dict(num_classes=-1), ValueError, "num_classes=-1 must be an integer >= 0"),
    (dict(in_chans=0), ValueError, "in_chans=0 must be an integer >= 1"),
    (dict(attn="transformer", pattern="branch"), ValueError, "attn='transformer'"),
    (dict(norm_layer="foo"), ValueError, "norm_layer='foo'"),
    (dict(shortcut="C"), ValueError, "shortcut='C' is not allowed; allowed: A, B"),
    (dict(act_layer="nosuchact"), ValueError, "act_layer='nosuchact'"),
    (dict(gamma=0.1), TypeError, r"unexpected keyword arguments \['gamma'\]"),
])
def test_bad_model_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        create_model("cifar_resnet20", **kwargs)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="model name='resnet19' is not registered; allowed: cifar_resnet110"):
        create_model("resnet19")


def test_one_backward_gives_every_parameter_a_grad():
    m = create_model("cifar_resnet20", pattern="dual", skip_attn="se", res_attn="cbam")
    m(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []


def test_zero_init_residual():
    m = create_model("resnet50", zero_init_residual=True)
    assert all(b.bn3.weight.abs().sum().item() == 0 for b in m.blocks())


def test_resnet_options_are_the_constructors_own_keywords():
    import inspect
    from resattn.models.resnet import RESNET_OPTIONS
    params = set(inspect.signature(ResNet.__init__).parameters)
    assert set(RESNET_OPTIONS) == params - {"self", "block", "layers", "attn_kwargs"}
    assert len(RESNET_OPTIONS) == len(set(RESNET_OPTIONS)) == 18
