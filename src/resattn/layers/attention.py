"""Attention modules by name, built through timm's attention factory.

Every module named here keeps the shape of its input: given z of shape (N, C, H, W) it returns a
tensor of the same shape, for most of them z * m(z) with a mask m(z) in [0, 1] (the exceptions are
``gca``, which adds a global-context term instead of scaling, and ``ese``/``strip``/``ela`` whose
masks come from hard or learned gates; all keep the shape). The modules themselves are timm's
(``timm.layers.create_attn``); this file only resolves names, checks arguments before timm sees
them, and turns timm's asserts into ``ValueError``s that name the argument.

Sources (each module's paper):
    se     Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
    ese    Lee & Park, "CenterMask" (effective SE), CVPR 2020.
    eca    Wang et al., "ECA-Net", CVPR 2020; ``ecam`` is timm's ECA with an MLP, ``ceca`` with
           circular padding.
    ge     Hu et al., "Gather-Excite", NeurIPS 2018.
    gc     Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation", 2019 (``gc``: scale
           fusion, ``gca``: additive fusion).
    cbam   Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018 (``lcbam``: timm's
           light variant).
    coord  Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021
           (``scoord``: timm's simplified variant).
    ela    Xu & Wan, "ELA: Efficient Local Attention", 2024.
    strip  timm's strip attention (pooled rows and columns).
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Optional, Union

import torch.nn as nn
from timm.layers import ConvMlp, GatherExcite, get_act_layer, make_divisible
from timm.layers.create_attn import get_attn

__all__ = ["ATTN_NAMES", "AttnSpec", "create_attention", "validate_attn", "attn_name"]

#: Shape-keeping attention types of timm's factory that resattn supports in every pattern.
ATTN_NAMES: tuple[str, ...] = (
    "se", "ese", "eca", "ecam", "ceca", "ge", "gc", "gca",
    "cbam", "lcbam", "coord", "scoord", "ela", "strip",
)

#: What may be passed as an attention spec: a name, a factory ``channels -> nn.Module``, or None.
AttnSpec = Union[str, Callable[[int], nn.Module], None]

_KERNEL_ARGS = ("kernel_size", "spatial_kernel_size")
_RATIO_ARGS = ("rd_ratio", "se_factor")


def _gather_excite(channels: int, *, use_mlp: bool = True, rd_ratio: float = 1.0 / 16,
                   rd_channels: Optional[int] = None, rd_divisor: int = 1,
                   act_layer: Any = nn.ReLU, **kwargs: Any) -> nn.Module:
    """timm's GatherExcite, with its MLP attached here: timm 1.0.31 passes ``device``/``dtype``
    positionally to ``ConvMlp`` and fails whenever ``use_mlp=True`` (its default). Same module, same
    parameters as timm intends."""
    if kwargs.get("extra_params"):
        raise ValueError("attn='ge' with extra_params=True is not supported (timm 1.0.31 cannot "
                         "build it); use extent > 0 without extra_params")
    module = GatherExcite(channels, use_mlp=False, rd_ratio=rd_ratio, rd_channels=rd_channels,
                          rd_divisor=rd_divisor, act_layer=act_layer, **kwargs)
    if use_mlp:
        rd = rd_channels or make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        module.mlp = ConvMlp(channels, rd, act_layer=get_act_layer(act_layer))
    return module


def _eca(name: str) -> Callable[..., nn.Module]:
    """timm's ECA/CECA, honouring an explicit ``kernel_size``: timm derives the kernel from the
    channel count (gamma, beta) and ignores ``kernel_size`` whenever ``channels`` is given."""
    cls = get_attn(name)

    def build(channels: int, kernel_size: Optional[int] = None, **kwargs: Any) -> nn.Module:
        if kernel_size is None:
            return cls(channels, **kwargs)
        if name == "ecam" or kwargs.get("use_mlp"):
            raise ValueError(f"attn={name!r} with use_mlp derives its kernel size from channels; "
                             "set gamma/beta instead of kernel_size")
        return cls(None, kernel_size=kernel_size, **kwargs)
    return build


def _timm_class(name: str) -> Any:
    if name == "ge":
        return _gather_excite
    if name in ("eca", "ecam", "ceca"):
        return _eca(name)
    return get_attn(name)


def _timm_signature_class(name: str) -> Any:
    return get_attn(name)


def _accepted_kwargs(name: str) -> list[str]:
    cls = _timm_signature_class(name)
    fn = cls.func if isinstance(cls, functools.partial) else cls
    params = inspect.signature(fn.__init__).parameters
    fixed = set(cls.keywords) if isinstance(cls, functools.partial) else set()
    return [
        p for p, v in params.items()
        if p not in ("self", "channels", "device", "dtype") and p not in fixed
        and v.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]


def validate_attn(attn: AttnSpec, kwargs: Optional[dict] = None, *, arg: str = "attn") -> None:
    """Check an attention spec and its keyword arguments without building anything.

    Args:
        attn: a name from :data:`ATTN_NAMES` (case-insensitive), a callable ``channels -> nn.Module``,
            or ``None`` (no attention).
        kwargs: keyword arguments for the timm module (``rd_ratio``, ``kernel_size``, ...).
        arg: the argument name to use in error messages (``attn``, ``skip_attn``, ``res_attn``).

    Raises:
        ValueError: unknown name (the message lists :data:`ATTN_NAMES`), a keyword the module does not
            take, ``rd_ratio``/``se_factor`` not a finite number > 0, ``rd_channels`` < 1,
            ``rd_divisor`` not an integer >= 1, an odd or negative ``extent`` (``ge``), or a
            ``kernel_size``/``spatial_kernel_size`` that is not a positive odd integer (a bool is
            refused: ``True`` would build a 1x1 kernel).
        TypeError: ``attn`` is neither a string, a callable nor None.
    """
    kwargs = dict(kwargs or {})
    if attn is None:
        if kwargs:
            raise ValueError(f"{arg}=None takes no attention arguments, got {sorted(kwargs)}")
        return
    if isinstance(attn, str):
        key = attn.lower()
        if key not in ATTN_NAMES:
            raise ValueError(
                f"{arg}={attn!r} is not a supported attention type; allowed: "
                f"{', '.join(ATTN_NAMES)}, a callable channels -> nn.Module, or None")
        accepted = _accepted_kwargs(key)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"{arg}={key!r} does not take {unknown}; it takes: {', '.join(accepted)}")
    elif not callable(attn):
        raise TypeError(
            f"{arg} must be an attention name ({', '.join(ATTN_NAMES)}), a callable "
            f"channels -> nn.Module, or None; got {type(attn).__name__}")
    for k in _RATIO_ARGS:
        v = kwargs.get(k)
        if k in kwargs and (isinstance(v, bool) or not isinstance(v, (int, float))
                            or not math.isfinite(v) or not v > 0):
            raise ValueError(f"{arg} argument {k}={v!r} must be > 0 and finite (a number)")
    if "extent" in kwargs:
        v = kwargs["extent"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v > 0 and v % 2):
            raise ValueError(f"{arg} argument extent={v!r} is not allowed; allowed: 0 (global "
                             "gather) or an even integer >= 2 (gather stride)")
    if "rd_channels" in kwargs and kwargs["rd_channels"] is not None and kwargs["rd_channels"] < 1:
        raise ValueError(
            f"{arg} argument rd_channels={kwargs['rd_channels']!r} would give a hidden width < 1; "
            "it must be >= 1 (or None to derive it from rd_ratio)")
    if "rd_divisor" in kwargs and (isinstance(kwargs["rd_divisor"], bool)
                                   or not isinstance(kwargs["rd_divisor"], int)
                                   or kwargs["rd_divisor"] < 1):
        raise ValueError(f"{arg} argument rd_divisor={kwargs['rd_divisor']!r} must be >= 1")
    for k in _KERNEL_ARGS:
        if k in kwargs and kwargs[k] is not None:
            v = kwargs[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % 2 == 0:
                raise ValueError(
                    f"{arg} argument {k}={v!r} must be a positive odd integer (1, 3, 5, 7, ...) so "
                    "that the attention map keeps the input's height and width")


def create_attention(attn: AttnSpec, channels: int, *, arg: str = "attn", **kwargs: Any
                     ) -> Optional[nn.Module]:
    """Build one attention module for ``channels`` channels.

    Args:
        attn: a name from :data:`ATTN_NAMES`, a callable ``channels -> nn.Module`` (called as
            ``attn(channels, **kwargs)``), or None.
        channels: number of input channels C (>= 1). Input and output are (N, C, H, W).
        arg: argument name used in error messages.
        **kwargs: passed to the timm module (for example ``rd_ratio=1/16``, ``kernel_size=5``).

    Returns:
        The module, or None when ``attn`` is None.

    Raises:
        ValueError: see :func:`validate_attn`; also ``channels`` < 1, or a callable that does not
            return an ``nn.Module``.
    """
    validate_attn(attn, kwargs, arg=arg)
    if attn is None:
        return None
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels={channels!r} must be an integer >= 1")
    if isinstance(attn, str):
        module = _timm_class(attn.lower())(channels, **kwargs)
    else:
        module = attn(channels, **kwargs)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"{arg} callable must return an nn.Module for channels={channels}, "
                f"got {type(module).__name__}")
    return module


def attn_name(attn: AttnSpec) -> str:
    """A short printable name for an attention spec (``'none'`` for None)."""
    if attn is None:
        return "none"
    if isinstance(attn, str):
        return attn.lower()
    return getattr(attn, "__name__", type(attn).__name__)
