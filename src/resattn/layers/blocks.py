"""Residual blocks with attention in one of the four placements ("patterns").

x: block input (N, C_in, H, W); F: the residual branch; skip: identity or projection; act: ReLU.

    none    y = act(skip(x)      + F(x))
    branch  y = act(skip(x)      + A(F(x)))         SE-ResNet's place (Hu et al., 2018)
    post    y = act(A(skip(x)    + F(x)))           one gate on the sum
    pre     y = act(skip(x)      + F(A(x)))         input conditioning of the branch
    dual    y = act(A_s(skip(x)) + A_r(F(x)))       one gate per path (skip-aware fusion)

Each A is a :class:`~resattn.layers.modulation.Modulation` (``gate`` or ``near_identity``). The bodies follow
torchvision's ``BasicBlock`` and ``Bottleneck`` (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016; attribute names match torchvision so its ``state_dict`` loads), and the
parameter-free option-A shortcut of the same paper for CIFAR networks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import GroupNorm, LayerNorm2d, create_act_layer

from .attention import AttnSpec, validate_attn
from .modulation import (FusedSwitch, Modulation, add_terms, eager_only, fused_enabled,
                         validate_modulation)

__all__ = [
    "PATTERNS", "NORM_LAYERS", "SHORTCUTS", "PATH_NAMES", "PathConfig", "AttentionConfig",
    "ATTENTION_OPTIONS", "resolve_pattern", "get_norm_layer", "attention_paths", "ResidualBlock",
    "BasicBlock", "Bottleneck", "ShortcutA", "conv1x1", "conv3x3",
]

PATTERNS: tuple[str, ...] = ("none", "branch", "post", "pre", "dual")
NORM_LAYERS: tuple[str, ...] = ("batchnorm", "groupnorm", "layernorm")
SHORTCUTS: tuple[str, ...] = ("A", "B")

NormSpec = Union[str, Callable[[int], nn.Module]]
ActSpec = Union[str, Callable[..., nn.Module]]


def resolve_pattern(pattern: Union[str, int]) -> str:
    """Map a pattern name or number (0-4) to its name.

    Raises:
        ValueError: anything else; the message lists the names and numbers.
    """
    if isinstance(pattern, int) and not isinstance(pattern, bool) and 0 <= pattern < len(PATTERNS):
        return PATTERNS[pattern]
    if isinstance(pattern, str) and pattern.lower() in PATTERNS:
        return pattern.lower()
    if isinstance(pattern, str) and pattern.isdigit():
        return resolve_pattern(int(pattern))
    allowed = ", ".join(f"{i}={p}" for i, p in enumerate(PATTERNS))
    raise ValueError(f"pattern={pattern!r} is not allowed; allowed: {allowed}")


#: The gated paths a block can have: ``attn`` (the one path of patterns 1-3), and ``skip`` and
#: ``res`` (the two paths of ``dual``).
PATH_NAMES: tuple[str, ...] = ("attn", "skip", "res")


@dataclass(frozen=True)
class PathConfig:
    """The options of one gated path z -> z * g(z): attention type, modulation and its gamma.

    :meth:`AttentionConfig.path` gives one per path; blocks, models and ``convert`` read a path's
    options from it instead of from prefixed names. ``name`` is ``attn``, ``skip`` or ``res``:
    the keyword names of :class:`AttentionConfig` are ``<name>_<option>`` for ``skip`` and
    ``res`` and the bare option for ``attn`` (``skip_gamma_max``, ``gamma_max``); errors name them.
    """

    name: str
    attn: AttnSpec
    modulation: str
    gamma_init: float = 0.0
    gamma_max: Optional[float] = None
    gamma_shape: str = "scalar"
    attn_kwargs: Optional[dict[str, Any]] = None

    @property
    def prefix(self) -> str:
        """``''``, ``'skip_'`` or ``'res_'``: the prefix of this path's keyword names."""
        return "" if self.name == "attn" else f"{self.name}_"

    def validate(self) -> "PathConfig":
        """Check the modulation options (:func:`resattn.layers.modulation.validate_modulation`).

        Raises:
            ValueError: the message names the keyword (``skip_gamma_init=...``).
        """
        validate_modulation(self.modulation, self.gamma_init, self.gamma_max, self.gamma_shape,
                            prefix=self.prefix)
        return self

    def build(self, channels: int) -> Modulation:
        """The :class:`Modulation` of this path on ``channels`` channels."""
        return Modulation(self.attn, channels, self.modulation, gamma_init=self.gamma_init,
                          gamma_max=self.gamma_max, gamma_shape=self.gamma_shape,
                          attn_kwargs=self.attn_kwargs, arg=f"{self.prefix}attn", prefix=self.prefix)

    def function_changes(self) -> list[str]:
        """What makes this path differ from the identity at initialisation (``gate``
        modulation, or a near-identity gamma that does not start at 0), as keyword=value."""
        if self.attn is None:
            return []
        if self.modulation == "gate":
            return [f"{self.prefix}modulation='gate'"]
        if self.gamma_init != 0:
            return [f"{self.prefix}gamma_init={self.gamma_init!r}"]
        return []


