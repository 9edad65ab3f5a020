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


# ----------------------------------------------------------------------------- resattn export

def _checkpoint(tmp_path):
    from resattn.tools.weights import build_model, save_checkpoint
    kwargs = dict(pattern="dual", res_gamma_init=0.3, skip_gamma_init=0.1)
    model = build_model("cifar_resnet20", kwargs)
    return save_checkpoint(model, tmp_path / "tiny.pt"), model


def test_cli_export_onnx_dynamo_with_dynamic_sizes(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from resattn.cli import main
    path, model = _checkpoint(tmp_path)
    assert main(["export", str(path), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "exporter: torch.onnx dynamo" in out and "fallback" not in out
    assert out.count("PASS") == 3 and "(2, 3, 32, 32)" in out and "(1, 3, 24, 40)" in out
    sess = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 20, 28)  # a size the export never saw
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - model.eval()(x).numpy()).max() <= 1e-4


def test_export_onnx_falls_back_to_the_legacy_exporter(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from resattn import export as export_mod
    _, model = _checkpoint(tmp_path)

    def no_onnxscript(*a, **k):
        raise ModuleNotFoundError("No module named 'onnxscript'")
    monkeypatch.setattr(export_mod, "_onnx_dynamo", no_onnxscript)
    report = export_mod.export(model, tmp_path / "m.onnx", "onnx", image_size=(24,))
    assert report.exporter.startswith("torch.onnx legacy") and report.passed
    assert "No module named 'onnxscript'" in report.fallback_reason
    assert "pip install 'resattn[export]'" in report.fallback_reason
    assert [p["shape"] for p in report.parity] == [(2, 3, 24, 24), (1, 3, 18, 30), (3, 3, 30, 18)]
    assert max(p["max_abs_diff"] for p in report.parity) <= 1e-4
    with pytest.raises(RuntimeError, match="the dynamo ONNX exporter failed"):
        export_mod.export(model, tmp_path / "m2.onnx", "onnx", onnx_exporter="dynamo")


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("exported-program", ".pt2")])
def test_export_torchscript_and_exported_program(tmp_path, fmt, suffix):
    from resattn.tools.export import export
    _, model = _checkpoint(tmp_path)
    report = export(model, tmp_path / "m", fmt)
    assert report.path == tmp_path / f"m{suffix}" and report.path.is_file()
    assert report.passed and max(p["max_abs_diff"] for p in report.parity) <= 1e-5
    assert str(report).count("PASS") == 3


def test_export_bad_arguments(tmp_path):
    from resattn.tools.export import export
    model = create_model("cifar_resnet20")
    with pytest.raises(ValueError, match="format='tflite' is not allowed; allowed: onnx, torchscript"):
        export(model, tmp_path / "m", "tflite")
    with pytest.raises(ValueError, match="batch=1 must be an integer >= 2"):
        export(model, tmp_path / "m", "onnx", batch=1)
    with pytest.raises(ValueError, match="must end in .pt2"):
        export(model, tmp_path / "m.pt", "exported-program")
    model.train()
    export(model, tmp_path / "m", "torchscript")
    assert model.training  # eval for the export, then restored


def test_export_never_writes_over_the_checkpoint_it_reads(tmp_path):
    """Issue 15: `export run/checkpoint.pt --format torchscript` wrote the archive over its input."""
    from resattn.cli import main
    from resattn.tools.export import export
    from resattn.tools.weights import load_model
    path, _ = _checkpoint(tmp_path)
    before = path.read_bytes()
    report = export(path, None, "torchscript")
    assert report.path == tmp_path / "tiny.torchscript.pt" and report.passed
    assert path.read_bytes() == before
    load_model(path)  # still a checkpoint
    assert main(["export", str(path), "--format", "torchscript"]) == 0
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="is the checkpoint being exported"):
        export(path, path, "torchscript")
    assert main(["export", str(path), "--format", "torchscript", "--out", str(path)]) == 2
    assert path.read_bytes() == before
