"""Gate diagnostics: values checked against direct computations, hooks, cost-free outputs."""
import copy

import pytest
import timm
import torch
import torchvision

import resattn
from resattn import create_model
from resattn.tools.convert import convert
from resattn.tools.monitor import DEFAULT_THRESHOLD, GateMonitor


def fro(t):
    return torch.linalg.vector_norm(t).item()


@torch.no_grad()
def direct_metrics(model, x):
    """skip_gain and residual_share of every block of a resattn CIFAR/ImageNet ResNet, by hand
    (eval mode), following the formulas of the design notes."""
    out = {}
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for name, b in model.named_modules():
        if not isinstance(b, resattn.ResidualBlock):
            continue
        sx = b.skip(h)
        p = b.pattern
        if p == "dual":
            s, r, gain = b.skip_attn(sx), b.res_attn(b.residual(h)), None
            gain = fro(s) / fro(sx)
        elif p == "post":
            s, r = sx, b.residual(h)
            z = s + r
            gain = fro(b.attn(z)) / fro(z)
        else:
            s, gain = sx, 1.0
            r = {"none": lambda: b.residual(h), "branch": lambda: b.attn(b.residual(h)),
                 "pre": lambda: b.residual(b.attn(h))}[p]()
        out[name] = {"skip_gain": gain, "residual_share": fro(r) / (fro(s) + fro(r))}
        h = b(h)
    return out


def monitored(model, x, **kwargs):
    with GateMonitor(model, **kwargs) as mon:
        with torch.no_grad():
            model(x)
    return mon.summary()


@pytest.mark.parametrize("pattern", ["none", "branch", "post", "pre", "dual"])
def test_values_match_direct_computation_for_every_pattern(pattern):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern=pattern, attn="cbam",
                         skip_attn="se", res_attn="cbam", skip_modulation="gate",
                         res_modulation="gate", stages=[1, 2, 3]).eval()
    x = torch.randn(16, 1, 28, 28)
    got = monitored(model, x)
    want = direct_metrics(model, x)
    assert list(got) == list(want)
    for name in want:
        for key in ("skip_gain", "residual_share"):
            assert got[name][key] == pytest.approx(want[name][key], rel=1e-5, abs=1e-6), (name, key)


def test_gated_skip_shows_gain_near_one_half_and_is_closing():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", skip_attn="se",
                         skip_modulation="gate")
    x = torch.randn(32, 1, 28, 28)
    with GateMonitor(model) as mon:
        model(x)  # train mode
        model.eval()(x)
    s = mon.summary(reset=False)
    gated = [f"layer{st}.{b}" for st in (2, 3) for b in range(3)]
    for name in gated:
        assert 0.3 < s[name]["skip_gain"] < 0.8, (name, s[name])
        assert s[name]["gate_energy/skip_attn"] == pytest.approx(s[name]["skip_gain"])
        assert "gamma/skip_attn" not in s[name] and s[name]["gamma/res_attn"] == 0.0
    for name in ("layer1.0", "layer1.1", "layer1.2"):
        assert s[name]["skip_gain"] == 1.0 and set(s[name]) == {"skip_gain", "residual_share"}
    closing = mon.closing()
    assert [n for n, _ in closing] == gated and all(g < DEFAULT_THRESHOLD for _, g in closing)
    assert mon.closing(s) == closing
    assert GateMonitor(model, threshold=0.2).closing(s) == []


def test_near_identity_at_gamma_zero_has_unit_skip_gain_and_exact_share():
    torch.manual_seed(0)
    model = create_model("resnet18", pattern="dual", skip_attn="eca", res_attn="cbam",
                         stages=[2, 3, 4]).eval()
    x = torch.randn(2, 3, 64, 64)
    got = monitored(model, x)
    want = direct_metrics(model, x)
    for name, m in got.items():
        assert abs(m["skip_gain"] - 1.0) <= 1e-6
        assert m["residual_share"] == pytest.approx(want[name]["residual_share"], rel=1e-5)
        if name >= "layer2":
            assert m["gamma/skip_attn"] == 0.0 and m["gamma/res_attn"] == 0.0
            assert abs(m["gate_energy/res_attn"] - 1.0) <= 1e-6


