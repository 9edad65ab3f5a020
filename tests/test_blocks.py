import itertools

import pytest
import torch
import torch.nn as nn

from resattn import ATTN_NAMES, AttentionConfig, BasicBlock, Bottleneck
from resattn.layers.blocks import ShortcutA, resolve_pattern

GATED = ("branch", "post", "pre", "dual")


def near_identity_config(pattern, attn, gamma=0.0):
    return AttentionConfig(pattern=pattern, attn=attn, modulation="near_identity", gamma_init=gamma,
                           skip_attn=attn, res_attn=attn, skip_gamma_init=gamma,
                           res_gamma_init=gamma, skip_gamma_max=None)


def make_pair(block_cls, pattern, attn, in_planes=16, planes=16, stride=1, shortcut="B"):
    plain = block_cls(in_planes, planes, stride, AttentionConfig(pattern="none"), shortcut=shortcut)
    gated = block_cls(in_planes, planes, stride, near_identity_config(pattern, attn),
                      shortcut=shortcut)
    result = gated.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(".attn." in k or k.endswith("gamma") for k in result.missing_keys)
    return plain, gated


@pytest.mark.parametrize("pattern,attn", list(itertools.product(GATED, ATTN_NAMES)))
@pytest.mark.parametrize("block_cls,stride,shortcut", [(BasicBlock, 1, "B"), (BasicBlock, 2, "A"),
                                                       (Bottleneck, 2, "B")])
def test_near_identity_at_gamma_zero_equals_plain_block(pattern, attn, block_cls, stride, shortcut):
    in_planes = 16 if block_cls is BasicBlock and stride == 1 else 8
    plain, gated = make_pair(block_cls, pattern, attn, in_planes, 16, stride, shortcut)
    x = torch.randn(2, in_planes, 13, 7)
    for train in (True, False):
        plain.train(train)
        gated.train(train)
        diff = (plain(x.clone()) - gated(x.clone())).abs().max().item()
        assert diff <= 1e-6, (pattern, attn, train, diff)


@pytest.mark.parametrize("pattern,attn", list(itertools.product(GATED, ATTN_NAMES)))
def test_every_attention_in_every_pattern_on_odd_maps(pattern, attn):
    cfg = AttentionConfig(pattern=pattern, attn=attn, skip_attn=attn, res_attn=attn)
    block = BasicBlock(8, 16, 2, cfg)
    for shape in [(2, 8, 13, 7), (1, 8, 1, 9), (2, 8, 9, 1)]:
        x = torch.randn(shape)
        expected = (shape[0], 16, (shape[2] + 1) // 2, (shape[3] + 1) // 2)
        block.train()
        y = block(x)
        assert y.shape == expected and torch.isfinite(y).all()
        block.eval()
        with torch.no_grad():
            y_all = block(x)
            y_one = block(x[:1])
        assert y_all.shape == expected
        assert (y_all[:1] - y_one).abs().max().item() <= 1e-5


def test_batch_one_train_mode_error_names_the_size():
    block = BasicBlock(8, 8, 1, AttentionConfig(pattern="branch"))
    with pytest.raises(ValueError, match=r"size torch.Size\(\[1, 8, 1, 1\]\)"):
        block.train()(torch.randn(1, 8, 1, 1))
    assert block.eval()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)


@pytest.mark.parametrize("pattern", ("none",) + GATED)
@pytest.mark.parametrize("modulation", ["gate", "near_identity"])
def test_gradcheck_float64_inplace(pattern, modulation):
    cfg = AttentionConfig(pattern=pattern, attn="cbam", modulation=modulation, gamma_init=0.3,
                          skip_attn="se", res_attn="cbam", skip_modulation=modulation,
                          res_modulation=modulation, skip_gamma_init=0.2, res_gamma_init=0.5)
    block = BasicBlock(8, 8, 1, cfg).double()
    assert block.relu.inplace and block.act1.inplace
    x = torch.randn(1, 8, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-5)
    block.zero_grad()
    block(x).square().sum().backward()
    missing = [n for n, p in block.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_pattern_formulas_read_from_modules():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 6, 6)
    for pattern in GATED:
        cfg = AttentionConfig(pattern=pattern, attn="se", skip_attn="se", res_attn="se",
                              skip_modulation="gate", res_modulation="gate")
        b = BasicBlock(8, 8, 1, cfg).eval()
        with torch.no_grad():
            r = b.residual(x)
            expected = {
                "branch": torch.relu(x + b.attn(r)),
                "post": torch.relu(b.attn(x + r)),
                "pre": torch.relu(x + b.residual(b.attn(x))),
                "dual": torch.relu(b.skip_attn(x) + b.res_attn(r)),
            }[pattern]
            assert (b(x) - expected).abs().max().item() <= 1e-6


def test_pattern_numbers_and_errors():
    assert [resolve_pattern(i) for i in range(5)] == ["none", "branch", "post", "pre", "dual"]
    assert resolve_pattern("DUAL") == "dual" and resolve_pattern("4") == "dual"
    with pytest.raises(ValueError, match="pattern='middle' is not allowed; allowed: 0=none"):
        AttentionConfig(pattern="middle")
    with pytest.raises(ValueError, match="pattern=7"):
        AttentionConfig(pattern=7)


