"""resattn models as timm models: registry, pretrained_cfg, features_only, classifier API, grad
checkpointing, stochastic depth, init_weights; and timm's methods on a converted timm ResNet."""
import copy

import pytest
import timm
import timm.optim
import torch
from timm.models._features import FeatureGetterNet
from timm.models._manipulate import group_parameters

from resattn import convert, create_model
from resattn.models._timm import VARIANTS
from resattn.tools.weights import save_checkpoint
from conftest import n_params

ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "cifar_resnet20",
         "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "cifar_resnet110"]


def test_registered_names_and_counts():
    names = timm.list_models("resattn_*")
    assert sorted(names) == sorted([f"resattn_{a}" for a in ARCHS] + list(VARIANTS))
    assert len(names) == 19
    meta = dict(device="meta")  # counts only: no memory, no init time
    assert n_params(timm.create_model("resattn_resnet18", **meta)) == 11_689_512
    assert n_params(timm.create_model("resattn_resnet50", **meta)) == 25_557_032
    assert n_params(timm.create_model("resattn_resnet50_se", **meta)) == n_params(
        timm.create_model("seresnet50", **meta)) == 28_088_024
    assert n_params(timm.create_model("resattn_cifar_resnet20", **meta)) == 269_722
    assert n_params(timm.create_model("resattn_cifar_resnet56_se", **meta)) == n_params(
        create_model("cifar_resnet56", pattern="branch", attn="se", device="meta"))


def test_pretrained_cfgs():
    m = timm.create_model("resattn_cifar_resnet20_dual", device="meta")
    cfg = m.pretrained_cfg
    assert m.default_cfg is cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["pool_size"] == (8, 8)
    assert cfg["mean"] == (0.4914, 0.4822, 0.4465) and cfg["std"] == (0.2470, 0.2435, 0.2616)
    assert cfg["num_classes"] == 10 and cfg["crop_pct"] == 1.0
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "fc"
    assert cfg["architecture"] == "resattn_cifar_resnet20_dual" and not cfg.get("url")
    m = timm.create_model("resattn_resnet50_dual", device="meta")
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["num_classes"] == 1000
    # resattn's own registry builds through the same timm builder
    assert create_model("cifar_resnet20", device="meta").pretrained_cfg["input_size"] == (3, 32, 32)
    data = timm.data.resolve_data_config(model=m)
    assert data["input_size"] == (3, 224, 224) and data["crop_pct"] == 0.875


def test_variants_have_their_configuration():
    se = timm.create_model("resattn_resnet50_se", device="meta")
    assert {b.pattern for b in se.blocks()} == {"branch"} and se.layer1[0].attn.attn_type == "se"
    dual = timm.create_model("resattn_cifar_resnet20_dual", device="meta")
    assert [b.pattern for b in dual.blocks()] == ["none"] * 3 + ["dual"] * 6
    # create_model keywords override the variant's
    m = timm.create_model("resattn_cifar_resnet20_dual", stages=[3], num_classes=4, in_chans=1,
                          device="meta")
    assert [b.pattern for b in m.blocks()] == ["none"] * 6 + ["dual"] * 3
    assert m.fc.out_features == 4 and m.conv1.in_channels == 1


def test_pretrained_true_says_no_weights_and_a_local_file_loads(tmp_path):
    with pytest.raises(RuntimeError, match="no pretrained weights are hosted for 'resattn_resnet50'"
                                           r".*pretrained_cfg_overlay=dict\(file=.*load_pretrained"):
        timm.create_model("resattn_resnet50", pretrained=True)
    src = timm.create_model("resattn_cifar_resnet20_dual", res_gamma_init=0.2)
    path = save_checkpoint(src, tmp_path / "c.pt", arch="cifar_resnet20",
                           model_kwargs=dict(pattern="dual", res_gamma_init=0.2))
    loaded = timm.create_model("resattn_cifar_resnet20_dual", pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path)))
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_device_dtype_and_unknown_keyword():
    m = timm.create_model("resattn_cifar_resnet20_se", dtype=torch.float64)
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    m = timm.create_model("resattn_resnet18_dual", device="meta")
    assert {t.device.type for t in [*m.parameters(), *m.buffers()]} == {"meta"}
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['not_an_arg'\]"):
        timm.create_model("resattn_resnet18", not_an_arg=1)
    with pytest.raises(ValueError, match="global_pool='mean' is not allowed"):
        timm.create_model("resattn_resnet18", global_pool="mean")
    with pytest.raises(ValueError, match=r"drop_path_rate=1\.5 must be in \[0, 1\)"):
        timm.create_model("resattn_resnet18", drop_path_rate=1.5)


