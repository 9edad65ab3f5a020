"""Loading state_dicts into models: pretrained backbones under new attention.

:func:`load_pretrained` loads backbone weights into a model that may have attention the weights
do not know about: every backbone tensor must load (same key, same shape); only the parameters of
resattn's :class:`~resattn.layers.modulation.Modulation` modules (attention and gamma) may stay new.

This module sits below the model builders (they call it for ``pretrained=...``) and imports no
other resattn module than :mod:`resattn.layers.modulation`; :mod:`resattn.tools.weights` re-exports it next to
the checkpoint format.
"""
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn

from ..layers.modulation import Modulation

__all__ = ["TORCHVISION_WEIGHTS", "LoadReport", "CheckpointError", "load_pretrained", "read_checkpoint",
           "map_timm_attention_keys",
           "clean_state_dict"]

#: Names that :func:`load_pretrained` resolves to torchvision's ImageNet weights (``DEFAULT``).
TORCHVISION_WEIGHTS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

#: Prefixes added by wrappers: DistributedDataParallel / DataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

Source = Union[Mapping[str, torch.Tensor], str, os.PathLike]


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: keys copied into the model.
        missing: model keys the source did not have: the new attention/gamma parameters (and,
            with ``strict_backbone=False``, any other missing key).
        unexpected: source keys the model does not have (only with ``strict_backbone=False``).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = (f"loaded {len(self.loaded)} tensors; {len(self.missing)} missing (new), "
             f"{len(self.unexpected)} unexpected")
        if self.unexpected:
            s += f": {', '.join(self.unexpected[:5])}{' ...' if len(self.unexpected) > 5 else ''}"
        return s


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint, and why (``kind``):

    - ``'truncated'``: empty, or a zip/pickle cut off before its end (an interrupted write or copy);
    - ``'not-a-checkpoint'``: no PyTorch file at all (text, random bytes, another format);
    - ``'torchscript'``: a TorchScript archive (``torch.jit.save``), which holds a program, not
      weights to rebuild a model from;
    - ``'python-objects'``: a PyTorch pickle holding objects other than tensors and containers;
    - ``'wrong-architecture'``: a checkpoint whose tensors do not fit the model it is loaded into;
    - ``'unreadable'``: anything else torch could not read.
    """

    KINDS = ("truncated", "not-a-checkpoint", "torchscript", "python-objects",
             "wrong-architecture", "unreadable")

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


#: torch.save's legacy (non-zip) format opens with this number pickled as a 10-byte LONG1.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


def _sniff(path: Path) -> tuple[str, str]:
    """(kind, detail) of the file from its bytes, before torch reads it: ``'zip'``, ``'pickle'``
    or one of :attr:`CheckpointError.KINDS`."""
    import zipfile
    size = path.stat().st_size
    if size == 0:
        return "truncated", "the file is empty"
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format (or torch.jit.save's)
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            return "truncated", f"a zip archive without its end ({e}; {size} bytes)"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript", "a TorchScript archive"
        return "zip", ""
    if head[:1] == b"\x80":  # a pickle, protocol 2 or later (torch.save's legacy format)
        if head[2:14] == _LEGACY_MAGIC:
            return "pickle", ""
        return "not-a-checkpoint", ("a pickle that does not start with torch.save's magic number "
                                    "(not written by torch.save)")
    return "not-a-checkpoint", f"its first bytes are {head!r}, neither a zip archive nor a pickle"


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()
             and not ln.startswith("Check the documentation")]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def read_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (tensors, containers, numbers and strings only;
    no code runs while reading).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: (a ``ValueError``) the file is truncated, not a PyTorch file, a
            TorchScript archive, a pickle of other Python objects (only then does the message say
            how to load it when the file is trusted), or unreadable otherwise; ``kind`` says which.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    kind, detail = _sniff(path)
    if kind == "truncated":
        raise CheckpointError(f"{str(path)!r} is truncated: {detail}; it was cut off while being "
                              "written or copied", kind)
    if kind == "not-a-checkpoint":
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint: {detail}", kind)
    if kind == "torchscript":
        raise CheckpointError(f"{str(path)!r} is a TorchScript archive (torch.jit.save, for "
                              "example from `resattn export --format torchscript`), not a "
                              "checkpoint; load it with torch.jit.load", kind)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
        if not lines:  # the bytes are no pickle torch wrote (an unknown opcode, ...)
            raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint; its pickle cannot "
                                  f"be read ({_last_line(e)})", "not-a-checkpoint") from e
        raise CheckpointError(
            f"{str(path)!r} holds Python objects other than tensors, so it cannot be read with "
            f"weights_only=True ({lines[0]}). If you trust the file, load it with "
            "torch.load(path, weights_only=False) and pass its state_dict instead",
            "python-objects") from e
    except EOFError as e:
        raise CheckpointError(f"{str(path)!r} is truncated: its pickle stops early; it was cut "
                              "off while being written or copied", "truncated") from e
    except Exception as e:  # a damaged archive, ...
        raise CheckpointError(f"{str(path)!r} cannot be read as a PyTorch checkpoint "
                              f"({_last_line(e)})",
                              "unreadable") from e


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def clean_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The state_dict inside ``obj``: a state_dict itself, or a dict holding one under
    ``'state_dict'`` or ``'model'``; wrapper prefixes ``module.`` (DDP) and ``_orig_mod.``
    (torch.compile) are removed from every key.

    Raises:
        ValueError: ``obj`` holds no state_dict, or two keys become the same without prefixes.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        keys = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError("source holds no state_dict (a mapping of names to tensors, itself or "
                         f"under 'state_dict' or 'model'); found {keys}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        clean = _strip_prefixes(key)
        if clean in out:
            raise ValueError(f"state_dict keys {key!r} and another one both become {clean!r} "
                             "once the module./_orig_mod. prefixes are removed")
        out[clean] = value
    return out


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return weights.get_state_dict(progress=True)
    except Exception as e:  # URLError, socket errors, HTTP errors, partial downloads
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise RuntimeError(
            f"could not get torchvision's {weights} weights for {name!r}: downloading from "
            f"{weights.url} failed ({type(e).__name__}: {e}); offline, pass a local path "
            f"instead (load_pretrained(model, 'path/to/{name}.pth') or "
            f"create_model({name!r}, pretrained='path/to/{name}.pth')), or put "
            f"{Path(weights.url).name} in {cache}") from e


def _resolve_source(source: Source) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return clean_state_dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a state_dict, a checkpoint path or a model name "
                        f"({', '.join(TORCHVISION_WEIGHTS)}); got {type(source).__name__}")
    if Path(source).is_file():
        return clean_state_dict(read_checkpoint(source))
    name = str(source)
    name = name.split(":", 1)[1] if name.startswith("torchvision:") else name
    if name in TORCHVISION_WEIGHTS:
        return _torchvision_state_dict(name)
    raise ValueError(f"source={str(source)!r} is neither an existing checkpoint file nor a name "
                     f"with pretrained weights; allowed names: {', '.join(TORCHVISION_WEIGHTS)}")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def map_timm_attention_keys(state: Mapping[str, torch.Tensor], own: Mapping[str, Any]
                            ) -> dict[str, torch.Tensor]:
    """``state`` with timm's attention keys renamed to resattn's where the model has them.

    timm's ResNets with attention (``seresnet50``; ``resnet50`` built with
    ``block_args={'attn_layer': 'eca' | 'cbam' | ...}``) keep the attention module of block
    ``layerS.B`` at ``layerS.B.se``, after the branch's last norm. resattn's pattern ``branch``
    has it at the same place, wrapped in a gate (:class:`~resattn.layers.modulation.Modulation`):
    ``layerS.B.attn.attn``. A key is renamed only when the new name is one of ``own``'s and the
    old one is not, so the rest of the state_dict is left as it is."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own and ".se." in key:
            mapped = key.replace(".se.", ".attn.attn.", 1)
            if mapped in own and mapped not in state:
                key = mapped
        out[key] = value
    return out


