"""ResNets with attention placed by pattern, per stage or per block.

ImageNet ResNets follow torchvision's topology and attribute names (``conv1``, ``bn1``,
``layer1..4``, ``fc``), so a ``pattern='none'`` model loads a torchvision ``state_dict`` with
``strict=True``. CIFAR ResNets are the 6n+2 networks of He et al. 2016 (3x3 stem with 16 channels,
three stages of 16/32/64 channels, option-A shortcuts by default).

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..blocks import (ActSpec, AttentionConfig, BasicBlock, Bottleneck, NormSpec, ResidualBlock,
                      _act, get_norm_layer)
from ._registry import register_model

__all__ = ["ResNet", "Placement", "resolve_placement", "split_model_kwargs"]

#: Placement: stage numbers (1-based) that get the pattern, or a rule (stage, block_index) -> bool
#: with stage 1-based and block_index 0-based (torchvision's ``layer{stage}.{block_index}``).
Placement = Union[Iterable[int], Callable[[int, int], bool], None]

_ATTN_FIELDS = tuple(AttentionConfig.__dataclass_fields__)


def split_model_kwargs(kwargs: dict[str, Any]) -> tuple[AttentionConfig, dict[str, Any]]:
    """Split keyword arguments into an :class:`AttentionConfig` and the rest."""
    attn_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _ATTN_FIELDS}
    return AttentionConfig(**attn_kw), kwargs


def resolve_placement(stages: Placement, pattern: str, num_stages: int
                      ) -> Callable[[int, int], bool]:
    """Turn ``stages`` into a rule (stage, block_index) -> bool.

    Default (None): every stage for patterns 1-3 (as SE-ResNet); the last two stages for ``dual``
    (the skip is gated only where features are mid/high level; early stages stay plain).

    Raises:
        ValueError: a stage number outside 1..num_stages, or a non-integer entry.
        TypeError: ``stages`` is neither None, an iterable of ints, nor a callable.
    """
    if stages is None:
        first = num_stages - 1 if pattern == "dual" else 1
        return lambda stage, block: stage >= first
    if callable(stages):
        return stages
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Iterable):
        raise TypeError(f"stages must be stage numbers (1..{num_stages}), a callable "
                        f"(stage, block_index) -> bool, or None; got {stages!r}")
    chosen = set()
    for s in stages:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_stages:
            raise ValueError(f"stages={list(stages)!r}: each stage must be an integer in "
                             f"1..{num_stages} (1-based)")
        chosen.add(s)
    return lambda stage, block: stage in chosen


class ResNet(nn.Module):
    """ResNet backbone + classifier with a pattern of attention on selected blocks.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (class).
        layers: number of blocks per stage.
        widths: branch width ``planes`` per stage.
        num_classes: classifier outputs (0 for no classifier: ``forward`` returns pooled features).
        in_chans: input channels (3 for RGB, 1 for grayscale).
        stem: ``'imagenet'`` (7x7/2 conv + 3x3/2 max pool) or ``'cifar'`` (3x3 conv, no pool).
        stem_width: channels after the stem.
        shortcut: ``'B'`` (projection) or ``'A'`` (parameter-free, He et al. CIFAR nets).
        stages: placement of the pattern, see :data:`Placement` (blocks outside it are plain).
        norm_layer: ``'batchnorm'``, ``'groupnorm'``, ``'layernorm'`` or a callable.
        act_layer: activation name or class.
        zero_init_residual: zero the last norm weight of every branch (torchvision's option).
        drop_rate: dropout before the classifier.
        groups, width_per_group: ResNeXt-style grouped 3x3 convolutions (Bottleneck only).
        **attn_kwargs: fields of :class:`~resattn.blocks.AttentionConfig` (``pattern``, ``attn``,
            ``modulation``, ``gamma_init``, ``gamma_max``, ``skip_attn``, ``res_attn``, ...).

    Shape:
        (N, in_chans, H, W) -> (N, num_classes) logits.

    Raises:
        ValueError: bad options, named by argument (at construction).
    """

    def __init__(self, block: type[ResidualBlock], layers: Sequence[int], *,
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000,
                 in_chans: int = 3, stem: str = "imagenet", stem_width: int = 64,
                 shortcut: str = "B", stages: Placement = None, norm_layer: NormSpec = "batchnorm",
                 act_layer: ActSpec = "relu", zero_init_residual: bool = False,
                 drop_rate: float = 0.0, groups: int = 1, width_per_group: int = 64,
                 **attn_kwargs: Any) -> None:
        super().__init__()
        unknown = set(attn_kwargs) - set(_ATTN_FIELDS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; attention options "
                            f"are: {', '.join(_ATTN_FIELDS)}")
        config, _ = split_model_kwargs(dict(attn_kwargs))
        for name, v in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "num_classes" else 1):
                raise ValueError(f"{name}={v!r} must be an integer >= "
                                 f"{0 if name == 'num_classes' else 1}")
        if not 1 <= len(layers) <= 4 or len(widths) < len(layers):
            raise ValueError(f"layers={list(layers)!r}: 1 to 4 stages, each with a width in widths")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem={stem!r} is not allowed; allowed: imagenet, cifar")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r} must be in [0, 1)")
        self.config = config
        self.num_classes = num_classes
        self.in_chans = in_chans
        norm = get_norm_layer(norm_layer)
        rule = resolve_placement(stages, config.pattern, len(layers))
        plain = config.with_pattern("none")

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm(stem_width)
        self.relu = _act(act_layer)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        in_planes = stem_width
        for i, (n, planes) in enumerate(zip(layers, widths)):
            stage = i + 1
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and i > 0) else 1
                cfg = config if rule(stage, b) else plain
                blocks.append(block(in_planes, planes, stride, cfg, shortcut=shortcut,
                                    norm_layer=norm, act_layer=act_layer, groups=groups,
                                    base_width=width_per_group))
                in_planes = planes * block.expansion
            name = f"layer{stage}"
            self.add_module(name, nn.Sequential(*blocks))
        for stage in range(len(layers) + 1, 5):  # CIFAR nets: layer4 is a no-op, keeps forward static
            self.add_module(f"layer{stage}", nn.Identity())
        self.num_features = in_planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's init for the backbone; attention modules keep their own (timm's) init.
        attention = {id(m) for blk in self.blocks() for p in blk.gated_paths().values()
                     for m in p.modules()}
        for m in self.modules():
            if id(m) in attention:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            for blk in self.blocks():
                blk.zero_init_last_norm()

    def blocks(self) -> list[ResidualBlock]:
        """All residual blocks, in order."""
        return [m for m in self.modules() if isinstance(m, ResidualBlock)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, H/32, W/32) (H/4 for the CIFAR stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_features, h, w) -> (N, num_classes)."""
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _imagenet(block: type[ResidualBlock], layers: list[int], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(block, layers, **kwargs)


def _cifar(depth: int, kwargs: dict[str, Any]) -> ResNet:
    n = (depth - 2) // 6
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, [n, n, n], widths=(16, 32, 64), stem="cifar", stem_width=16, **kwargs)


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); 11,689,512 parameters with 1000 classes, no attention."""
    return _imagenet(BasicBlock, [2, 2, 2, 2], kwargs)


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return _imagenet(BasicBlock, [3, 4, 6, 3], kwargs)


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 parameters with 1000 classes, no attention."""
    return _imagenet(Bottleneck, [3, 4, 6, 3], kwargs)


@register_model
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return _imagenet(Bottleneck, [3, 4, 23, 3], kwargs)


@register_model
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (Bottleneck, [3, 8, 36, 3])."""
    return _imagenet(Bottleneck, [3, 8, 36, 3], kwargs)


@register_model
def cifar_resnet20(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-20 (He et al. 2016): 269,722 parameters, 10 classes, option A."""
    return _cifar(20, kwargs)


@register_model
def cifar_resnet32(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-32 (He et al. 2016), about 0.46M parameters."""
    return _cifar(32, kwargs)


@register_model
def cifar_resnet44(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-44 (He et al. 2016), about 0.66M parameters."""
    return _cifar(44, kwargs)


@register_model
def cifar_resnet56(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-56 (He et al. 2016): 853,018 parameters, 10 classes, option A."""
    return _cifar(56, kwargs)


@register_model
def cifar_resnet110(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 (He et al. 2016): 1,727,962 parameters, 10 classes, option A."""
    return _cifar(110, kwargs)
