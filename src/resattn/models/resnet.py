"""ResNets with attention placed by pattern, per stage or per block, with timm's model interface.

ImageNet ResNets follow torchvision's topology and attribute names (``conv1``, ``bn1``, ``relu``,
``maxpool``, ``layer1..4``, ``fc``), so a ``pattern='none'`` model loads a torchvision
``state_dict`` with ``strict=True`` (and timm's ``resnet*`` state_dicts, which use the same keys).
CIFAR ResNets are the 6n+2 networks of He et al. 2016 (3x3 stem with 16 channels, three stages of
16/32/64 channels, option-A shortcuts by default).

On top, the class carries the interface a timm user relies on (the contract of
``timm.models.resnet.ResNet``): ``pretrained_cfg``, ``feature_info``, ``forward_intermediates`` /
``prune_intermediate_layers``, ``forward_head(x, pre_logits=...)``, ``reset_classifier`` /
``get_classifier`` with a ``global_pool`` from timm's ``create_classifier``, ``set_grad_checkpointing``
(timm's ``checkpoint_seq``), ``group_matcher``, ``no_weight_decay``, stochastic depth
(``drop_path_rate``), ``init_weights`` and ``device``/``dtype`` construction. The builders are
registered in resattn's registry here and in timm's registry by :mod:`resattn.models._timm`.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
Stochastic depth: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
"""
# No ``from __future__ import annotations`` here: fx writes the forward's string annotations into
# the traced code as ``_torch_Tensor_``, which TorchScript then cannot resolve (fx, then script).
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices

from ..layers.blocks import (ATTENTION_OPTIONS, ActSpec, AttentionConfig, BasicBlock, Bottleneck,
                             NormSpec, ResidualBlock, _act, get_norm_layer)
from ..layers.modulation import FusedSwitch, gamma_names, initial_theta
from ._pretrained import clean_state_dict
from ._registry import register_model

__all__ = ["ResNet", "Placement", "resolve_placement", "split_model_kwargs", "POOL_TYPES",
           "checkpoint_filter_fn", "create_resnet"]

#: Placement: stage numbers (1-based) or blocks ``"stage.block_index"`` that get the pattern, or a
#: rule (stage, block_index) -> bool with stage 1-based and block_index 0-based (torchvision's
#: ``layer{stage}.{block_index}``).
Placement = Union[Iterable[Union[int, str]], Callable[[int, int], bool], None]

#: ``global_pool`` values (timm's ``SelectAdaptivePool2d``; ``''`` keeps the feature map).
POOL_TYPES: Tuple[str, ...] = ("avg", "max", "avgmax", "catavgmax", "")

#: :class:`ResNet`'s own keyword options (its attention options are ``ATTENTION_OPTIONS``);
#: ``tests/test_models.py`` checks this against the constructor's signature.
RESNET_OPTIONS: Tuple[str, ...] = (
    "widths", "num_classes", "in_chans", "stem", "stem_width", "shortcut", "stages", "norm_layer",
    "act_layer", "zero_init_residual", "drop_rate", "drop_path_rate", "global_pool", "groups",
    "width_per_group", "device", "dtype", "fused")
_PATH_NAME = {"attn": "attn", "skip_attn": "skip", "res_attn": "res"}  # block attribute -> path


def split_model_kwargs(kwargs: Dict[str, Any]) -> Tuple[AttentionConfig, Dict[str, Any]]:
    """Split keyword arguments into an :class:`AttentionConfig` and the rest."""
    attn_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in ATTENTION_OPTIONS}
    return AttentionConfig(**attn_kw), kwargs