@dataclass(frozen=True)
class AttentionConfig:
    """Where attention goes in a block and how each gated path is modulated.

    Patterns 1-3 (``branch``, ``post``, ``pre``) use ``attn``/``modulation``/``gamma_*``; their
    default is the standard form: ``gate`` with SE (``branch`` + ``se`` + ``gate`` is SE-ResNet).

    ``dual`` uses a separate spec per path. Its defaults follow the stability rules of the design
    notes: both paths ``near_identity`` with gamma starting at 0 (the block starts as the plain
    residual block); the skip gamma bounded by ``skip_gamma_max=0.25`` so the identity gain stays
    within [0.75, 1.25] and can never close; a light gate on the skip (``eca``, a few parameters
    per block) and a richer one on the residual (``cbam``, channel + spatial).

    ``gamma_shape`` is ``'scalar'`` or ``'channel'`` for every gamma. ``attn_kwargs`` go to every
    attention module; ``skip_attn_kwargs``/``res_attn_kwargs`` replace them on one dual path.

    Only the dual skip is bounded by default. ``gamma_max=None`` and ``res_gamma_max=None`` leave
    gamma free: the path gain 1 + gamma * m(z) changes sign once gamma * m < -1 (a tester saw the
    residual gamma reach -2.2 within 30 steps on noisy data), so the path then inverts its input
    where the mask is high. Set ``res_gamma_max`` / ``gamma_max`` (for example 1.0: gain in
    [0, 2]) to keep the sign; ``benchmarks/gamma_bound.py`` measures both on noisy labels.
    """

    pattern: str = "none"
    attn: AttnSpec = "se"
    modulation: str = "gate"
    gamma_init: float = 0.0
    gamma_max: Optional[float] = None
    skip_attn: AttnSpec = "eca"
    res_attn: AttnSpec = "cbam"
    skip_modulation: str = "near_identity"
    res_modulation: str = "near_identity"
    skip_gamma_init: float = 0.0
    res_gamma_init: float = 0.0
    skip_gamma_max: Optional[float] = 0.25
    res_gamma_max: Optional[float] = None
    gamma_shape: str = "scalar"
    attn_kwargs: Optional[dict[str, Any]] = None
    skip_attn_kwargs: Optional[dict[str, Any]] = None
    res_attn_kwargs: Optional[dict[str, Any]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", resolve_pattern(self.pattern))
        # every path is checked; attention keyword arguments only on the paths the pattern uses
        used = self.paths()
        for name in PATH_NAMES:
            path = self.path(name).validate()
            validate_attn(path.attn, path.attn_kwargs if name in used or path.attn is None else None,
                          arg=f"{path.prefix}attn")

    def _path_kwargs(self, path: str) -> Optional[dict[str, Any]]:
        own = self.skip_attn_kwargs if path == "skip" else self.res_attn_kwargs
        spec = self.skip_attn if path == "skip" else self.res_attn
        if own is not None or spec is None:
            return own
        return self.attn_kwargs

    def with_pattern(self, pattern: Union[str, int]) -> "AttentionConfig":
        """The same options with another pattern (used for blocks outside the placement)."""
        return replace(self, pattern=pattern)

    def path(self, name: str) -> PathConfig:
        """The options of one path, ``'attn'``, ``'skip'`` or ``'res'``, as a :class:`PathConfig`
        (whether or not the pattern uses it; :meth:`paths` gives the used ones).

        Raises:
            ValueError: ``name`` not in :data:`PATH_NAMES`.
        """
        if name == "attn":
            return PathConfig("attn", self.attn, self.modulation, self.gamma_init, self.gamma_max,
                              self.gamma_shape, self.attn_kwargs)
        if name == "skip":
            return PathConfig("skip", self.skip_attn, self.skip_modulation, self.skip_gamma_init,
                              self.skip_gamma_max, self.gamma_shape, self._path_kwargs("skip"))
        if name == "res":
            return PathConfig("res", self.res_attn, self.res_modulation, self.res_gamma_init,
                              self.res_gamma_max, self.gamma_shape, self._path_kwargs("res"))
        raise ValueError(f"path={name!r} is not allowed; allowed: {', '.join(PATH_NAMES)}")

    def paths(self) -> dict[str, PathConfig]:
        """The paths this pattern uses: none for ``none``, ``attn`` for patterns 1-3, ``skip``
        and ``res`` for ``dual``."""
        names = {"none": (), "dual": ("skip", "res")}.get(self.pattern, ("attn",))
        return {name: self.path(name) for name in names}

    def modulation_for(self, path: str, channels: int) -> Modulation:
        """Build the :class:`Modulation` of one path: ``'attn'``, ``'skip'`` or ``'res'``."""
        return self.path(path).build(channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain-value dictionary (callables shown by name), for logs and reports."""
        d = asdict(self)
        for k in ("attn", "skip_attn", "res_attn"):
            if d[k] is not None and not isinstance(d[k], str):
                d[k] = getattr(d[k], "__name__", repr(d[k]))
        return d


#: The keyword names of :class:`AttentionConfig`: what ``create_model``, ``convert`` and study
#: files accept as attention options.
ATTENTION_OPTIONS: tuple[str, ...] = tuple(AttentionConfig.__dataclass_fields__)


def get_norm_layer(norm_layer: NormSpec) -> Callable[[int], nn.Module]:
    """Resolve ``norm_layer`` to a callable ``channels -> nn.Module``.

    ``'batchnorm'``: ``nn.BatchNorm2d``. ``'groupnorm'``: timm's ``GroupNorm`` with
    gcd(C, 32) groups, at most C/2 (32 groups for C in 64, 128, ...; 8 for C = 16).
    ``'layernorm'``: timm's channels-first ``LayerNorm2d`` (normalises over C at each position).
    A callable (for example ``nn.BatchNorm2d`` or ``functools.partial(nn.GroupNorm, 4)``... taking
    the channel count) is returned as is.

    Raises:
        ValueError: an unknown name; the message lists :data:`NORM_LAYERS`.
    """
    if callable(norm_layer) and not isinstance(norm_layer, str):
        return norm_layer
    key = str(norm_layer).lower().replace("_", "")
    if key in ("batchnorm", "batchnorm2d", "bn"):
        return nn.BatchNorm2d
    if key in ("groupnorm", "gn"):
        return lambda c: GroupNorm(c, num_groups=min(math.gcd(c, 32), max(1, c // 2)))
    if key in ("layernorm", "layernorm2d", "ln"):
        return LayerNorm2d
    raise ValueError(f"norm_layer={norm_layer!r} is not allowed; allowed: {', '.join(NORM_LAYERS)} "
                     "or a callable channels -> nn.Module")


def _act(act_layer: ActSpec) -> nn.Module:
    """An activation module, in place where the type allows it."""
    if act_layer is None or act_layer == "":
        raise ValueError(f"act_layer={act_layer!r} is not a known activation (for example 'relu', "
                         "'silu', 'gelu', or an nn.Module class)")
    try:
        return create_act_layer(act_layer, inplace=True)
    except (KeyError, AssertionError, TypeError) as e:
        raise ValueError(f"act_layer={act_layer!r} is not a known activation (for example 'relu', "
                         "'silu', 'gelu', or an nn.Module class)") from e


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Parameter-free shortcut of He et al. 2016 ("option A"): subsample by ``stride`` and pad the
    new channels with zeros. (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_planes} -> {out_planes})")
        self.stride = stride
        self.pad = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad}"


def make_shortcut(in_planes: int, out_planes: int, stride: int, shortcut: str,
                  norm_layer: Callable[[int], nn.Module]) -> Optional[nn.Module]:
    """The skip path: None (identity) when shapes match, else option A or B (1x1 conv + norm)."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r} is not allowed; allowed: {', '.join(SHORTCUTS)} "
                         "(A: parameter-free zero padding, B: 1x1 projection)")
    if stride == 1 and in_planes == out_planes:
        return None
    if shortcut == "A":
        return ShortcutA(in_planes, out_planes, stride)
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), norm_layer(out_planes))


