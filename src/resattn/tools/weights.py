"""Pretrained weights and the shared checkpoint format.

:func:`load_pretrained` (from :mod:`resattn.models._pretrained`, re-exported here) loads backbone
weights into a model that may have attention the weights do not know about: every backbone tensor
must load (same key, same shape); only the parameters of resattn's
:class:`~resattn.layers.modulation.Modulation` modules (attention and gamma) may stay new.

The checkpoint written by :func:`save_checkpoint` (and by training) is a dict::

    {"format": "resattn-checkpoint/1",
     "arch": "cifar_resnet20" | "torchvision:resnet50" | "timm:resnet50",
     "model_kwargs": {...},            # JSON-able builder arguments
     "convert_kwargs": {...} | None,   # JSON-able arguments of resattn.tools.convert.convert
     "state_dict": {...},
     ...}                              # training adds "optimizer", "epoch", ...

:func:`load_model` rebuilds such a model (architecture, then conversion, then weights, strictly).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn

# Layering (no import cycle): layers <- models (builders, _pretrained) <- convert <- weights.
from .convert import FunctionChangeWarning, convert
from ..models import create_model, is_model, list_models
# Re-exported: the checkpoint API is read from here.
from ..models._pretrained import (TORCHVISION_WEIGHTS, CheckpointError, LoadReport, _preview,
                                 clean_state_dict, load_pretrained, read_checkpoint)

__all__ = ["CHECKPOINT_FORMAT", "TORCHVISION_WEIGHTS", "LoadReport", "CheckpointError",
           "check_state_dict", "load_pretrained",
           "read_checkpoint", "clean_state_dict", "parse_arch", "build_model", "make_checkpoint",
           "save_checkpoint", "load_model"]

CHECKPOINT_FORMAT = "resattn-checkpoint/1"

# --------------------------------------------------------------------------------------------
# architectures and checkpoints
# --------------------------------------------------------------------------------------------

def parse_arch(arch: str) -> tuple[str, str]:
    """Split an architecture spec into (library, name): ``'cifar_resnet20'`` -> ``('resattn',
    'cifar_resnet20')``, ``'torchvision:resnet50'``, ``'timm:resnet50'``; the names resattn
    registers in timm (``'resattn_resnet50_dual'``) need no ``timm:`` prefix.

    Raises:
        ValueError: unknown library prefix or model name (the message lists what is allowed).
    """
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"arch={arch!r} must be a non-empty string")
    library, sep, name = arch.partition(":")
    if not sep:
        library, name = "resattn", arch
        if arch.startswith("resattn_") and not is_model(arch):  # resattn's timm registrations
            library = "timm"
    if library == "resattn":
        if not is_model(name):
            raise ValueError(f"arch={arch!r}: {name!r} is not a resattn model; allowed: "
                             f"{', '.join(list_models())}, or 'torchvision:NAME', 'timm:NAME'")
    elif library == "torchvision":
        import torchvision
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"arch={arch!r}: {name!r} is not a torchvision classification model "
                             "(see torchvision.models.list_models())")
    elif library == "timm":
        import timm
        if not timm.is_model(name):
            raise ValueError(f"arch={arch!r}: {name!r} is not a timm model "
                             "(see timm.list_models())")
    else:
        raise ValueError(f"arch={arch!r}: the prefix {library!r} is not allowed; allowed: a "
                         "resattn model name, 'torchvision:NAME' or 'timm:NAME'")
    return library, name


def build_model(arch: str, model_kwargs: Optional[Mapping[str, Any]] = None,
                convert_kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Build ``arch`` with random weights (nothing is downloaded), then convert it when
    ``convert_kwargs`` is given (the function-change warning is not repeated here).

    The model records ``resattn_arch`` and ``resattn_model_kwargs`` (and, once converted,
    ``resattn_convert_kwargs``), which :func:`make_checkpoint` uses when not given."""
    library, name = parse_arch(arch)
    kwargs = dict(model_kwargs or {})
    for key in ("pretrained", "weights"):
        if kwargs.get(key):
            raise ValueError(f"model_kwargs[{key!r}]={kwargs[key]!r}: build_model never loads "
                             "weights; use load_pretrained")
        kwargs.pop(key, None)
    if library == "resattn":
        model = create_model(name, **kwargs)
    elif library == "torchvision":
        import torchvision
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    else:
        import timm
        model = timm.create_model(name, pretrained=False, **kwargs)
    if convert_kwargs is not None:  # {} means: converted with the defaults
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FunctionChangeWarning)
            convert(model, **dict(convert_kwargs))
    model.resattn_arch = arch
    model.resattn_model_kwargs = dict(model_kwargs or {})
    return model


def _json_checked(name: str, value: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    if value is None:
        return None
    value = dict(value)
    for key, v in value.items():
        if callable(v):
            what = ("a callable placement cannot be saved; give stage numbers, e.g. "
                    "stages=[3, 4]") if key == "stages" else "callables cannot be saved"
            raise ValueError(f"{name}[{key!r}]={v!r}: {what} (a checkpoint keeps JSON-able "
                             "options only)")
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}[{key!r}]={v!r} is not JSON-able ({e}); a checkpoint keeps "
                             "JSON-able options only") from e
    return json.loads(json.dumps(value))  # tuples become lists, as after a round trip