def test_post_gain_is_gate_output_over_input_by_hand():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", pattern="post", attn="se", stages=[3]).eval()
    x = torch.randn(8, 3, 32, 32)
    block = model.layer3[1]
    seen = {}
    block.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    got = monitored(model, x)
    with torch.no_grad():
        z = block.skip(seen["x"]) + block.residual(seen["x"])
        gain = fro(block.attn.attn(z)) / fro(z)  # gate: A(z) = z * m(z)
    assert got["layer3.1"]["skip_gain"] == pytest.approx(gain, rel=1e-5)
    assert got["layer3.1"]["gate_energy/attn"] == pytest.approx(gain, rel=1e-5)
    assert 0.2 < gain < 0.9


def test_bounded_gamma_is_reported_as_effective_value():
    model = create_model("cifar_resnet20", pattern="dual", skip_gamma_max=0.25,
                         gamma_shape="channel")
    with torch.no_grad():
        for b in model.blocks():
            if b.pattern == "dual":
                b.skip_attn.gamma.fill_(-10.0)  # effective: -0.25 * tanh(40) = -0.25
                b.res_attn.gamma.fill_(0.3)
    s = monitored(model.eval(), torch.randn(4, 3, 32, 32))
    for name in ("layer2.0", "layer3.2"):
        assert s[name]["gamma/skip_attn"] == pytest.approx(-0.25, abs=1e-6)
        assert s[name]["gamma/res_attn"] == pytest.approx(0.3, abs=1e-6)
        assert s[name]["skip_gain"] >= 0.75 - 1e-6  # the bound keeps the skip open
    assert GateMonitor(model).closing(s) == []


def test_outputs_unchanged_and_hooks_removed():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", skip_attn="se",
                         skip_modulation="gate", stages=[1, 2, 3])
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        before = model(x)
    with GateMonitor(model) as mon:
        assert mon.attached
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) > 0
        with torch.no_grad():
            during = model(x)
    assert torch.equal(before, during)
    assert not mon.attached
    for m in model.modules():
        assert len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0
    mon.detach()  # idempotent
    with torch.no_grad():
        assert torch.equal(model(x), before)
    # train mode: same loss and gradients with and without the monitor
    model.train()
    model(x).square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    mon = GateMonitor(model).attach()
    model(x).square().mean().backward()
    mon.detach()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, model.parameters()))


def test_every_reset_and_history():
    model = create_model("cifar_resnet20", pattern="dual").eval()
    x = torch.randn(2, 3, 16, 16)
    with GateMonitor(model, every=3) as mon:
        with torch.no_grad():
            for _ in range(7):  # forwards 0, 3, 6 are recorded
                model(x)
            assert mon.num_recorded == 3
            s1 = mon.summary()
            assert mon.num_recorded == 0 and mon.summary(reset=False) == {}
            model(x)
            model(x)
            model(x)  # forward 9
    assert mon.num_recorded == 1
    s2 = mon.summary()
    assert mon.history == [s1, s2] and set(s1) == {f"layer{s}.{b}" for s in (1, 2, 3)
                                                  for b in range(3)}
    assert mon.closing() == []  # falls back on the last history entry