def test_dual_defaults_follow_stability_rules():
    b = BasicBlock(16, 16, 1, AttentionConfig(pattern="dual"))
    assert b.skip_attn.mode == "near_identity" and b.res_attn.mode == "near_identity"
    assert b.skip_attn.attn_type == "eca" and b.res_attn.attn_type == "cbam"
    assert b.skip_attn.effective_gamma().item() == 0.0 and b.res_attn.effective_gamma().item() == 0.0
    assert b.skip_attn.gamma_max == 0.25 and b.res_attn.gamma_max is None
    assert b.attn.is_identity
    # pattern 1-3 default: SE with gate (SE-ResNet's block)
    b1 = BasicBlock(16, 16, 1, AttentionConfig(pattern="branch"))
    assert b1.attn.mode == "gate" and b1.attn.attn_type == "se" and b1.attn.gamma is None


def test_dual_per_path_kwargs_and_errors():
    cfg = AttentionConfig(pattern="dual", skip_attn="eca", res_attn="se",
                          res_attn_kwargs={"rd_ratio": 0.5}, skip_attn_kwargs={"kernel_size": 5})
    b = BasicBlock(16, 16, 1, cfg)
    assert b.res_attn.attn.fc1.out_channels == 8
    assert b.skip_attn.attn.conv.kernel_size == (5,)
    with pytest.raises(ValueError, match="skip_gamma_max=-1"):
        AttentionConfig(pattern="dual", skip_gamma_max=-1)
    with pytest.raises(ValueError, match="res_modulation='soft'"):
        AttentionConfig(pattern="dual", res_modulation="soft")
    with pytest.raises(ValueError, match="res_attn='xyz'"):
        AttentionConfig(pattern="dual", res_attn="xyz")


@pytest.mark.parametrize("key, value, match", [
    ("skip_gamma_max", "big", r"skip_gamma_max='big' must be a finite number > 0, or None"),
    ("res_gamma_max", "0.5", r"res_gamma_max='0.5' must be a finite number > 0, or None"),
    ("res_gamma_max", True, r"res_gamma_max=True must be a finite number > 0, or None"),
    ("skip_gamma_init", "0.1", r"skip_gamma_init='0.1' must be a finite number"),
    ("gamma_init", None, r"^gamma_init=None must be a finite number"),
    ("gamma_max", [1.0], r"^gamma_max=\[1.0\] must be a finite number > 0"),
])
def test_gamma_options_of_the_wrong_type_name_the_argument(key, value, match):
    # before: "could not convert string to float: 'big'", TypeError from abs('0.1'), True taken as 1
    with pytest.raises(ValueError, match=match):
        AttentionConfig(pattern="dual", **{key: value})


def test_shortcut_a_is_parameter_free_zero_padding():
    s = ShortcutA(16, 32, 2)
    x = torch.randn(2, 16, 9, 7)
    y = s(x)
    assert y.shape == (2, 32, 5, 4) and list(s.parameters()) == []
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.equal(y[:, 16:], torch.zeros(2, 16, 5, 4))


def test_callable_attention_in_block():
    cfg = AttentionConfig(pattern="branch", attn=lambda c: nn.Sequential(nn.Conv2d(c, c, 1), nn.Sigmoid()))
    b = BasicBlock(8, 8, 1, cfg)
    assert b(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)
    assert sum(p.numel() for p in b.attn.parameters()) == 8 * 8 + 8


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm", "layernorm"])
def test_norm_layers(norm):
    b = BasicBlock(16, 16, 1, AttentionConfig(pattern="dual"), norm_layer=norm)
    expected = {"batchnorm": nn.BatchNorm2d, "groupnorm": nn.GroupNorm, "layernorm": nn.LayerNorm}[norm]
    assert isinstance(b.bn1, expected)
    # GroupNorm/LayerNorm in F: batch 1 trains (the attention modules keep their own norms)
    y = b.train()(torch.randn(1 if norm != "batchnorm" else 2, 16, 3, 3))
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="norm_layer='instnorm' is not allowed; allowed: batchnorm, groupnorm, layernorm"):
        BasicBlock(16, 16, 1, norm_layer="instnorm")


def test_path_config_is_what_each_path_reads():
    from resattn.layers.blocks import PATH_NAMES, PathConfig
    cfg = AttentionConfig(pattern="dual", skip_gamma_max=0.5, res_gamma_init=0.1,
                          res_modulation="gate", attn_kwargs={"rd_ratio": 0.25})
    assert PATH_NAMES == ("attn", "skip", "res")
    assert list(cfg.paths()) == ["skip", "res"]
    assert cfg.path("skip") == PathConfig("skip", "eca", "near_identity", 0.0, 0.5, "scalar",
                                          {"rd_ratio": 0.25})
    assert cfg.path("res").function_changes() == ["res_modulation='gate'"]
    assert cfg.path("skip").function_changes() == []
    assert AttentionConfig(pattern="post", gamma_init=0.2, modulation="near_identity"
                           ).path("attn").function_changes() == ["gamma_init=0.2"]
    assert list(AttentionConfig(pattern="none").paths()) == []
    assert list(AttentionConfig(pattern="pre").paths()) == ["attn"]
    with pytest.raises(ValueError, match="path='mid' is not allowed; allowed: attn, skip, res"):
        cfg.path("mid")
    # the prefixed keyword names are what errors name
    with pytest.raises(ValueError, match=r"\|res_gamma_init\|=0.5 must be < res_gamma_max=0.5"):
        AttentionConfig(pattern="dual", res_gamma_init=0.5, res_gamma_max=0.5)
    # a path's module is built from its PathConfig: same tree and values as the block's own
    torch.manual_seed(0)
    built = cfg.path("skip").build(16)
    torch.manual_seed(0)
    own = cfg.modulation_for("skip", 16)
    assert built.arg == own.arg == "skip_attn" and built.gamma_max == 0.5
    assert built.state_dict().keys() == own.state_dict().keys()
    assert all(torch.equal(built.state_dict()[k], v) for k, v in own.state_dict().items())