def attention_paths(config: AttentionConfig, in_planes: int, out_planes: int
                    ) -> dict[str, Modulation]:
    """The gated paths of one block, by attribute name (identity where the pattern has none).

    ``attn``: after F (``branch``), on the sum (``post``), both on C_out; before F on C_in (``pre``).
    ``skip_attn``, ``res_attn``: the two paths of ``dual``, on C_out.
    """
    p = config.pattern
    paths = {"attn": Modulation(None, 1), "skip_attn": Modulation(None, 1),
             "res_attn": Modulation(None, 1)}
    if p in ("branch", "post"):
        paths["attn"] = config.modulation_for("attn", out_planes)
    elif p == "pre":
        paths["attn"] = config.modulation_for("attn", in_planes)
    elif p == "dual":
        paths["skip_attn"] = config.modulation_for("skip", out_planes)
        paths["res_attn"] = config.modulation_for("res", out_planes)
    return paths


class ResidualBlock(FusedSwitch, nn.Module):
    """Base class: skip path, attention placement and output activation; subclasses define F.

    Args:
        in_planes: input channels C_in.
        planes: branch width; the block outputs ``planes * expansion`` channels.
        stride: stride of the block (on the 3x3 convolution and the projection).
        config: :class:`AttentionConfig` (pattern, attention, modulation, gamma).
        shortcut: ``'B'`` (1x1 projection when the shape changes) or ``'A'`` (zero padding).
        norm_layer: name from :data:`NORM_LAYERS` or a callable ``channels -> nn.Module``.
        act_layer: activation name or class (applied in place).
        groups, base_width: grouped 3x3 convolution options (Bottleneck only), as torchvision.

    Shape:
        (N, C_in, H, W) -> (N, planes * expansion, ceil(H / stride), ceil(W / stride)).

    Attributes:
        attn: modulation on the one gated path of patterns 1-3 (identity otherwise).
        skip_attn, res_attn: modulations of the two paths of ``dual`` (identity otherwise).
        fused: fold the block's sum into its gated paths (:meth:`combine_fused`); True at
            construction, changed with :meth:`set_fused` (which sets its paths too).
    """

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 config: Optional[AttentionConfig] = None, *, shortcut: str = "B",
                 norm_layer: NormSpec = "batchnorm", act_layer: ActSpec = "relu",
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        for name, v in (("in_planes", in_planes), ("planes", planes), ("stride", stride)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        config = config or AttentionConfig()
        self.stride = stride
        out_planes = planes * self.expansion
        norm = get_norm_layer(norm_layer)
        self._build_residual(in_planes, planes, stride, norm, act_layer, groups, base_width)
        self.downsample = make_shortcut(in_planes, out_planes, stride, shortcut, norm)
        self.relu = _act(act_layer)
        self.drop_path = nn.Identity()  # stochastic depth on the residual term (set by ResNet)
        self.set_attention(config, attention_paths(config, in_planes, out_planes))

    @classmethod
    def from_modules(cls, modules: Mapping[str, Optional[nn.Module]], *, stride: int,
                     config: AttentionConfig, paths: Mapping[str, Modulation]) -> "ResidualBlock":
        """A block around existing modules, without creating backbone weights (used by
        :func:`resattn.tools.convert.convert`).

        Args:
            modules: attribute name -> module (or None), in registration order: the branch
                (``conv1``, ``bn1``, ``act1``, ...), ``downsample`` and the output ``relu``.
            stride: the block's stride.
            config: its :class:`AttentionConfig`.
            paths: its gated paths, from :func:`attention_paths`.
        """
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.stride = stride
        for name, module in modules.items():
            setattr(block, name, module)
        if getattr(block, "drop_path", None) is None:
            block.drop_path = nn.Identity()
        block.set_attention(config, paths)
        return block

    def set_attention(self, config: AttentionConfig, paths: Mapping[str, Modulation]) -> None:
        """Set the pattern and the three paths ``attn``, ``skip_attn``, ``res_attn``."""
        self.config = config
        self.pattern = config.pattern
        self.fused = all(paths[name].fused for name in ("attn", "skip_attn", "res_attn"))
        for name in ("attn", "skip_attn", "res_attn"):
            setattr(self, name, paths[name])

    def _build_residual(self, in_planes: int, planes: int, stride: int,
                        norm: Callable[[int], nn.Module], act_layer: ActSpec,
                        groups: int, base_width: int) -> None:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F: (N, C_in, H, W) -> (N, C_out, H', W')."""
        raise NotImplementedError

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The skip path: identity, or the shortcut when the shape changes."""
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or not self.fusable():
            return self.relu(self.combine(x))
        return self.relu(self.combine_fused(x))

    @eager_only
    def fusable(self) -> bool:
        """True when :meth:`combine_fused` applies: ``fused`` on (captured at construction,
        :meth:`set_fused`) and nothing tracing (:func:`resattn.layers.modulation.fused_enabled`)."""
        return self.fused and fused_enabled()

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        """The block before its activation, one line per pattern (the reference form)."""
        p = self.pattern
        # self.drop_path (stochastic depth, identity by default) acts on the residual term
        if p == "none":
            out = self.skip(x) + self.drop_path(self.residual(x))
        elif p == "branch":
            out = self.skip(x) + self.drop_path(self.attn(self.residual(x)))
        elif p == "post":
            out = self.attn(self.skip(x) + self.drop_path(self.residual(x)))
        elif p == "pre":
            out = self.skip(x) + self.drop_path(self.residual(self.attn(x)))
        else:  # dual
            out = self.skip_attn(self.skip(x)) + self.drop_path(self.res_attn(self.residual(x)))
        return out

    @eager_only
    def combine_fused(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`combine` with the sums of ``branch`` and ``dual`` folded into the gates
        (:meth:`Modulation.terms`): skip(x) + A(F(x)) is one ``addcmul``, A_s(skip(x)) + A_r(F(x))
        one pass per scaled term. The other patterns, and any pattern while a stochastic-depth
        ``drop_path`` is active (training), are :meth:`combine` (their paths fused inside
        :class:`Modulation`)."""
        p = self.pattern
        if self.training and not isinstance(self.drop_path, nn.Identity):
            return self.combine(x)
        if p == "branch":
            return add_terms([(self.skip(x), None)] + self.attn.terms(self.residual(x)))
        if p == "dual":
            return add_terms(self.skip_attn.terms(self.skip(x))
                             + self.res_attn.terms(self.residual(x)))
        return self.combine(x)

    def gated_paths(self) -> dict[str, Modulation]:
        """The modulations that carry attention in this block, by path name."""
        paths = {"attn": self.attn, "skip_attn": self.skip_attn, "res_attn": self.res_attn}
        return {k: m for k, m in paths.items() if not m.is_identity}

    def branch_output(self) -> nn.Module:
        """The module whose output is F's output (the last norm of the branch here; a converted
        timm block with ``se``/``drop_path`` ends with those). :class:`resattn.tools.monitor.GateMonitor`
        hooks it."""
        return self.bn3 if hasattr(self, "bn3") else self.bn2

    def zero_init_last_norm(self) -> None:
        """Zero the weight of the branch's last norm so the block starts as its skip path."""
        last = self.bn3 if hasattr(self, "bn3") else self.bn2
        if getattr(last, "weight", None) is not None:
            nn.init.zeros_(last.weight)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and CIFAR ResNets); F = bn2(conv2(relu(bn1(conv1(x)))))."""

    expansion = 1

    def _build_residual(self, in_planes, planes, stride, norm, act_layer, groups, base_width):
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = norm(planes)
        self.act1 = _act(act_layer)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (stride here, as torchvision "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def _build_residual(self, in_planes, planes, stride, norm, act_layer, groups, base_width):
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = norm(width)
        self.act1 = _act(act_layer)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = norm(width)
        self.act2 = _act(act_layer)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))