def test_converted_torchvision_and_timm_models():
    tv = torchvision.models.resnet18().eval()
    convert(tv, "branch", attn="se", stages=[4])
    s = monitored(tv, torch.randn(2, 3, 64, 64))
    assert len(s) == 8 and all(m["skip_gain"] == 1.0 for m in s.values())
    assert s["layer4.0"]["gate_energy/attn"] == pytest.approx(1.0, abs=1e-6)
    # timm with its own SE and drop_path: F ends after them
    torch.manual_seed(0)
    tm = timm.create_model("seresnet18", drop_path_rate=0.1).eval()
    for m in tm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)  # undo timm's zero init of the last norm
    with pytest.warns(UserWarning, match="no longer computes"):
        convert(tm, "dual", stages=[3, 4], skip_attn="se", skip_modulation="gate")
    x = torch.randn(2, 3, 64, 64)
    got = monitored(tm, x)
    block = tm.layer3[0]
    seen = {}
    block.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    with torch.no_grad():
        tm(x)
        sx = block.skip(seen["x"])
        s, r = block.skip_attn(sx), block.residual(seen["x"])  # residual includes timm's SE
    assert got["layer3.0"]["skip_gain"] == pytest.approx(fro(s) / fro(sx), rel=1e-5)
    assert got["layer3.0"]["residual_share"] == pytest.approx(fro(r) / (fro(s) + fro(r)), rel=1e-5)
    assert [n for n, _ in GateMonitor(tm).closing(got)] == ["layer3.0", "layer3.1", "layer4.0",
                                                          "layer4.1"]


def test_blocks_are_read_at_attach():
    tv = torchvision.models.resnet18().eval()
    convert(tv, "none")
    mon = GateMonitor(tv)
    convert(tv, "dual", stages=(s for s in (4,)))  # a generator, read once
    assert tv.resattn_convert_kwargs["stages"] == [4]
    with mon:
        with torch.no_grad():
            tv(torch.randn(2, 3, 32, 32))
    s = mon.summary()
    assert "gate_energy/skip_attn" in s["layer4.1"] and "gate_energy/skip_attn" not in s["layer3.1"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="has no resattn ResidualBlock to monitor; convert"):
        GateMonitor(torchvision.models.resnet18())
    model = create_model("cifar_resnet20")
    with pytest.raises(ValueError, match="every=0 must be an integer >= 1"):
        GateMonitor(model, every=0)
    with pytest.raises(ValueError, match="threshold=1.5 must be in"):
        GateMonitor(model, threshold=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_gpu_values_stay_on_device_until_summary():
    model = create_model("cifar_resnet20", pattern="dual", skip_attn="se",
                         skip_modulation="gate").cuda()
    x = torch.randn(64, 3, 32, 32, device="cuda")
    with GateMonitor(model) as mon:
        for _ in range(3):
            model(x).sum().backward()
        assert all(v.is_cuda for sums in mon._sums.values() for v in sums.values()
                   if isinstance(v, torch.Tensor))
    s = mon.summary()
    assert 0.3 < s["layer3.2"]["skip_gain"] < 0.8


def _hook_counts(model):
    """Forward hooks on the Modulations and on the residual blocks (and their submodules)."""
    mods = [m for m in model.modules() if isinstance(m, resattn.layers.modulation.Modulation)]
    blocks = [m for b in model.modules() if isinstance(b, resattn.ResidualBlock)
              for m in b.modules()]
    return (sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods),
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in blocks))


def test_block_hooks_present_only_during_recorded_forwards():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", stages=[1, 2, 3])
    x = torch.randn(4, 1, 28, 28)
    seen = []  # counts from inside each forward, taken by a probe on a plain Sequential
    model.layer3.register_forward_pre_hook(lambda m, a: seen.append(_hook_counts(model)))
    n_mods = sum(len(b.gated_paths()) for b in model.blocks())  # one hook per gated path
    assert n_mods == 18
    with GateMonitor(model, every=3) as mon:
        for i in range(7):  # train mode, with backward; forwards 0, 3, 6 record
            model(x).square().mean().backward()
            assert _hook_counts(model) == (0, 0), i
        model.eval()
        with torch.no_grad():
            model(x)  # forward 7: not recorded
        assert mon.num_recorded == 3
    assert [c[0] for c in seen] == [n_mods, 0, 0, n_mods, 0, 0, n_mods, 0]
    assert all(c[1] >= c[0] for c in seen) and seen[1][1] == 0
    assert _hook_counts(model) == (0, 0)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules()) == 1  # the probe's pre-hook only