def resolve_placement(stages: Placement, pattern: str, num_stages: int
                      ) -> Callable[[int, int], bool]:
    """Turn ``stages`` into a rule (stage, block_index) -> bool.

    Default (None): every stage for patterns 1-3 (as SE-ResNet); the last two stages for ``dual``
    (the skip is gated only where features are mid/high level; early stages stay plain).
    Entries are stage numbers (``2``: every block of stage 2) or single blocks as the string
    ``"stage.block_index"`` (``"2.1"``: torchvision's ``layer2.1``; stage 1-based, block 0-based),
    so a per-block placement stays plain data (YAML, JSON, checkpoints).

    Raises:
        ValueError: a stage number outside 1..num_stages, or an entry that is neither.
        TypeError: ``stages`` is neither None, an iterable of entries, nor a callable.
    """
    if stages is None:
        first = num_stages - 1 if pattern == "dual" else 1
        return lambda stage, block: stage >= first
    if callable(stages):
        return stages
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Iterable):
        raise TypeError(f"stages must be stage numbers (1..{num_stages}), a callable "
                        f"(stage, block_index) -> bool, or None; got {stages!r}")
    chosen, blocks = set(), set()
    for s in stages:
        if isinstance(s, str) and s.count(".") == 1 and all(p.isdigit() for p in s.split(".")):
            stage, block = (int(p) for p in s.split("."))
            if 1 <= stage <= num_stages:
                blocks.add((stage, block))
                continue
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_stages:
            raise ValueError(f"stages={list(stages)!r}: each stage must be an integer in "
                             f"1..{num_stages} (1-based), or a block 'stage.block_index' "
                             "(for example '2.0')")
        chosen.add(s)
    return lambda stage, block: stage in chosen or (stage, block) in blocks


def _check_pool(global_pool: str) -> None:
    if global_pool not in POOL_TYPES:
        raise ValueError(f"global_pool={global_pool!r} is not allowed; allowed: "
                         f"{', '.join(repr(p) for p in POOL_TYPES)}")


