import pytest
import torch
import torch.nn as nn

from resattn import ATTN_NAMES, Modulation, create_attention
from resattn.layers.attention import validate_attn


#: timm attention types resattn leaves out, and why (each one not a z -> z * m(z)-like gate).
NOT_GATES = {
    "sk": "selective-kernel convolution: replaces a conv, changes channels",
    "splat": "split-attention convolution (ResNeSt): replaces a conv",
    "lambda": "lambda layer: self-attention replacing a conv",
    "bottleneck": "bottleneck self-attention: needs the feature size",
    "halo": "halo self-attention: needs block and halo sizes",
    "nl": "non-local block: adds its own residual",
    "bat": "BAT non-local block: adds its own residual",
}


def test_supported_names_are_the_shape_keeping_timm_types():
    """ATTN_NAMES against timm's own factory: every name timm's create_attn knows is either
    supported (and keeps the shape through timm's module) or left out with a reason."""
    import importlib
    import re

    timm_attn = importlib.import_module("timm.layers.create_attn")  # the module, not the function
    source = open(timm_attn.__file__).read()
    timm_names = set(re.findall(r"attn_type == '(\w+)'", source))
    assert set(ATTN_NAMES) <= timm_names, set(ATTN_NAMES) - timm_names
    unexplained = timm_names - set(ATTN_NAMES) - set(NOT_GATES)
    assert not unexplained, f"timm has attention types resattn neither supports nor excludes: {unexplained}"
    for name in ATTN_NAMES:
        module = timm_attn.get_attn(name)
        assert module is not None, name
        built = create_attention(name, 16)
        assert isinstance(built, module if isinstance(module, type) else nn.Module), name


@pytest.mark.parametrize("name", ATTN_NAMES)
def test_every_type_keeps_shape(name):
    m = create_attention(name, 16).eval()
    for shape in [(2, 16, 13, 7), (1, 16, 1, 9), (2, 16, 9, 1)]:
        x = torch.randn(shape)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match=r"attn='foo'.*allowed: se, ese, eca"):
        create_attention("foo", 8)


def test_none_and_callable():
    assert create_attention(None, 8) is None
    m = create_attention(lambda c: nn.Conv2d(c, c, 1), 8)
    assert isinstance(m, nn.Conv2d) and m.in_channels == 8
    with pytest.raises(ValueError, match="must return an nn.Module"):
        create_attention(lambda c: 3, 8)
    with pytest.raises(TypeError, match="attn must be"):
        create_attention(3.5, 8)


@pytest.mark.parametrize("attn,kwargs,match", [
    ("se", {"rd_ratio": 0}, "rd_ratio=0 must be > 0"),
    ("se", {"rd_ratio": -0.5}, "rd_ratio=-0.5 must be > 0"),
    ("se", {"rd_channels": 0}, "rd_channels=0 would give a hidden width < 1"),
    ("cbam", {"rd_divisor": 0}, "rd_divisor=0 must be >= 1"),
    ("cbam", {"spatial_kernel_size": 4}, "spatial_kernel_size=4 must be a positive odd"),
    ("eca", {"kernel_size": 2}, "kernel_size=2 must be a positive odd"),
    ("eca", {"rd_ratio": 0.25, "foo": 1}, r"does not take \['foo'\]"),
    ("ese", {"rd_ratio": 0.25}, r"'ese' does not take \['rd_ratio'\]"),
])
def test_bad_arguments_fail_at_construction(attn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_attention(attn, 16, **kwargs)


@pytest.mark.parametrize("channels", [0, -3])
def test_bad_channels(channels):
    with pytest.raises(ValueError, match=f"channels={channels} must be an integer >= 1"):
        create_attention("se", channels)


def test_validate_names_argument():
    with pytest.raises(ValueError, match="skip_attn='nope'"):
        validate_attn("nope", arg="skip_attn")


def test_near_identity_is_identity_at_gamma_zero_and_gate_is_attention():
    x = torch.randn(2, 16, 5, 6)
    gate = Modulation("se", 16, "gate")
    near = Modulation("se", 16, "near_identity", gamma_init=0.0)
    near.attn.load_state_dict(gate.attn.state_dict())
    assert torch.equal(near(x), x)
    with torch.no_grad():
        near.gamma.fill_(0.5)
    expected = x + 0.5 * gate(x)
    assert (near(x) - expected).abs().max().item() <= 1e-6
    # z * (1 + gamma * m(z)) form: SE's mask is in (0, 1)
    ratio = near(x) / x
    assert ratio.min().item() >= 1.0 - 1e-5 and ratio.max().item() <= 1.5 + 1e-5


def test_bounded_gamma():
    m = Modulation("eca", 8, "near_identity", gamma_init=0.1, gamma_max=0.25, gamma_shape="channel")
    assert m.gamma.shape == (1, 8, 1, 1)
    assert (m.effective_gamma() - 0.1).abs().max().item() < 1e-7
    with torch.no_grad():
        m.gamma.fill_(100.0)
    assert m.effective_gamma().max().item() <= 0.25
    x = torch.rand(2, 8, 4, 4) + 0.1
    gain = m(x) / x
    assert gain.min().item() >= 1 - 0.25 - 1e-6 and gain.max().item() <= 1 + 0.25 + 1e-6


@pytest.mark.parametrize("kwargs,match", [
    (dict(modulation="soft"), "modulation='soft' is not allowed; allowed: gate, near_identity"),
    (dict(modulation="near_identity", gamma_max=0.0), "gamma_max=0.0 must be a finite number > 0"),
    (dict(modulation="near_identity", gamma_init=0.3, gamma_max=0.25), r"\|gamma_init\|=0.3 must be <"),
    (dict(modulation="near_identity", gamma_shape="pixel"), "gamma_shape='pixel' is not allowed"),
    (dict(modulation="near_identity", gamma_init=float("nan")), "gamma_init=nan must be a finite"),
])
def test_bad_modulation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Modulation("se", 8, **kwargs)


def test_identity_path_has_no_parameters():
    m = Modulation(None, 8, "near_identity")
    assert m.is_identity and len(list(m.parameters())) == 0
    x = torch.randn(1, 8, 2, 2)
    assert m(x) is x


@pytest.mark.parametrize("attn,kwargs,match", [
    ("ge", {"extent": 3}, "extent=3"),
    ("ge", {"extent": -2}, "extent=-2"),
    ("se", {"rd_ratio": float("inf")}, "rd_ratio=inf"),
    ("se", {"rd_ratio": float("nan")}, "rd_ratio=nan"),
    ("cbam", {"spatial_kernel_size": True}, "spatial_kernel_size=True"),
    ("eca", {"kernel_size": False}, "kernel_size=False"),
])
def test_bad_attention_arguments_name_the_argument(attn, kwargs, match):
    from resattn.layers.attention import create_attention
    with pytest.raises(ValueError, match=match):
        create_attention(attn, 16, **kwargs)


def test_batch_one_on_a_1x1_map_names_the_input_not_cbams_inner_size():
    from resattn import AttentionConfig, BasicBlock
    block = BasicBlock(8, 8, 1, AttentionConfig(pattern="branch", attn="cbam"),
                       norm_layer="groupnorm").train()
    with pytest.raises(ValueError, match=r"attn='cbam'.*\(1, 8, 1, 1\)"):
        block(torch.randn(1, 8, 1, 1))
    assert block(torch.randn(2, 8, 1, 1)).shape == (2, 8, 1, 1)
    assert block.eval()(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)