def test_features_only_channels_reductions_and_shapes():
    f = timm.create_model("resattn_cifar_resnet20_dual", features_only=True).eval()
    assert f.feature_info.channels() == [16, 16, 32, 64]
    assert f.feature_info.reduction() == [1, 1, 2, 4]
    with torch.no_grad():
        outs = f(torch.randn(2, 3, 32, 40))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 40), (2, 16, 32, 40), (2, 32, 16, 20),
                                              (2, 64, 8, 10)]
    f = timm.create_model("resattn_resnet18_se", features_only=True, out_indices=(1, 4)).eval()
    assert f.feature_info.channels() == [64, 512] and f.feature_info.reduction() == [4, 32]
    with torch.no_grad():
        outs = f(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 24), (1, 512, 2, 3)]
    g = timm.create_model("resattn_resnet50", features_only=True, feature_cls="getter",
                          device="meta")
    assert g.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert timm.create_model("resattn_cifar_resnet20", features_only=True, out_indices=(0, -1),
                             device="meta").feature_info.channels() == [16, 64]
    for name, bad, match in [("resattn_cifar_resnet20", (1, 2, 3, 4), r"4 is not a feature level .* 0\.\.3 \(or -4\.\.-1\)"),
                             ("resattn_resnet18", (5,), r"5 is not a feature level .* 0\.\.4 \(or -5\.\.-1\)"),
                             ("resattn_resnet18", (-6,), r"-6 is not a feature level")]:
        with pytest.raises(ValueError, match=match):  # before: a bare IndexError from timm
            timm.create_model(name, features_only=True, out_indices=bad)


@pytest.mark.parametrize("rate", ["0.1", True])
def test_drop_path_rate_of_the_wrong_type_names_it(rate):
    with pytest.raises(ValueError, match=rf"drop_path_rate={rate!r} must be in \[0, 1\)"):
        timm.create_model("resattn_cifar_resnet20", drop_path_rate=rate, device="meta")


def test_forward_intermediates_prune_and_head():
    torch.manual_seed(0)
    m = timm.create_model("resattn_cifar_resnet20_se", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, taps = m.forward_intermediates(x)
        assert (final - m.forward_features(x)).abs().max().item() == 0.0
        assert [tuple(t.shape) for t in taps] == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16),
                                                 (2, 64, 8, 8)]
        pre = m.forward_head(final, pre_logits=True)
        assert pre.shape == (2, 64) and (pre - final.mean((2, 3))).abs().max().item() < 1e-6
        assert (m(x) - m.fc(pre)).abs().max().item() < 1e-6
        assert m.get_classifier() is m.fc and m.get_classifier(name_only=True) == "fc"
        m.reset_classifier(5, "catavgmax")
        assert m.head_hidden_size == 128 and m(x).shape == (2, 5) and m.fc.in_features == 128
        m.reset_classifier(0, "max")
        assert (m(x) - final.amax((2, 3))).abs().max().item() == 0.0
        m.reset_classifier(0, "")
        assert m(x).shape == (2, 64, 8, 8)
        pruned = copy.deepcopy(m)
        assert pruned.prune_intermediate_layers([2]) == [2]
        assert pruned.num_features == 32 and not len(pruned.layer3)
        assert (pruned.forward_features(x) - taps[2]).abs().max().item() == 0.0


def test_grad_checkpointing_same_loss_and_grads():
    x = torch.randn(4, 3, 32, 32)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = timm.create_model("resattn_cifar_resnet20_dual", drop_path_rate=0.2,
                              res_gamma_init=0.3, skip_gamma_init=0.1).train()
        m.set_grad_checkpointing(ckpt)
        assert m.grad_checkpointing is ckpt
        torch.manual_seed(1)  # the same drop-path masks in both runs
        loss = m(x).logsumexp(1).mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (l0, g0), (l1, g1) = results
    assert (l0 - l1).abs().item() == 0.0 and g0.keys() == g1.keys()
    assert max((g0[k] - g1[k]).abs().max().item() for k in g0) <= 1e-6


