"""Shipping a model: ONNX, TorchScript or a ``torch.export`` ExportedProgram, checked for parity.

:func:`export` writes the eval-mode model with a dynamic batch, height and width, reloads what it
wrote and compares it with PyTorch eager at the export size and at two other sizes (the ONNX file
runs in onnxruntime):

- ``onnx``: torch's current exporter (``torch.onnx.export(..., dynamo=True)``, which needs the
  ``onnxscript`` package: ``pip install 'resattn[export]'``); when it fails, the legacy
  TorchScript-based exporter (``dynamo=False``) as a fallback. The report names the exporter used
  and why the first one failed.
- ``torchscript``: ``torch.jit.script`` (``torch.jit.trace`` as a fallback, named in the report).
- ``exported-program``: ``torch.export.export`` saved with ``torch.export.save`` (``.pt2``).
"""
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .weights import load_model

__all__ = ["FORMATS", "ONNX_EXPORTERS", "ExportReport", "export", "check_sizes"]

FORMATS: Tuple[str, ...] = ("onnx", "torchscript", "exported-program")
ONNX_EXPORTERS: Tuple[str, ...] = ("auto", "dynamo", "legacy")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
# The default output's suffix: a TorchScript archive never takes a checkpoint's own ``.pt`` name.
_DEFAULT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}


