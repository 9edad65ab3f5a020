"""Retrofit of torchvision / timm / resattn ResNets: function preservation, kept tensors, reports."""
import copy
import itertools
import warnings

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import resattn
from resattn import ATTN_NAMES, create_model
from resattn.tools.convert import (ConversionReport, FunctionChangeWarning, TimmBasicBlock,
                             TimmBottleneck, _default_input, convert, find_residual_blocks,
                             parity_check)

PATTERNS = ("branch", "post", "pre", "dual")


def build(source, arch, **kwargs):
    torch.manual_seed(0)
    if source == "torchvision":
        model = getattr(torchvision.models, arch)(**kwargs)
    elif source == "timm":
        model = timm.create_model(arch, pretrained=False, **kwargs)
    else:
        model = create_model(arch, **kwargs)
    return pretend_trained(model)


@torch.no_grad()
def pretend_trained(model, size=64):
    """Random norm affines (timm zero-inits the last norm of F) and running statistics from one
    training-mode pass, so that every branch carries signal as in a trained network."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) * 0.5 + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass sets the statistics
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    model.train()(torch.randn(4, in_chans, size, size, generator=g))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def attn_options(pattern, attn):
    return dict(attn=attn, skip_attn=attn, res_attn=attn) if pattern == "dual" else dict(attn=attn)


# ----------------------------------------------------------------------------------------------
# parity at 224 (8, 3, 224, 224), eval mode
# ----------------------------------------------------------------------------------------------

X224 = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(123))
_REFERENCES = {}


def reference(source, arch):
    """A pretend-trained model and its logits on X224, built once per session."""
    if (source, arch) not in _REFERENCES:
        model = build(source, arch)
        with torch.no_grad():
            logits = model(X224)
        _REFERENCES[(source, arch)] = (model, logits)
    return _REFERENCES[(source, arch)]


def check_parity_224(source, arch, pattern, attn):
    ref, ref_logits = reference(source, arch)
    model = copy.deepcopy(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default conversion must not warn
        report = convert(model, pattern, **attn_options(pattern, attn))
    assert report.blocks_converted and report.params_added > 0
    with torch.no_grad():
        logits = model.eval()(X224)
    diff = (logits - ref_logits).abs().max().item()
    top1 = (logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
    assert diff <= 1e-5, (source, arch, pattern, attn, diff)
    assert top1 == 1.0
    assert ref_logits.std().item() > 0.1  # the check is not on a degenerate network


MATRIX_224 = list(itertools.product(("torchvision", "timm"), ("resnet18", "resnet50"), PATTERNS,
                                    ("se", "cbam")))


@pytest.mark.parametrize("source,arch,pattern,attn", MATRIX_224)
def test_parity_224(source, arch, pattern, attn):
    check_parity_224(source, arch, pattern, attn)


# ----------------------------------------------------------------------------------------------
# every attention type, smaller inputs
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_refs():
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    refs = {}
    for source in ("torchvision", "timm"):
        model = build(source, "resnet18")
        with torch.no_grad():
            refs[source] = (model, model(x))
    return x, refs


def _check_small(small_refs, source, pattern, attn):
    x, refs = small_refs
    ref, ref_logits = refs[source]
    model = copy.deepcopy(ref)
    convert(model, pattern, stages=[3, 4], **attn_options(pattern, attn))
    result = parity_check(ref, model, x)
    with torch.no_grad():
        assert torch.equal(ref(x), ref_logits)
    assert result["max_abs_diff"] <= 1e-5 and result["top1_agreement"] == 1.0 and result["passed"]


@pytest.mark.parametrize("source,pattern,attn", list(itertools.product(
    ("torchvision", "timm"), PATTERNS, ATTN_NAMES)))
def test_every_attention_type_every_pattern(small_refs, source, pattern, attn):
    _check_small(small_refs, source, pattern, attn)


# ----------------------------------------------------------------------------------------------
# what is kept, what is new
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source,arch", [("torchvision", "resnet50"), ("timm", "resnet18"),
                                         ("resattn", "cifar_resnet20")])
def test_same_tensors_same_keys_and_counted_new_parameters(source, arch):
    torch.manual_seed(0)
    model = (getattr(torchvision.models, arch)() if source == "torchvision" else
             timm.create_model(arch) if source == "timm" else create_model(arch))
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    ptrs = {k: v.data_ptr() for k, v in itertools.chain(params.items(), buffers.items())}
    keys = list(model.state_dict())
    n_before = sum(p.numel() for p in model.parameters())

    report = convert(model, "dual", stages=[2, 3], skip_attn="se", res_attn="coord")

    after = dict(model.named_parameters())
    after_buffers = dict(model.named_buffers())
    for k, p in params.items():
        assert after[k] is p and after[k].data_ptr() == ptrs[k]
    for k, b in buffers.items():
        assert after_buffers[k] is b and after_buffers[k].data_ptr() == ptrs[k]
    state_keys = list(model.state_dict())
    assert [k for k in state_keys if k in set(keys)] == keys  # same keys, same order
    assert sorted(set(state_keys) - set(keys)) == sorted(report.new_keys)
    assert all(".skip_attn." in k or ".res_attn." in k for k in report.new_keys)
    new_params = {k: p for k, p in after.items() if k not in params}
    assert report.params_added == sum(p.numel() for p in new_params.values()) > 0
    assert report.params_before == n_before
    assert report.tensors_kept == len(params) + len(buffers)
    names = [f"layer{s}.{b}" for s in (2, 3) for b in range(len(getattr(model, f"layer{s}")))]
    assert report.blocks_converted == names
    assert report.blocks_total == len(find_residual_blocks(model))
    assert all(isinstance(m, resattn.ResidualBlock) for _, m, *_ in find_residual_blocks(model))


def test_new_parameters_follow_block_dtype_and_mode():
    model = build("torchvision", "resnet18").double().train()
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    report = convert(model, "branch", attn="cbam")
    assert report.params_added > 0
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert model(x).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_new_parameters_follow_block_device():
    model = torchvision.models.resnet18().cuda().eval()
    ref = copy.deepcopy(model)
    convert(model, "dual", skip_attn="eca", res_attn="cbam")
    assert all(p.is_cuda for p in model.parameters())
    x = torch.randn(4, 3, 224, 224, device="cuda")
    assert parity_check(ref, model, x)["max_abs_diff"] <= 1e-5


def test_train_mode_output_is_preserved_too():
    ref = build("torchvision", "resnet18")
    model = copy.deepcopy(ref)
    convert(model, "post", attn="se")
    x = torch.randn(4, 3, 48, 48)
    ref.train()
    model.train()
    assert (ref(x) - model(x)).abs().max().item() <= 1e-5
    # and both updated the same running statistics
    assert torch.equal(ref.layer1[0].bn1.running_mean, model.layer1[0].bn1.running_mean)
    model(x).sum().backward()
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 8 and all(g.grad is not None for g in gammas)


def test_converted_blocks_types_and_placement_default():
    tv = torchvision.models.resnet50()
    convert(tv, "dual")
    assert type(tv.layer1[0]) is resattn.Bottleneck and tv.layer1[0].pattern == "none"
    assert [b.name for b in find_residual_blocks(tv) if b.module.pattern == "dual"][0] == "layer3.0"
    tm = timm.create_model("resnet18")
    convert(tm, "pre", stages=lambda stage, block: block == 1)
    assert type(tm.layer1[0]) is TimmBasicBlock
    assert [b.name for b in find_residual_blocks(tm) if b.module.pattern == "pre"] == [
        "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert tm.resattn_convert_kwargs["pattern"] == "pre"


@pytest.mark.parametrize("block,converted", [(timm.models.resnet.BasicBlock, TimmBasicBlock),
                                             (timm.models.resnet.Bottleneck, TimmBottleneck)])
def test_timm_extras_are_kept_working(block, converted):
    """timm's own SE (as seresnet), anti-aliasing (BlurPool) and DropBlock stay in F; its DropPath
    becomes the block's drop_path (on the residual term, as in timm and resattn's own blocks)."""
    torch.manual_seed(0)
    ref = pretend_trained(timm.models.resnet.ResNet(
        block, [1, 1, 1, 1], num_classes=10, block_args={"attn_layer": "se"},
        aa_layer=timm.layers.BlurPool2d,
        drop_path_rate=0.1, drop_block_rate=0.1))
    model = copy.deepcopy(ref)
    se_keys = [k for k in ref.state_dict() if ".se." in k]
    report = convert(model, "dual", skip_attn="eca", res_attn="se")
    blk = model.layer4[0]
    assert type(blk) is converted and blk.se is not None and blk.drop_path is not None
    assert type(blk.aa).__name__ == "BlurPool2d" and type(blk.drop_block).__name__ == "DropBlock2d"
    assert blk.branch_output() is blk.se and type(blk.drop_path).__name__ == "DropPath"
    assert blk.drop_path.drop_prob == pytest.approx(ref.layer4[0].drop_path.drop_prob)
    assert se_keys and all(k in model.state_dict() for k in se_keys)
    assert report.tensors_kept == len(list(ref.parameters())) + len(list(ref.buffers()))
    x = torch.randn(2, 3, 64, 64)
    assert parity_check(ref, model, x)["max_abs_diff"] <= 1e-5
    model.train()(x).sum().backward()  # stochastic parts run in training


def test_own_plain_model_is_converted_in_place():
    ref = build("resattn", "cifar_resnet20", in_chans=1)
    model = copy.deepcopy(ref)
    blocks = list(model.blocks())
    report = convert(model, 4)
    assert list(model.blocks()) == blocks  # same block objects
    assert report.blocks_converted == [f"layer{s}.{b}" for s in (2, 3) for b in range(3)]
    assert model.layer3[2].skip_attn.attn_type == "eca" and model.layer3[2].res_attn.gamma_max is None
    assert parity_check(ref, model, torch.randn(8, 1, 28, 28))["max_abs_diff"] <= 1e-6


def test_pattern_none_turns_foreign_blocks_into_plain_resattn_blocks():
    ref = build("torchvision", "resnet18")
    model = copy.deepcopy(ref)
    report = convert(model, "none")
    assert report.params_added == 0 and report.blocks_converted == [] and report.blocks_total == 8
    assert all(type(b.module) is resattn.BasicBlock for b in find_residual_blocks(model))
    assert parity_check(ref, model, torch.randn(2, 3, 32, 32))["max_abs_diff"] == 0.0


# ----------------------------------------------------------------------------------------------
# warnings, reports, errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(pattern="branch", modulation="gate"),
                                     dict(pattern="post", gamma_init=0.1),
                                     dict(pattern="dual", skip_modulation="gate"),
                                     dict(pattern="dual", res_gamma_init=-0.2)])
def test_function_changing_options_warn(options):
    ref = build("resattn", "cifar_resnet20")
    model = copy.deepcopy(ref)
    with pytest.warns(UserWarning, match="no longer computes the pretrained function") as rec:
        report = convert(model, **options)
    assert rec[0].category is FunctionChangeWarning
    assert len(report.warnings) == 1 and "no longer computes" in report.warnings[0]
    result = parity_check(ref, model, torch.randn(4, 3, 32, 32))
    assert result["max_abs_diff"] > 1e-4 and not result["passed"]


def test_unused_paths_do_not_warn():
    model = create_model("cifar_resnet20")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert(model, "branch", skip_modulation="gate", res_gamma_init=0.3)


def test_report_fields_and_text():
    model = torchvision.models.resnet18()
    report = convert(model, "branch", attn="se")
    assert isinstance(report, ConversionReport)
    assert report.pattern == "branch" and report.blocks_total == 8 and len(report.blocks_converted) == 8
    assert report.params_before == 11_689_512
    assert report.params_added == 11_779_624 - 11_689_512 + 8  # SE-ResNet-18 + 8 gammas
    assert len(report.new_keys) == 8 * 5  # fc1.weight, fc1.bias, fc2.weight, fc2.bias, gamma
    assert report.warnings == []
    text = str(report)
    assert "converted 8/8 residual blocks to pattern 'branch'" in text
    assert "11,689,512 kept + 90,120 new" in text


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"model=Sequential has no residual block.*"
                                         r"torchvision\.models\.resnet\.BasicBlock.*"
                                         r"timm\.models\.resnet\.Bottleneck"):
        convert(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), "dual")
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        convert("resnet18", "dual")
    with pytest.raises(ValueError, match=r"already has attention \(pattern='dual'\)"):
        convert(create_model("cifar_resnet20", pattern="dual"), "dual")
    twice = torchvision.models.resnet18()
    convert(twice, "branch")
    with pytest.raises(ValueError, match="layer1.0' already has attention"):
        convert(twice, "post")
    with pytest.raises(ValueError, match="attn='xyz' is not a supported attention type"):
        convert(torchvision.models.resnet18(), "branch", attn="xyz")
    with pytest.raises(ValueError, match="pattern='middle' is not allowed"):
        convert(torchvision.models.resnet18(), "middle")
    with pytest.raises(ValueError, match="skip_gamma_max=-1"):
        convert(torchvision.models.resnet18(), "dual", skip_gamma_max=-1)
    with pytest.raises(ValueError, match=r"stages=\[5\]: each stage must be an integer in 1..4"):
        convert(torchvision.models.resnet18(), "dual", stages=[5])
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['gamma'\]"):
        convert(torchvision.models.resnet18(), "dual", gamma=0.1)


def test_failed_conversion_leaves_the_model_untouched():
    model = torchvision.models.resnet18()
    before = copy.deepcopy(model.state_dict())

    def broken(channels):
        if channels == 512:
            raise RuntimeError("no attention for 512 channels")
        return nn.Identity()

    with pytest.raises(RuntimeError, match="512 channels"):
        convert(model, "branch", attn=broken)
    assert type(model.layer1[0]) is torchvision.models.resnet.BasicBlock
    assert list(model.state_dict()) == list(before)
    assert not hasattr(model, "resattn_convert_kwargs")


def test_parity_check_default_input_and_modes():
    ref = create_model("cifar_resnet20", in_chans=1).train()
    model = copy.deepcopy(ref)
    convert(model, "dual")
    assert _default_input(model).shape == (8, 1, 224, 224)
    result = parity_check(ref, model, torch.randn(4, 1, 28, 28))
    assert result == {"max_abs_diff": 0.0, "top1_agreement": 1.0, "passed": True}
    assert ref.training and model.training