def test_group_matcher_and_no_weight_decay_with_timm_optimizer():
    m = timm.create_model("resattn_cifar_resnet20_dual", gamma_shape="channel")
    fine = group_parameters(m, m.group_matcher(coarse=False), reverse=True)
    coarse = group_parameters(m, m.group_matcher(coarse=True), reverse=True)
    assert len(set(fine.values())) == 1 + 9 + 1 and len(set(coarse.values())) == 1 + 3 + 1
    nwd = m.no_weight_decay()
    assert len(nwd) == 12 and all(n.endswith("_attn.gamma") for n in nwd)
    gammas = {id(p) for n, p in m.named_parameters() if n in nwd}
    assert all(p.ndim == 4 for n, p in m.named_parameters() if n in nwd)  # not caught by ndim <= 1
    opt = timm.optim.create_optimizer_v2(m, "sgd", lr=0.1, weight_decay=1e-4)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert gammas and not gammas & decayed


def test_drop_path_linear_per_block():
    m = timm.create_model("resattn_resnet18", drop_path_rate=0.14, device="meta")
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in m.blocks()]
    assert rates == pytest.approx([0.14 * j / 7 for j in range(8)])
    assert type(m.layer1[0].drop_path).__name__ == "Identity"
    m = timm.create_model("resattn_cifar_resnet20_dual", drop_path_rate=0.3).train()
    x = torch.randn(64, 3, 8, 8)
    last = m.layer3[2]
    torch.manual_seed(0)
    y = last.drop_path(torch.ones(64, 1, 1, 1))
    kept = y[y != 0]
    assert (kept - 1 / 0.7).abs().max().item() < 1e-6 and 0 < (y == 0).sum().item() < 64
    assert torch.isfinite(m(x)).all()


def test_init_weights_after_to_empty():
    m = timm.create_model("resattn_cifar_resnet20_dual", device="meta", res_gamma_init=0.1,
                          skip_gamma_init=0.05, zero_init_residual=True).to_empty(device="cpu")
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    m.init_weights()
    assert all(torch.isfinite(t).all() for t in [*m.parameters(), *m.buffers()])
    b = m.layer3[0]
    assert b.res_attn.effective_gamma().item() == pytest.approx(0.1)
    assert b.skip_attn.effective_gamma().item() == pytest.approx(0.05)
    assert b.bn1.running_var.eq(1).all() and b.bn2.weight.eq(0).all()  # zero_init_residual kept


def test_fx_trace_then_script():
    from torchvision.models.feature_extraction import create_feature_extractor
    m = timm.create_model("resattn_cifar_resnet20_dual", res_gamma_init=0.2).eval()
    fx = create_feature_extractor(m, return_nodes=["fc"])
    scripted = torch.jit.script(fx)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (scripted(x)["fc"] - m(x)).abs().max().item() <= 1e-5


def test_converted_timm_resnet_keeps_timm_methods():
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", num_classes=10).eval()
    m = copy.deepcopy(ref)
    convert(m, "dual")
    assert isinstance(m, timm.models.ResNet)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, taps = m.forward_intermediates(x)
        assert (final - ref.forward_features(x)).abs().max().item() <= 1e-5
        assert [t.shape[1] for t in taps] == [64, 64, 128, 256, 512]
        assert (m.forward_head(final, pre_logits=True) - final.mean((2, 3))).abs().max() < 1e-6
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.get_classifier().out_features == 3
    # grad checkpointing (timm's forward_features) gives the same gradients
    grads = []
    for ckpt in (False, True):
        mm = copy.deepcopy(m).train()
        mm.set_grad_checkpointing(ckpt)
        mm(x).sum().backward()
        grads.append([p.grad for p in mm.parameters()])
    assert max((a - b).abs().max().item() for a, b in zip(*grads)) <= 1e-5
    # features_only: convert the feature wrapper itself, or wrap a converted model
    feats = timm.create_model("resnet18", features_only=True, out_indices=(2, 4)).eval()
    ref_feats = copy.deepcopy(feats)
    report = convert(feats, "branch", attn="se")
    assert len(report.blocks_converted) == 8
    assert feats.feature_info.channels() == [128, 512]
    with torch.no_grad():
        for a, b in zip(feats(x), ref_feats(x)):
            assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5
    getter = FeatureGetterNet(m, out_indices=(1, 3)).eval()
    with torch.no_grad():
        assert [tuple(o.shape) for o in getter(x)] == [(2, 64, 16, 16), (2, 256, 4, 4)]