def test_recorded_forwards_give_the_values_of_a_monitor_on_every_forward():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", skip_attn="se",
                         skip_modulation="gate", stages=[1, 2, 3]).train()
    ref = copy.deepcopy(model)
    xs = [torch.randn(8, 1, 28, 28) for _ in range(7)]
    with GateMonitor(model, every=3) as mon:
        for x in xs:
            model(x).square().mean().backward()
    with GateMonitor(ref, every=1) as mon_ref:  # hooks on every forward, as before
        for x in xs[::3]:
            ref(x).square().mean().backward()
    got, want = mon.summary(), mon_ref.summary()
    assert list(got) == list(want) and len(got) == 9
    assert all(list(got[b]) == list(want[b]) for b in want)
    assert max(abs(got[b][k] - want[b][k]) for b in want for k in want[b]) <= 1e-6
    assert 0.3 < got["layer3.2"]["skip_gain"] < 0.8


def test_outputs_and_gradients_equal_with_and_without_the_monitor():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", stages=[1, 2, 3])
    other = copy.deepcopy(model)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, other)]
    with GateMonitor(model, every=2):
        for _ in range(4):  # recorded and not, with steps in between
            x = torch.randn(8, 1, 28, 28)
            outs = [m(x) for m in (model, other)]
            assert torch.equal(outs[0], outs[1])
            for out, opt in zip(outs, opts):
                out.square().mean().backward()
            for p, q in zip(model.parameters(), other.parameters()):
                assert torch.equal(p.grad, q.grad)
            for opt in opts:
                opt.step()
                opt.zero_grad()


def test_a_forward_that_raises_leaves_no_block_hooks():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual", stages=[1, 2, 3]).eval()
    x = torch.randn(4, 1, 28, 28)
    fail = [True]

    def boom(module, args, out):
        if fail[0]:
            raise RuntimeError("boom")

    model.layer2.register_forward_hook(boom)
    with GateMonitor(model, every=1) as mon:
        with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
            model(x)  # raises after the hooks of layer3 are in place
        assert _hook_counts(model) == (0, 0)
        assert set(mon.summary()) == {f"layer{s}.{b}" for s in (1, 2) for b in range(3)}
        # hooks left behind (a forward hook that never ran) go at the next forward's start
        mon._probes[0].install()
        mon._probes[-1].install()
        mon._probes[-1].norms["stale"] = torch.ones(())
        assert _hook_counts(model)[1] > 0
        fail[0] = False
        mon.every = 2  # forward 1: not recorded
        with torch.no_grad():
            model(x)
            assert _hook_counts(model) == (0, 0) and mon.num_recorded == 0
            model(x)  # forward 2: recorded, values as by hand
    got, want = mon.summary(), direct_metrics(model, x)
    assert list(got) == list(want)
    for name in want:
        for key in ("skip_gain", "residual_share"):
            assert got[name][key] == pytest.approx(want[name][key], rel=1e-5, abs=1e-6)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 1


@pytest.mark.parametrize("index", [0, 1])  # layer2.0 has a downsample, layer2.1 not
def test_monitor_on_a_single_block(index):
    torch.manual_seed(0)
    block = create_model("cifar_resnet20", pattern="branch", attn="se").layer2[index].eval()
    h = torch.randn(2, block.conv1.in_channels, 16, 16)
    with GateMonitor(block, every=2) as mon:
        with torch.no_grad():
            block(h)
            block(torch.randn_like(h))
    got = mon.summary()[""]
    with torch.no_grad():
        s, r = block.skip(h), block.attn(block.residual(h))
    assert got["skip_gain"] == 1.0 and mon.history[-1] == {"": got}
    assert got["residual_share"] == pytest.approx(fro(r) / (fro(s) + fro(r)), rel=1e-5)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in block.modules()) == 0