def _attention_keys(model: nn.Module) -> set[str]:
    """state_dict keys that belong to resattn Modulation modules (attention and gamma)."""
    prefixes = [name + "." for name, m in model.named_modules() if isinstance(m, Modulation)]
    return {k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)}


def load_pretrained(model: nn.Module, source: Source, *, strict_backbone: bool = True
                    ) -> LoadReport:
    """Load backbone weights into ``model``, leaving its new attention parameters as they are.

    Args:
        model: a resattn model, or a converted torchvision/timm model.
        source: a state_dict; a path to a checkpoint (a state_dict, or a dict holding one under
            ``'state_dict'`` or ``'model'``, as resattn's own checkpoints); or ``'resnet18'``,
            ``'resnet34'``, ``'resnet50'``, ``'resnet101'``, ``'resnet152'`` for torchvision's
            ImageNet weights (``DEFAULT``; downloaded when not cached). Prefixes ``module.`` and
            ``_orig_mod.`` are removed.
        strict_backbone: when True (default) every model key outside the attention modules must
            be in the source and every source key in the model.

    timm's SE/ECA/CBAM ResNet weights load into the same resattn model with pattern ``branch``
    (``seresnet50`` into ``create_model('resnet50', pattern='branch', attn='se')``), their
    attention included: see :func:`map_timm_attention_keys`.

    Returns:
        :class:`LoadReport`. Backbone BatchNorm ``num_batches_tracked`` counters absent from
        the source (older checkpoints) are not reported; they keep their value.

    Raises:
        ValueError: a shape mismatch (always; names the key and both shapes); with
            ``strict_backbone``, a missing non-attention key or an unexpected key.
        RuntimeError: torchvision weights could not be downloaded (offline); the message
            suggests a local path.
        FileNotFoundError, TypeError: a bad ``source``.
    """
    state = _resolve_source(source)
    own = model.state_dict()
    state = map_timm_attention_keys(state, own)
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"shape mismatch for {key!r}: the source has {tuple(value.shape)}, the model "
                f"{tuple(own[key].shape)} (to use another head or input size, remove the key "
                "from the state_dict and load with strict_backbone=False)")
    attention = _attention_keys(model)
    missing = [k for k in own if k not in state
               and (k in attention or not k.endswith("num_batches_tracked"))]
    unexpected = [k for k in state if k not in own]
    if strict_backbone:
        backbone_missing = [k for k in missing if k not in attention]
        problems = []
        if backbone_missing:
            problems.append(f"missing backbone keys {_preview(backbone_missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_preview(unexpected)}")
        if problems:
            raise ValueError(f"source does not match the model's backbone: {'; '.join(problems)}"
                             " (only attention/gamma parameters may be missing; pass "
                             "strict_backbone=False to load what matches)")
    loadable = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(loadable, strict=False)
    return LoadReport(loaded=list(loadable), missing=missing, unexpected=unexpected)


def _preview(keys: list[str], n: int = 6) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"[{', '.join(repr(k) for k in keys[:n])}{more}]"
