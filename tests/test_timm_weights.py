"""timm's SE/ECA/CBAM ResNet weights load into resattn's pattern `branch` (issue 15): same
outputs, tested on randomly initialised timm models (nothing is downloaded)."""
import pytest
import timm
import torch

from resattn import create_model
from resattn.tools.weights import load_pretrained


def _randomise(model):
    """Every BatchNorm away from its init (timm zero-inits the branch's last norm, which would
    hide the attention) and the attention's biases non-zero."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith(("running_var",)) or ("bn" in name and name.endswith("weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("bias", "running_mean")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("timm_name,timm_kwargs,resattn_name,attn", [
    ("seresnet50", {}, "resnet50", "se"),  # README: create_model("resnet50", branch, se) = seresnet50
    ("seresnet18", {}, "resnet18", "se"),
    ("resnet18", {"block_args": {"attn_layer": "eca"}}, "resnet18", "eca"),
    ("resnet18", {"block_args": {"attn_layer": "cbam"}}, "resnet18", "cbam"),
])
def test_timm_attention_resnet_weights_load_with_the_same_outputs(timm_name, timm_kwargs,
                                                                  resattn_name, attn):
    torch.manual_seed(0)
    ref = _randomise(timm.create_model(timm_name, pretrained=False, **timm_kwargs))
    model = create_model(resattn_name, pattern="branch", attn=attn).eval()
    report = load_pretrained(model, ref.state_dict())
    assert report.missing == [] and report.unexpected == []
    assert any(".attn.attn." in k for k in report.loaded)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert want.abs().max() > 1e-3  # the outputs carry the weights, not a constant
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