class ResNet(FusedSwitch, nn.Module):
    """ResNet backbone + classifier with a pattern of attention on selected blocks.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (class).
        layers: number of blocks per stage (1 to 4 stages).
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
        drop_path_rate: stochastic depth: block j of J (0-based, over all stages) drops its
            residual term with probability ``drop_path_rate * j / (J - 1)``, as timm's ResNet.
        global_pool: one of :data:`POOL_TYPES` (timm's ``SelectAdaptivePool2d``; ``'catavgmax'``
            doubles ``head_hidden_size``; ``''`` keeps the (N, C, h, w) map).
        groups, width_per_group: ResNeXt-style grouped 3x3 convolutions (Bottleneck only).
        device, dtype: where and in which dtype the parameters are created (``'meta'`` builds
            without memory; timm's ``create_model`` passes them).
        fused: gated paths in their fused form (:mod:`resattn.layers.modulation`); False: the reference
            form. :meth:`set_fused` changes it later, for this model only.
        **attn_kwargs: fields of :class:`~resattn.layers.blocks.AttentionConfig` (``pattern``, ``attn``,
            ``modulation``, ``gamma_init``, ``gamma_max``, ``skip_attn``, ``res_attn``, ...).

    Shape:
        (N, in_chans, H, W) -> (N, num_classes) logits; (N, head_hidden_size) with
        ``num_classes=0``; (N, num_features, H/32, W/32) (H/4 for the CIFAR stem) with
        ``num_classes=0, global_pool=''``.

    Attributes:
        feature_info: one dict per tap (``num_chs``, ``reduction``, ``module``): the stem
            activation, then each stage's output (timm's convention; used by ``features_only``).
        num_features: channels of ``forward_features``; head_hidden_size: width of
            ``forward_head(x, pre_logits=True)``.

    Raises:
        ValueError: bad options, named by argument (at construction).
        TypeError: an unknown keyword argument.
    """

    def __init__(self, block: type, layers: Sequence[int], *,
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes: int = 1000,
                 in_chans: int = 3, stem: str = "imagenet", stem_width: int = 64,
                 shortcut: str = "B", stages: Placement = None, norm_layer: NormSpec = "batchnorm",
                 act_layer: ActSpec = "relu", zero_init_residual: bool = False,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg",
                 groups: int = 1, width_per_group: int = 64,
                 device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, fused: bool = True,
                 **attn_kwargs: Any) -> None:
        super().__init__()
        unknown = set(attn_kwargs) - set(ATTENTION_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; attention options "
                            f"are: {', '.join(ATTENTION_OPTIONS)}")
        config, _ = split_model_kwargs(dict(attn_kwargs))
        for name, v in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "num_classes" else 1):
                raise ValueError(f"{name}={v!r} must be an integer >= "
                                 f"{0 if name == 'num_classes' else 1}")
        if not 1 <= len(layers) <= 4 or len(widths) < len(layers):
            raise ValueError(f"layers={list(layers)!r}: 1 to 4 stages, each with a width in widths")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem={stem!r} is not allowed; allowed: imagenet, cifar")
        for name, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ValueError(f"{name}={v!r} must be in [0, 1)")
        _check_pool(global_pool)
        self.config = config
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = float(drop_rate)
        self.zero_init_residual = zero_init_residual
        self.grad_checkpointing = False
        self.num_stages = len(layers)
        norm = get_norm_layer(norm_layer)
        rule = resolve_placement(stages, config.pattern, len(layers))
        plain = config.with_pattern("none")

        with torch.device(device) if device is not None else nullcontext():
            if stem == "imagenet":
                self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
            else:
                self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
            self.bn1 = norm(stem_width)
            self.relu = _act(act_layer)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
            reduction = 2 if stem == "imagenet" else 1
            self.feature_info = [dict(num_chs=stem_width, reduction=reduction, module="relu")]
            if stem == "imagenet":
                reduction *= 2

            in_planes = stem_width
            total, j = sum(layers), 0
            for i, (n, planes) in enumerate(zip(layers, widths)):
                stage = i + 1
                blocks = []
                for b in range(n):
                    stride = 2 if (b == 0 and i > 0) else 1
                    cfg = config if rule(stage, b) else plain
                    blk = block(in_planes, planes, stride, cfg, shortcut=shortcut, norm_layer=norm,
                                act_layer=act_layer, groups=groups, base_width=width_per_group)
                    rate = drop_path_rate * j / max(total - 1, 1)
                    blk.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
                    blocks.append(blk)
                    in_planes = planes * block.expansion
                    j += 1
                reduction *= 2 if i > 0 else 1
                self.add_module(f"layer{stage}", nn.Sequential(*blocks))
                self.feature_info.append(dict(num_chs=in_planes, reduction=reduction,
                                              module=f"layer{stage}"))
            for stage in range(len(layers) + 1, 5):
                # CIFAR nets: an empty layer4 (the identity) keeps forward static and scriptable
                self.add_module(f"layer{stage}", nn.Sequential())
            self.num_features = in_planes
            self.global_pool, self.fc = create_classifier(in_planes, num_classes, pool_type=global_pool)
            self.head_hidden_size = in_planes * self.global_pool.feat_mult()
            self._init_backbone(zero_init_residual)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        self.set_fused(fused)
        self.pretrained_cfg = {}  # replaced by timm's build_model_with_cfg
        self.default_cfg = self.pretrained_cfg

    # ---------------------------------------------------------------------------- init

    def _init_backbone(self, zero_init_residual: bool) -> None:
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

    @torch.jit.ignore
    def init_weights(self, zero_init_residual: Optional[bool] = None) -> None:
        """Re-initialise every parameter and buffer in place, as at construction (for example
        after ``to_empty()`` of a model built on the ``meta`` device): PyTorch's
        ``reset_parameters`` of each layer (BatchNorm running statistics included), each gamma
        back to its ``gamma_init``, then torchvision's backbone init. ``zero_init_residual``
        defaults to the constructor's value."""
        if zero_init_residual is None:
            zero_init_residual = self.zero_init_residual
        for m in self.modules():
            if m is not self and callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
        with torch.no_grad():
            for blk in self.blocks():
                for path, mod in blk.gated_paths().items():
                    if mod.gamma is not None:
                        cfg = blk.config.path(_PATH_NAME[path])
                        mod.gamma.fill_(initial_theta(cfg.gamma_init, cfg.gamma_max))
        self._init_backbone(zero_init_residual)

    def blocks(self) -> List[ResidualBlock]:
        """All residual blocks, in order."""
        return [m for m in self.modules() if isinstance(m, ResidualBlock)]

    # ---------------------------------------------------------------------------- timm interface

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Regexes grouping parameter names for layer-wise learning-rate decay (timm's
        ``group_parameters``): the stem, then one group per stage (``coarse``) or per block."""
        return dict(stem=r"^conv1|^bn1|^maxpool",
                    blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them (timm's
        ``checkpoint_seq``, one segment per block): same loss and gradients, lower peak memory,
        one more forward per step. BatchNorm running statistics are updated in the recompute too."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of the gamma parameters (the scale of the attention term on each gated path):
        they should get no weight decay, which would pull the learnt gate strength to 0."""
        return gamma_names(self)

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        """The classifier module (``fc``), or its name."""
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head: a new ``fc`` for ``num_classes`` (0: none), and the pooling
        ``global_pool`` (None keeps the current one). The new modules take the model's device,
        dtype and train/eval mode.

        Raises:
            ValueError: a bad ``num_classes`` or ``global_pool``.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 0")
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        _check_pool(global_pool)
        ref = next(self.parameters(), None)
        dd = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes,
                                                      pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``index`` (1-based); per-block checkpointing when enabled (eager only)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(getattr(self, f"layer{index}"), x)
        if index == 1:
            return self.layer1(x)
        if index == 2:
            return self.layer2(x)
        if index == 3:
            return self.layer3(x)
        return self.layer4(x)

    def forward_intermediates(
            self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the feature maps at the taps of :attr:`feature_info`.

        Args:
            x: (N, in_chans, H, W).
            indices: taps to return: None for all, an int n for the last n, or a list of tap
                indices (0 = stem activation, s = output of stage s; negative from the end).
            norm: accepted for timm's interface; a ResNet has no final norm (no effect).
            stop_early: stop after the last requested tap (the returned final map is then that
                stage's output).
            output_fmt: ``'NCHW'`` only.
            intermediates_only: return only the list of taps.

        Returns:
            ``(final, taps)``, or ``taps``; tap s has shape (N, num_chs_s, H / r_s, W / r_s)
            (``feature_info``; rounded up for odd sizes).

        Raises:
            ValueError: ``output_fmt`` other than ``'NCHW'``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt=" + output_fmt + " is not allowed; allowed: NCHW")
        intermediates: List[torch.Tensor] = []
        take_indices, max_index = feature_take_indices(self.num_stages + 1, indices)
        x = self.relu(self.bn1(self.conv1(x)))
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        last = max_index if stop_early else self.num_stages
        for i in range(1, last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Remove what the taps ``indices`` do not need (stages after the last one; the stem
        pool when only the stem is kept), and the head (``prune_head``, or always when features
        end before the last stage: ``num_features`` then is the last kept tap's width).

        Returns:
            The absolute tap indices, for ``forward_intermediates(indices=...)``.
        """
        take_indices, max_index = feature_take_indices(self.num_stages + 1, indices)
        for stage in range(max_index + 1, 5):
            setattr(self, f"layer{stage}", nn.Sequential())  # empty: checkpoint_seq iterates it
        if max_index == 0:
            self.maxpool = nn.Identity()
        prune_end = max_index < self.num_stages
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    # ---------------------------------------------------------------------------- forward

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, H/32, W/32) (H/4 for the CIFAR stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x,
                                  flatten=True)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, num_features, h, w) -> (N, num_classes); (N, head_hidden_size) with
        ``pre_logits`` (pooled, before dropout and ``fc``)."""
        x = self.global_pool(x)
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm's hook for foreign checkpoints: the state_dict inside ``state_dict`` (itself, or under
    ``'state_dict'``/``'model'``, as resattn checkpoints) without ``module.``/``_orig_mod.``
    prefixes. torchvision and timm ResNet keys are already ours."""
    return clean_state_dict(state_dict)


# -------------------------------------------------------------------------------- builders

_IMAGENET_ARGS: Dict[str, Dict[str, Any]] = {
    "resnet18": dict(block=BasicBlock, layers=[2, 2, 2, 2]),
    "resnet34": dict(block=BasicBlock, layers=[3, 4, 6, 3]),
    "resnet50": dict(block=Bottleneck, layers=[3, 4, 6, 3]),
    "resnet101": dict(block=Bottleneck, layers=[3, 4, 23, 3]),
    "resnet152": dict(block=Bottleneck, layers=[3, 8, 36, 3]),
}


def _cifar_args(depth: int) -> Dict[str, Any]:
    n = (depth - 2) // 6
    return dict(block=BasicBlock, layers=[n, n, n], widths=(16, 32, 64), stem="cifar",
                stem_width=16, shortcut="A")


def create_resnet(variant: str, arch: str, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """Build ``arch`` (``'resnet50'``, ``'cifar_resnet20'``, ...) through timm's
    ``build_model_with_cfg`` under the timm name ``variant``: its ``pretrained_cfg`` attached,
    ``features_only``/``out_indices``/``feature_cls`` through timm's feature wrappers.

    Raises:
        RuntimeError: ``pretrained=True`` while the pretrained_cfg has no weight source (none is
            hosted for resattn models; the message says how to load local or torchvision weights).
        ValueError: ``features_only=True`` with an ``out_indices`` entry outside the feature
            levels (0..4 for ImageNet ResNets, 0..3 for the CIFAR nets; negatives count from the end).
    """
    if arch.startswith("cifar_resnet"):
        model_args = _cifar_args(int(arch[len("cifar_resnet"):]))
        taps = (0, 1, 2, 3)
    else:
        model_args = dict(_IMAGENET_ARGS[arch])
        taps = (0, 1, 2, 3, 4)
    if pretrained:
        from timm.models._builder import resolve_pretrained_cfg
        cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"),
                                     kwargs.get("pretrained_cfg_overlay"))
        if not (cfg.has_weights or cfg.state_dict):
            hint = (f"; for torchvision's ImageNet weights of the backbone (a download) build "
                    f"with pretrained=False, then resattn.load_pretrained(model, {arch!r})"
                    if arch in _IMAGENET_ARGS else "")
            raise RuntimeError(
                f"no pretrained weights are hosted for {variant!r} (its pretrained_cfg has no url, "
                "hf_hub_id or file); use pretrained=False, or a local checkpoint with "
                f"pretrained_cfg_overlay=dict(file='path/to/checkpoint.pth'){hint}")
    out_indices = kwargs.get("out_indices")
    if kwargs.get("features_only") and isinstance(out_indices, (list, tuple)):
        n = len(taps)
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f"out_indices={tuple(out_indices)!r}: {i!r} is not a feature level "
                                 f"of {arch!r}; allowed: 0..{n - 1} (or -{n}..-1), "
                                 f"0 being the stem and {n - 1} the last stage")
    model_args.update(kwargs)
    return build_model_with_cfg(ResNet, variant, pretrained, feature_cfg=dict(out_indices=taps),
                                pretrained_filter_fn=checkpoint_filter_fn, **model_args)


def _builder(arch: str, doc: str) -> Callable[..., ResNet]:
    def fn(**kwargs: Any) -> ResNet:
        return create_resnet(f"resattn_{arch}", arch, **kwargs)
    fn.__name__ = fn.__qualname__ = arch
    fn.__doc__ = doc
    return fn


resnet18 = register_model(_builder(
    "resnet18", "ResNet-18 (BasicBlock, [2, 2, 2, 2]); 11,689,512 parameters with 1000 classes, "
                "no attention."))
resnet34 = register_model(_builder("resnet34", "ResNet-34 (BasicBlock, [3, 4, 6, 3])."))
resnet50 = register_model(_builder(
    "resnet50", "ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 parameters with 1000 classes, "
                "no attention."))
resnet101 = register_model(_builder("resnet101", "ResNet-101 (Bottleneck, [3, 4, 23, 3])."))
resnet152 = register_model(_builder("resnet152", "ResNet-152 (Bottleneck, [3, 8, 36, 3])."))
cifar_resnet20 = register_model(_builder(
    "cifar_resnet20", "CIFAR ResNet-20 (He et al. 2016): 269,722 parameters, 10 classes, option A."))
cifar_resnet32 = register_model(_builder(
    "cifar_resnet32", "CIFAR ResNet-32 (He et al. 2016), about 0.46M parameters."))
cifar_resnet44 = register_model(_builder(
    "cifar_resnet44", "CIFAR ResNet-44 (He et al. 2016), about 0.66M parameters."))
cifar_resnet56 = register_model(_builder(
    "cifar_resnet56", "CIFAR ResNet-56 (He et al. 2016): 853,018 parameters, 10 classes, option A."))
cifar_resnet110 = register_model(_builder(
    "cifar_resnet110", "CIFAR ResNet-110 (He et al. 2016): 1,727,962 parameters, 10 classes, "
                       "option A."))
