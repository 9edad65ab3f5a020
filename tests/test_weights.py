"""Pretrained weights into models with attention, and the shared checkpoint format."""
import argparse
import urllib.error

import pytest
import timm
import torch
import torchvision

import resattn
from resattn import create_model
from resattn.tools.convert import convert
from resattn.tools.weights import (CHECKPOINT_FORMAT, LoadReport, clean_state_dict, load_model,
                             load_pretrained, make_checkpoint, parse_arch, save_checkpoint)


def _perturb(model, seed=0):
    """Give every parameter (gamma included) and BN buffer a non-initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.mul_(1.5)
    return model


@pytest.fixture(scope="module")
def tv18_state():
    torch.manual_seed(0)
    return _perturb(torchvision.models.resnet18()).state_dict()


def _attention_keys(model):
    return [k for k in model.state_dict() if ".attn." in k or ".skip_attn." in k
            or ".res_attn." in k]


# ----------------------------------------------------------------------------------------------
# load_pretrained
# ----------------------------------------------------------------------------------------------

def test_load_with_ddp_prefix_reports_new_attention_keys(tv18_state):
    model = create_model("resnet18", pattern="dual", skip_attn="se", res_attn="cbam")
    new = {k: v.clone() for k, v in model.state_dict().items() if k in _attention_keys(model)}
    report = load_pretrained(model, {"module." + k: v for k, v in tv18_state.items()})
    assert isinstance(report, LoadReport)
    assert sorted(report.missing) == sorted(_attention_keys(model)) and report.missing
    assert report.unexpected == [] and sorted(report.loaded) == sorted(tv18_state)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in tv18_state.items())
    assert all(torch.equal(own[k], v) for k, v in new.items())  # attention untouched
    assert "loaded 122 tensors" in str(report)


def test_loaded_model_equals_torchvision_at_init(tv18_state):
    tv = torchvision.models.resnet18()
    tv.load_state_dict(tv18_state)
    model = create_model("resnet18", pattern="post", attn="eca", modulation="near_identity")
    load_pretrained(model, tv18_state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (tv.eval()(x) - model.eval()(x)).abs().max().item() <= 1e-5


def test_compile_and_ddp_prefixes_and_wrapped_files(tmp_path, tv18_state):
    both = {"module._orig_mod." + k: v for k, v in tv18_state.items()}
    assert list(clean_state_dict(both)) == list(tv18_state)
    for wrapper in ("state_dict", "model"):
        path = tmp_path / f"{wrapper}.pth"
        torch.save({wrapper: both, "epoch": 3}, path)
        model = create_model("resnet18", pattern="branch")
        report = load_pretrained(model, path)
        assert len(report.loaded) == len(tv18_state)
        assert torch.equal(model.fc.weight, tv18_state["fc.weight"])
    # create_model's door
    model = create_model("resnet18", pretrained=str(tmp_path / "model.pth"), pattern="pre")
    assert torch.equal(model.conv1.weight, tv18_state["conv1.weight"])


def test_shape_mismatch_always_raises_naming_key_and_shapes(tv18_state):
    model = create_model("resnet18", num_classes=10, pattern="dual")
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"shape mismatch for 'fc.weight': the source has "
                                             r"\(1000, 512\), the model \(10, 512\)"):
            load_pretrained(model, tv18_state, strict_backbone=strict)


def test_missing_backbone_and_unexpected_keys(tv18_state):
    state = dict(tv18_state)
    del state["layer2.0.bn1.weight"]
    with pytest.raises(ValueError, match=r"missing backbone keys \['layer2.0.bn1.weight'\]"):
        load_pretrained(create_model("resnet18", pattern="dual"), state)
    extra = dict(tv18_state, **{"head.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \['head.weight'\]"):
        load_pretrained(create_model("resnet18"), extra)
    model = create_model("resnet18", pattern="dual")
    report = load_pretrained(model, dict(state, **{"head.weight": torch.zeros(3)}),
                             strict_backbone=False)
    assert "layer2.0.bn1.weight" in report.missing and report.unexpected == ["head.weight"]
    # num_batches_tracked counters absent from older checkpoints are fine
    old = {k: v for k, v in tv18_state.items() if not k.endswith("num_batches_tracked")}
    assert load_pretrained(create_model("resnet18"), old).missing == []


def test_converted_timm_model_loads_timm_state_dict():
    torch.manual_seed(0)
    source = _perturb(timm.create_model("resnet18"))
    model = timm.create_model("resnet18")
    convert(model, "dual", stages=[4])
    report = load_pretrained(model, source.state_dict())
    assert report.missing == _attention_keys(model)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_named_weights_offline_error(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", offline)
    model = create_model("resnet50", pattern="dual")
    with pytest.raises(RuntimeError, match=r"could not get torchvision's .* for 'resnet50'.*"
                                           r"offline, pass a local path"):
        load_pretrained(model, "resnet50")
    with pytest.raises(RuntimeError, match="offline"):
        create_model("resnet50", pretrained=True)


def test_bad_sources(tmp_path):
    model = create_model("cifar_resnet20")
    with pytest.raises(ValueError, match="neither an existing checkpoint file nor a name"):
        load_pretrained(model, "cifar_resnet20")
    with pytest.raises(TypeError, match="source must be"):
        load_pretrained(model, 3)
    with pytest.raises(ValueError, match="holds no state_dict"):
        load_pretrained(model, {"epoch": 1})
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_pretrained(model, path)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------

def _same_outputs(a, b, x):
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_round_trip_created_model(tmp_path):
    kwargs = dict(in_chans=1, pattern="dual", skip_attn="se", res_attn="cbam", stages=(2, 3),
                  gamma_shape="channel")
    model = _perturb(create_model("cifar_resnet20", **kwargs))
    path = save_checkpoint(model, tmp_path / "sub" / "ckpt.pth", arch="cifar_resnet20",
                           model_kwargs=kwargs, epoch=7, metrics={"acc": 0.5})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["model_kwargs"]["stages"] == [2, 3]
    assert raw["convert_kwargs"] is None
    loaded, meta = load_model(path)
    assert _same_outputs(model, loaded, torch.randn(4, 1, 28, 28))
    assert meta["arch"] == "cifar_resnet20" and meta["epoch"] == 7 and meta["path"] == str(path)
    assert "state_dict" not in meta and meta["metrics"] == {"acc": 0.5}


def test_round_trip_converted_torchvision_model(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    convert(model, "dual", stages=[3, 4], skip_attn="eca", res_attn="coord")
    _perturb(model)  # gammas move away from 0, as after fine-tuning
    path = save_checkpoint(model, tmp_path / "tv.pth", arch="torchvision:resnet18",
                           model_kwargs={"num_classes": 10})
    loaded, meta = load_model(str(path))
    assert meta["convert_kwargs"] == {"pattern": "dual", "stages": [3, 4], "skip_attn": "eca",
                                      "res_attn": "coord"}
    assert type(loaded.layer3[0]) is resattn.BasicBlock and loaded.layer3[0].pattern == "dual"
    assert loaded.layer2[0].pattern == "none"
    assert _same_outputs(model, loaded, torch.randn(2, 3, 64, 64))


def test_round_trip_converted_timm_model_with_gate_option(tmp_path, recwarn):
    model = timm.create_model("resnet18", num_classes=5)
    with pytest.warns(UserWarning):
        convert(model, "post", attn="se", modulation="gate")
    _perturb(model)
    path = save_checkpoint(model, tmp_path / "timm.pth", arch="timm:resnet18",
                           model_kwargs={"num_classes": 5})
    recwarn.clear()
    loaded, _ = load_model(path)
    assert not [w for w in recwarn if "no longer computes" in str(w.message)]
    assert _same_outputs(model, loaded, torch.randn(2, 3, 48, 48))


def test_checkpoint_errors(tmp_path):
    model = create_model("cifar_resnet20", pattern="dual", stages=lambda s, b: b == 0)
    with pytest.raises(ValueError, match="a callable placement cannot be saved; give stage numbers"):
        save_checkpoint(model, tmp_path / "x.pth", arch="cifar_resnet20",
                        model_kwargs={"pattern": "dual", "stages": lambda s, b: b == 0})
    tv = torchvision.models.resnet18()
    convert(tv, "dual", stages=lambda s, b: s == 4)
    with pytest.raises(ValueError, match=r"convert_kwargs\['stages'\].*callable placement"):
        make_checkpoint(tv, arch="torchvision:resnet18")
    with pytest.raises(ValueError, match="not JSON-able"):
        make_checkpoint(model, arch="cifar_resnet20", model_kwargs={"widths": {16, 32}})
    with pytest.raises(ValueError, match="'resnet19' is not a resattn model"):
        make_checkpoint(model, arch="resnet19")
    with pytest.raises(ValueError, match="would replace the checkpoint's own keys"):
        make_checkpoint(model, arch="cifar_resnet20", state_dict={})
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match="is not a resattn-checkpoint/1 checkpoint"):
        load_model(plain)
    good = save_checkpoint(create_model("cifar_resnet20"), tmp_path / "g.pth", arch="cifar_resnet20")
    ckpt = torch.load(good, weights_only=True)
    ckpt["model_kwargs"] = {"pattern": "branch"}
    torch.save(ckpt, tmp_path / "changed.pth")
    with pytest.raises(ValueError, match="does not match the rebuilt 'cifar_resnet20': missing"):
        load_model(tmp_path / "changed.pth")


def test_convert_a_loaded_spec_and_save_without_repeating_it(tmp_path):
    model, _ = load_model("torchvision:resnet18", num_classes=4)
    convert(model, "pre", attn="eca", stages=[2])
    _perturb(model)
    loaded, meta = load_model(save_checkpoint(model, tmp_path / "c.pth"))
    assert meta["arch"] == "torchvision:resnet18" and meta["model_kwargs"] == {"num_classes": 4}
    assert meta["convert_kwargs"] == {"pattern": "pre", "stages": [2], "attn": "eca"}
    assert _same_outputs(model, loaded, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="arch is required"):
        make_checkpoint(create_model("cifar_resnet20"))


def test_load_model_from_arch_specs():
    model, meta = load_model("cifar_resnet20", in_chans=1, pattern="dual")
    assert isinstance(model, resattn.ResNet) and meta["model_kwargs"] == {"in_chans": 1,
                                                                          "pattern": "dual"}
    assert isinstance(load_model("torchvision:resnet18", num_classes=3)[0],
                      torchvision.models.ResNet)
    assert isinstance(load_model("timm:resnet18")[0], timm.models.ResNet)
    assert parse_arch("timm:resnet50") == ("timm", "resnet50")
    with pytest.raises(ValueError, match="neither|not a resattn model"):
        load_model("no_such_model")
    with pytest.raises(ValueError, match="prefix 'keras' is not allowed"):
        load_model("keras:resnet50")
    with pytest.raises(ValueError, match="build_model never loads weights"):
        load_model("torchvision:resnet18", pretrained=True)
