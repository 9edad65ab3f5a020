"""Shipping: TorchScript, ONNX (checked with onnxruntime), torch.export."""
import warnings

import numpy as np
import pytest
import torch

from resattn import ATTN_NAMES, create_model

SCRIPTABLE = [a for a in ATTN_NAMES if a != "ge"]  # timm's GatherExcite is not scriptable


def _model(pattern, attn):
    m = create_model("cifar_resnet20", pattern=pattern, attn=attn, skip_attn=attn, res_attn=attn,
                     modulation="near_identity", gamma_init=0.2, skip_gamma_init=0.1,
                     res_gamma_init=0.3, gamma_shape="channel")
    return m.eval()


@pytest.mark.parametrize("pattern", ["none", "branch", "post", "pre", "dual"])
def test_torchscript_matches_eager(pattern):
    x = torch.randn(2, 3, 20, 24)
    for attn in SCRIPTABLE:
        m = _model(pattern, attn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            s = torch.jit.script(m)
        with torch.no_grad():
            assert (s(x) - m(x)).abs().max().item() <= 1e-5, attn


@pytest.mark.parametrize("pattern,attn", [("dual", "se"), ("branch", "cbam"), ("post", "coord"),
                                          ("pre", "eca")])
def test_onnx_export_runs_in_onnxruntime(tmp_path, pattern, attn):
    ort = pytest.importorskip("onnxruntime")
    m = _model(pattern, attn)
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        xi = torch.randn(n, 3, 32, 32)
        (y,) = sess.run(None, {"x": xi.numpy()})
        with torch.no_grad():
            ref = m(xi).numpy()
        assert y.shape == (n, 10)
        assert np.abs(y - ref).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["branch", "dual"])
def test_torch_compile_matches_eager(pattern):
    m = _model(pattern, "se")
    compiled = torch.compile(m)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (compiled(x) - m(x)).abs().max().item() <= 1e-4