def make_checkpoint(model: nn.Module, *, arch: Optional[str] = None,
                    model_kwargs: Optional[Mapping[str, Any]] = None,
                    convert_kwargs: Optional[Mapping[str, Any]] = None,
                    **extra: Any) -> dict[str, Any]:
    """The checkpoint dict for ``model`` (see the module docstring).

    Args:
        model: the model (its ``state_dict`` is stored, wrapper prefixes removed).
        arch: ``'cifar_resnet20'``, ``'torchvision:resnet50'``, ``'timm:resnet50'``, ...; by
            default the one recorded by :func:`build_model`/:func:`load_model`
            (``model.resattn_arch``), else required.
        model_kwargs: builder arguments (``num_classes``, ``pattern``, ...), JSON-able; by
            default those recorded by :func:`build_model` (``model.resattn_model_kwargs``).
        convert_kwargs: arguments of :func:`resattn.tools.convert.convert`; by default those recorded
            on a converted model (``model.resattn_convert_kwargs``), else None.
        **extra: more entries (``optimizer``, ``epoch``, ...). Keep them to tensors, containers,
            numbers and strings so that the file loads with ``weights_only=True``.

    Raises:
        ValueError: a bad ``arch``; options that are not JSON-able (a callable ``stages`` or
            attention factory); an ``extra`` key that would replace a format key.
    """
    if arch is None:
        arch = getattr(model, "resattn_arch", None)
        if arch is None:
            raise ValueError("arch is required (for example 'cifar_resnet20', "
                             "'torchvision:resnet50'): this model was not built by load_model")
        if model_kwargs is None:
            model_kwargs = getattr(model, "resattn_model_kwargs", None)
    parse_arch(arch)
    if convert_kwargs is None:
        convert_kwargs = getattr(model, "resattn_convert_kwargs", None)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "model_kwargs": _json_checked("model_kwargs", model_kwargs) or {},
        "convert_kwargs": _json_checked("convert_kwargs", convert_kwargs),
        "state_dict": clean_state_dict(model.state_dict()),
    }
    clash = sorted(set(extra) & set(ckpt))
    if clash:
        raise ValueError(f"extra entries {clash} would replace the checkpoint's own keys")
    ckpt.update(extra)
    return ckpt


def save_checkpoint(model: nn.Module, path: Union[str, os.PathLike], *,
                    arch: Optional[str] = None, model_kwargs: Optional[Mapping[str, Any]] = None,
                    convert_kwargs: Optional[Mapping[str, Any]] = None, **extra: Any) -> Path:
    """Write :func:`make_checkpoint`'s dict to ``path`` (atomically: a temporary file, then a
    rename) and return the path. Parent folders are created."""
    ckpt = make_checkpoint(model, arch=arch, model_kwargs=model_kwargs,
                           convert_kwargs=convert_kwargs, **extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor],
                     path: Union[str, os.PathLike], arch: Optional[str] = None) -> None:
    """Check that ``state`` (read from ``path``) has exactly ``model``'s keys and shapes.

    Raises:
        CheckpointError: ``kind='wrong-architecture'``, naming the first mismatches.
    """
    own = model.state_dict()
    what = f"the rebuilt {arch!r}" if arch else "the model"
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(f"{str(path)!r} is a checkpoint of another architecture: shape "
                                  f"mismatch for {key!r}: checkpoint {tuple(value.shape)}, "
                                  f"{what} {tuple(own[key].shape)}", "wrong-architecture")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{str(path)!r} is a checkpoint of another architecture: it does "
                              f"not match {what}: missing {_preview(missing)}, unexpected "
                              f"{_preview(unexpected)}", "wrong-architecture")


def load_model(spec: Union[str, os.PathLike], *, map_location: Any = "cpu",
               **model_kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A model from an architecture spec or a resattn checkpoint.

    Args:
        spec: a checkpoint path (a file, or a run folder holding ``checkpoint.pt``): rebuild
            ``arch`` with ``model_kwargs``, re-apply
            ``convert(**convert_kwargs)`` when present, then load the state_dict strictly.
            Otherwise an architecture spec (``'cifar_resnet20'``, ``'torchvision:resnet50'``,
            ``'timm:resnet50'``) built with random weights and ``**model_kwargs``.
        map_location: where the checkpoint's tensors go when read.

    Returns:
        ``(model, meta)``: meta is the checkpoint without its state_dict (``format``, ``arch``,
        ``model_kwargs``, ``convert_kwargs``, and what training added), plus ``path``.

    Raises:
        ValueError: not a resattn checkpoint; a spec that is neither a file nor a known
            architecture; weights that do not match the rebuilt model (key or shape).
    """
    path = Path(spec)
    if path.is_dir():  # a run folder (resattn train/compare): its checkpoint
        if not (path / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{str(spec)!r} is a folder without checkpoint.pt (a run "
                                    "folder holds one after its first epoch)")
        path = path / "checkpoint.pt"
    if not path.is_file():
        if path.suffix in (".pt", ".pth", ".ckpt", ".bin") or os.sep in str(spec):
            raise FileNotFoundError(f"checkpoint {str(spec)!r} does not exist (an architecture "
                                    "spec is a name: 'cifar_resnet20', 'torchvision:resnet50')")
        model = build_model(str(spec), model_kwargs)
        meta = {"format": CHECKPOINT_FORMAT, "arch": str(spec),
                "model_kwargs": dict(model_kwargs), "convert_kwargs": None, "path": None}
        return model, meta
    if model_kwargs:
        raise ValueError(f"load_model({str(spec)!r}): keyword arguments {sorted(model_kwargs)} "
                         "apply to an architecture spec only; a checkpoint carries its own")
    ckpt = read_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{str(path)!r} is not a {CHECKPOINT_FORMAT} checkpoint (format: "
                         f"{found!r}); for a plain state_dict build the model and use "
                         "load_pretrained(model, path)")
    model = build_model(ckpt["arch"], ckpt.get("model_kwargs"), ckpt.get("convert_kwargs"))
    state = clean_state_dict(ckpt["state_dict"])
    check_state_dict(model, state, path, ckpt["arch"])
    model.load_state_dict(state, strict=True)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["path"] = str(path)
    return model, meta