@dataclass
class ExportReport:
    """What :func:`export` wrote and how well it matches eager PyTorch.

    Attributes:
        path: the file written.
        format: one of :data:`FORMATS`.
        exporter: the exporter that produced the file (for example ``'torch.onnx dynamo'`` or
            ``'torch.onnx legacy (TorchScript-based)'``).
        fallback_reason: why the preferred exporter was not used (None when it was).
        input_shape: (N, C, H, W) of the example input used to export.
        parity: one dict per checked input: ``shape``, ``max_abs_diff``, ``tol``, ``passed``.
    """

    path: Path
    format: str
    exporter: str
    input_shape: Tuple[int, ...]
    fallback_reason: Optional[str] = None
    parity: List[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every checked size matched within its tolerance."""
        return bool(self.parity) and all(p["passed"] for p in self.parity)

    def __str__(self) -> str:
        size = self.path.stat().st_size / 2 ** 20 if self.path.exists() else float("nan")
        lines = [f"{self.format}: {self.path} ({size:.1f} MiB), exporter: {self.exporter}"]
        if self.fallback_reason:
            lines.append(f"  (fallback: {self.fallback_reason})")
        lines.append("dynamic axes: batch, height, width")
        runtime = "onnxruntime (CPUExecutionProvider)" if self.format == "onnx" else "the reloaded file"
        lines.append(f"parity of {runtime} against PyTorch eager (eval mode):")
        for i, p in enumerate(self.parity):
            tag = "export size" if i == 0 else "other size"
            lines.append(f"  input {str(tuple(p['shape'])):<18} {'[' + tag + ']':<13}  max |diff| "
                         f"{p['max_abs_diff']:.3g} (tol {p['tol']:.1g})  "
                         f"{'PASS' if p['passed'] else 'FAIL'}")
        return "\n".join(lines)


def check_sizes(input_shape: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """The export shape (N, C, H, W) and two others with another batch and non-square sizes:
    (1, C, 3H/4, 5W/4) and (3, C, 5H/4, 3W/4), each side at least 8."""
    n, c, h, w = (int(v) for v in input_shape)
    return [(n, c, h, w), (1, c, max(8, 3 * h // 4), max(8, 5 * w // 4)),
            (3, c, max(8, 5 * h // 4), max(8, 3 * w // 4))]


def _default_input_shape(model: nn.Module, batch: int) -> Tuple[int, int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        c, h, w = cfg["input_size"]
    else:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        c, h, w = (first.in_channels if first is not None else 3), 224, 224
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        c = first.in_channels  # a model built with in_chans=1 keeps a 3-channel cfg
    return batch, int(c), int(h), int(w)


def _dynamic_shapes() -> Tuple[dict]:
    auto = torch.export.Dim.AUTO
    return ({0: auto, 2: auto, 3: auto},)


def _onnx_dynamo(model: nn.Module, x: torch.Tensor, path: Path, opset: Optional[int]) -> None:
    big = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > 1.8 * 2 ** 30
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"],
                      output_names=["logits"], dynamic_shapes=_dynamic_shapes(),
                      opset_version=opset, external_data=big, verbose=False)


def _onnx_legacy(model: nn.Module, x: torch.Tensor, path: Path, opset: Optional[int]) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation warning; the report names the exporter
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"], opset_version=opset or 17,
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch"}})


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _write(model: nn.Module, x: torch.Tensor, path: Path, fmt: str, onnx_exporter: str,
           opset: Optional[int]) -> Tuple[str, Optional[str]]:
    if fmt == "onnx":
        if onnx_exporter in ("auto", "dynamo"):
            try:
                _onnx_dynamo(model, x, path, opset)
                return "torch.onnx dynamo (torch.export-based)", None
            except Exception as e:  # ImportError (no onnxscript), export or translation errors
                if onnx_exporter == "dynamo":
                    raise RuntimeError(f"the dynamo ONNX exporter failed ({_first_line(e)}); "
                                       "retry with onnx_exporter='legacy'") from e
                reason = f"the dynamo exporter failed: {_first_line(e)}"
                if isinstance(e, ImportError):
                    reason += " (install it with: pip install 'resattn[export]')"
        else:
            reason = "onnx_exporter='legacy' was asked for"
        _onnx_legacy(model, x, path, opset)
        return "torch.onnx legacy (TorchScript-based, dynamo=False)", reason
    if fmt == "torchscript":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            try:
                scripted, exporter, reason = torch.jit.script(model), "torch.jit.script", None
            except Exception as e:  # a module TorchScript cannot compile (timm's GatherExcite, ...)
                scripted = torch.jit.trace(model, (x,), check_trace=False)
                exporter = "torch.jit.trace (shapes in Python control flow are frozen)"
                reason = f"torch.jit.script failed: {_first_line(e)}"
        scripted.save(str(path))
        return exporter, reason
    ep = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes())
    torch.export.save(ep, str(path))
    return "torch.export.export", None


def _runner(path: Path, fmt: str):
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError("onnxruntime is needed to check the ONNX file: "
                               "pip install 'resattn[export]'") from e
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
    if fmt == "torchscript":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            loaded = torch.jit.load(str(path))
        return lambda x: loaded(x)
    program = torch.export.load(str(path)).module()
    return lambda x: program(x)


def export(model_or_path: Union[nn.Module, str, os.PathLike], out: Union[str, os.PathLike, None] = None,
           format: str = "onnx", *, input_shape: Optional[Sequence[int]] = None,
           image_size: Optional[Sequence[int]] = None, batch: int = 2,
           onnx_exporter: str = "auto", opset: Optional[int] = None, seed: int = 0) -> ExportReport:
    """Export a model (or a checkpoint / architecture spec, see :func:`resattn.tools.weights.load_model`)
    with dynamic batch, height and width, then check the file against eager PyTorch.

    Args:
        model_or_path: an ``nn.Module`` (taken in eval mode; its mode is restored), or a
            resattn checkpoint path, or an architecture spec (``'cifar_resnet20'``, ...).
        out: the file to write, never the checkpoint read; by default the checkpoint's path (or
            ``./<arch>``) with ``.onnx``, ``.torchscript.pt`` or ``.pt2`` (ExportedProgram).
            An ``out`` without a suffix gets ``.onnx``, ``.pt`` or ``.pt2``.
        format: one of :data:`FORMATS`.
        input_shape: (N, C, H, W) of the example input; by default ``batch`` and the model's
            ``pretrained_cfg['input_size']`` (3x224x224 without one; C from the first conv).
        image_size: ``(H, W)`` or ``(S,)`` replacing the default's spatial size.
        batch: example batch size when ``input_shape`` is None (at least 2: torch.export
            specialises a dimension of size 1).
        onnx_exporter: ``'auto'`` (dynamo, then legacy), ``'dynamo'`` or ``'legacy'``.
        opset: ONNX opset (exporter's default when None; 17 for the legacy exporter).
        seed: seed of the random check inputs.

    Returns:
        :class:`ExportReport` (its ``str`` is the printed summary; ``passed`` says whether each
        size matched within ``1e-4 * max(1, max |logit|)``).

    Raises:
        ValueError: a bad ``format``, ``onnx_exporter``, ``batch``, ``input_shape``,
            ``image_size``, an ExportedProgram ``out`` not ending in ``.pt2``, or an ``out``
            that is the checkpoint being read.
        RuntimeError: the export failed with every exporter available for the format.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not allowed; allowed: {', '.join(FORMATS)}")
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ValueError(f"onnx_exporter={onnx_exporter!r} is not allowed; allowed: "
                         f"{', '.join(ONNX_EXPORTERS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ValueError(f"batch={batch!r} must be an integer >= 2 (torch.export treats a "
                         "dimension of size 1 as static)")
    model, stem, source = _load(model_or_path)
    input_shape = _input_shape(model, input_shape, image_size, batch)
    path = _out_path(out, stem, source, format)
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator().manual_seed(seed)
        ref = next(model.parameters(), None)
        dtype = ref.dtype if ref is not None else torch.float32
        inputs = [torch.randn(s, generator=g).to(dtype) for s in check_sizes(input_shape)]
        with torch.no_grad():
            exporter, reason = _write(model, inputs[0], path, format, onnx_exporter, opset)
            report = ExportReport(path=path, format=format, exporter=exporter,
                                  input_shape=input_shape, fallback_reason=reason)
            run = _runner(path, format)
            report.parity = [_parity(model, run, x) for x in inputs]
    finally:
        model.train(was_training)
    return report


def _load(model_or_path: Union[nn.Module, str, os.PathLike]) -> Tuple[nn.Module, Path, Optional[Path]]:
    """(model, stem of the default output name, checkpoint file read or None)."""
    if isinstance(model_or_path, nn.Module):
        return model_or_path, Path(type(model_or_path).__name__.lower()), None
    model, meta = load_model(model_or_path)
    source = Path(meta["path"]) if meta.get("path") else None
    return model, source or Path(str(model_or_path).replace(":", "_")), source


def _input_shape(model: nn.Module, input_shape: Optional[Sequence[int]],
                 image_size: Optional[Sequence[int]], batch: int) -> Tuple[int, int, int, int]:
    """The example input's (N, C, H, W): given, or the model's default with ``image_size``."""
    if input_shape is None:
        input_shape = _default_input_shape(model, batch)
        if image_size is not None:
            hw = [int(v) for v in image_size]
            if len(hw) not in (1, 2) or min(hw) < 1:
                raise ValueError(f"image_size={image_size!r} must be (H, W) or (S,) with sides >= 1")
            input_shape = (*input_shape[:2], hw[0], hw[-1])
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 1 or input_shape[0] < 2:
        raise ValueError(f"input_shape={input_shape!r} must be (N, C, H, W) with N >= 2")
    return input_shape


def _out_path(out: Union[str, os.PathLike, None], stem: Path, source: Optional[Path],
              format: str) -> Path:
    """The file to write (its folder made): never the checkpoint being read."""
    path = Path(out) if out is not None else stem.with_suffix(_DEFAULT_SUFFIX[format])
    if not path.suffix:
        path = path.with_suffix(_SUFFIX[format])
    if source is not None and path.exists() and os.path.samefile(path, source):
        raise ValueError(f"out={str(path)!r} is the checkpoint being exported; writing there "
                         "would destroy it. Give another --out")
    if format == "exported-program" and path.suffix != ".pt2":
        raise ValueError(f"out={str(path)!r}: an ExportedProgram file must end in .pt2 "
                         "(torch.export.save)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _parity(model: nn.Module, run, x: torch.Tensor) -> dict[str, Any]:
    """The exported file against eager PyTorch on ``x``: max |difference| within
    ``1e-4 * max(1, max |logit|)``."""
    expected = model(x)
    got = run(x).to(expected.dtype)
    diff = (got - expected).abs().max().item() if got.shape == expected.shape else math.inf
    tol = 1e-4 * max(1.0, expected.abs().max().item())
    return dict(shape=tuple(x.shape), max_abs_diff=diff, tol=tol, passed=bool(diff <= tol))
