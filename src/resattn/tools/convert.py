"""Retrofit attention into a trained ResNet, in place, without changing what it computes.

Every residual block of the model becomes a resattn block (:class:`resattn.layers.blocks.BasicBlock` or
:class:`~resattn.layers.blocks.Bottleneck`) built around the block's own modules: the same convolution and
norm objects, hence the same parameter and buffer tensors and the same ``state_dict`` keys
(``layer1.0.conv1.weight``, ...). Blocks inside the placement get the pattern's gated paths; the
others stay plain (pattern ``none``).

Function preservation: with ``near_identity`` modulation and gamma = 0 on every gated path,

    A(z) = z + 0 * z * m(z) = z,

so each converted block computes exactly what the pretrained block computed (design notes, section
2). That is the default here, for every pattern (``create_model``'s default for patterns 1-3 is
``gate``, which is not function-preserving). Options that change the function at init (``gate``
modulation on a used path, a non-zero gamma init) are allowed but emit a
:class:`FunctionChangeWarning`.

Supported blocks: ``torchvision.models.resnet.BasicBlock``/``Bottleneck`` (ResNet, ResNeXt,
Wide ResNet), ``timm.models.resnet.BasicBlock``/``Bottleneck`` (timm's ResNet family, including
``drop_block``, ``aa`` anti-aliasing and its own ``se`` attention, kept inside F in timm's order,
and its ``drop_path`` on the residual term), and resattn's own blocks with pattern ``none``.
A converted timm model stays a timm model: its own ``forward_features``, ``forward_intermediates``,
``features_only`` wrappers, ``set_grad_checkpointing`` and classifier methods keep working, since
only the blocks inside its stages are replaced.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

import timm.models.resnet as timm_resnet
import torch
import torch.nn as nn
import torchvision.models.resnet as tv_resnet

from ..layers.blocks import (ATTENTION_OPTIONS, AttentionConfig, BasicBlock, Bottleneck,
                             ResidualBlock, attention_paths)
from ..models.resnet import Placement, resolve_placement

__all__ = ["convert", "parity_check", "ConversionReport", "FunctionChangeWarning", "BlockInfo",
           "find_residual_blocks", "SUPPORTED_BLOCKS", "TimmBasicBlock", "TimmBottleneck"]


#: Block classes :func:`convert` understands, by source.
SUPPORTED_BLOCKS: dict[str, tuple[type, ...]] = {
    "torchvision": (tv_resnet.BasicBlock, tv_resnet.Bottleneck),
    "timm": (timm_resnet.BasicBlock, timm_resnet.Bottleneck),
    "resattn": (ResidualBlock,),
}


class FunctionChangeWarning(UserWarning):
    """The converted model no longer computes the pretrained function at init."""


# --------------------------------------------------------------------------------------------
# timm blocks: the same F as timm's forward, extras included
# --------------------------------------------------------------------------------------------

class _TimmExtras:
    """timm's own ``se`` at the end of F (may be None). timm's ``drop_path`` (DropPath, or None
    for the identity) becomes the block's ``drop_path``, which
    :meth:`~resattn.layers.blocks.ResidualBlock.forward` applies to the residual term, as timm does."""

    se: Optional[nn.Module]

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)
        return x


class TimmBasicBlock(_TimmExtras, BasicBlock):
    """A converted ``timm.models.resnet.BasicBlock``: F keeps timm's order,
    conv1-bn1-drop_block-act1-aa-conv2-bn2-se (``se`` may be None); ``drop_path`` on the sum's
    residual term."""

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        return self._tail(self.bn2(self.conv2(x)))

    def branch_output(self) -> nn.Module:
        return _last_of(self.se, self.bn2)


class TimmBottleneck(_TimmExtras, Bottleneck):
    """A converted ``timm.models.resnet.Bottleneck``: F keeps timm's order, conv1-bn1-act1-
    conv2-bn2-drop_block-act2-aa-conv3-bn3-se (``se`` may be None); ``drop_path`` on the sum's
    residual term."""

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        return self._tail(self.bn3(self.conv3(x)))

    def branch_output(self) -> nn.Module:
        return _last_of(self.se, self.bn3)


def _last_of(*modules: Optional[nn.Module]) -> nn.Module:
    return next(m for m in modules if m is not None)


# --------------------------------------------------------------------------------------------
# finding blocks
# --------------------------------------------------------------------------------------------

class BlockInfo(NamedTuple):
    """One residual block of a model: qualified name, module, 1-based stage, 0-based index in
    the stage, and its source (``'torchvision'``, ``'timm'`` or ``'resattn'``)."""

    name: str
    module: nn.Module
    stage: int
    index: int
    source: str


def _source(module: nn.Module) -> Optional[str]:
    for source, types in SUPPORTED_BLOCKS.items():
        if isinstance(module, types):
            return source
    return None


def find_residual_blocks(model: nn.Module) -> list[BlockInfo]:
    """The supported residual blocks of ``model`` in order. A stage is a container of blocks
    (``layer1``, ``layer2``, ... in torchvision, timm and resattn ResNets), numbered from 1 in
    order of appearance; ``index`` counts blocks within it from 0."""
    found: list[tuple[str, nn.Module, str]] = []
    skip_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p) for p in skip_prefixes):
            continue  # no blocks inside blocks
        source = _source(module)
        if source is not None:
            found.append((name, module, source))
            skip_prefixes.append(name + ".")
    stages: dict[str, int] = {}
    counts: dict[str, int] = {}
    infos = []
    for name, module, source in found:
        parent = name.rpartition(".")[0]
        stage = stages.setdefault(parent, len(stages) + 1)
        index = counts.get(parent, 0)
        counts[parent] = index + 1
        infos.append(BlockInfo(name, module, stage, index, source))
    return infos


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------

@dataclass
class ConversionReport:
    """What :func:`convert` did.

    Attributes:
        pattern: the pattern applied.
        blocks_converted: names of the blocks that got the pattern's attention.
        blocks_total: residual blocks in the model.
        tensors_kept: parameters and buffers of the original model still in it (the same tensor
            objects); equals the number it had, since nothing is replaced.
        params_before: parameters before conversion.
        params_added: new parameters (attention modules and gamma).
        new_keys: new ``state_dict`` keys (all under ``attn``, ``skip_attn`` or ``res_attn``).
        warnings: warnings emitted (for example the function-change warning).
    """

    pattern: str
    blocks_converted: list[str]
    blocks_total: int
    tensors_kept: int
    params_before: int
    params_added: int
    new_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        pct = 100.0 * self.params_added / max(self.params_before, 1)
        names = ", ".join(self.blocks_converted) if self.blocks_converted else "-"
        lines = [
            f"converted {len(self.blocks_converted)}/{self.blocks_total} residual blocks to "
            f"pattern {self.pattern!r}: {names}",
            f"parameters: {self.params_before:,} kept + {self.params_added:,} new "
            f"(+{pct:.2f}%); {self.tensors_kept} tensors kept as they were",
            f"new state_dict keys: {len(self.new_keys)}",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------

def _conversion_config(pattern: Union[str, int], options: dict[str, Any]) -> AttentionConfig:
    unknown = sorted(set(options) - set(ATTENTION_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; attention options are: "
                        f"{', '.join(f for f in ATTENTION_OPTIONS if f != 'pattern')}")
    options = dict(options)
    options.setdefault("modulation", "near_identity")  # function-preserving default for 1-3
    return AttentionConfig(pattern=pattern, **options)


def _function_changes(config: AttentionConfig) -> list[str]:
    """Options of the used paths that make the block differ from the plain block at init."""
    return [reason for path in config.paths().values() for reason in path.function_changes()]


def _channels(block: nn.Module) -> tuple[int, int]:
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return block.conv1.in_channels, last.out_channels


def _adopted_modules(block: nn.Module, source: str) -> tuple[type[ResidualBlock], dict]:
    """The resattn class for a foreign block and its modules under resattn's names."""
    bottleneck = isinstance(block, (tv_resnet.Bottleneck, timm_resnet.Bottleneck))
    modules: dict[str, Optional[nn.Module]] = {}
    if source == "torchvision":
        cls = Bottleneck if bottleneck else BasicBlock
        modules.update(block._modules)
        modules.setdefault("downsample", None)
        modules["act1"] = block.relu  # torchvision uses one ReLU module at every place
        if bottleneck:
            modules["act2"] = block.relu
        return cls, modules
    cls = TimmBottleneck if bottleneck else TimmBasicBlock
    out_act = "act3" if bottleneck else "act2"
    for name, module in block._modules.items():
        modules["relu" if name == out_act else name] = module
    for name in ("downsample", "se", "drop_path"):
        modules.setdefault(name, getattr(block, name, None))
    for name in ("drop_block", "aa"):  # absent in older timm versions: identity
        modules.setdefault(name, nn.Identity())
    return cls, modules


def _tensors(model: nn.Module) -> dict[int, torch.Tensor]:
    out = {id(t): t for t in model.parameters()}
    out.update({id(t): t for t in model.buffers()})
    return out


#: torchvision ResNet names by (block, blocks per stage, groups, width per group).
_TORCHVISION_RESNETS = {
    ("BasicBlock", (2, 2, 2, 2), 1, 64): "resnet18",
    ("BasicBlock", (3, 4, 6, 3), 1, 64): "resnet34",
    ("Bottleneck", (3, 4, 6, 3), 1, 64): "resnet50",
    ("Bottleneck", (3, 4, 23, 3), 1, 64): "resnet101",
    ("Bottleneck", (3, 8, 36, 3), 1, 64): "resnet152",
    ("Bottleneck", (3, 4, 6, 3), 32, 4): "resnext50_32x4d",
    ("Bottleneck", (3, 4, 23, 3), 32, 8): "resnext101_32x8d",
    ("Bottleneck", (3, 4, 23, 3), 64, 4): "resnext101_64x4d",
    ("Bottleneck", (3, 4, 6, 3), 1, 128): "wide_resnet50_2",
    ("Bottleneck", (3, 4, 23, 3), 1, 128): "wide_resnet101_2",
}


def _source_arch(model: nn.Module) -> Optional[tuple[str, dict[str, Any]]]:
    """``(arch, model_kwargs)`` that rebuild ``model`` before conversion (for
    :func:`resattn.tools.weights.save_checkpoint`): ``'torchvision:resnet50'`` from a torchvision
    ResNet's structure, ``'timm:NAME'`` from a timm model's ``pretrained_cfg``; None when
    unknown (then ``save_checkpoint`` asks for ``arch``)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if isinstance(model, tv_resnet.ResNet):
        block = type(model.layer1[0]).__name__
        layers = tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
        name = _TORCHVISION_RESNETS.get((block, layers, model.groups, model.base_width))
        if name is None or first is None or first.in_channels != 3:
            return None
        return f"torchvision:{name}", {"num_classes": model.fc.out_features}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture")
    if name and type(model).__module__.startswith("timm.") and first is not None:
        kwargs = {"num_classes": int(getattr(model, "num_classes", 1000)),
                  "in_chans": first.in_channels}
        return f"timm:{name}", kwargs
    return None


def convert(model: nn.Module, pattern: Union[str, int] = "dual", *, stages: Placement = None,
            **attention_options: Any) -> ConversionReport:
    """Convert the residual blocks of ``model`` to ``pattern``, in place, keeping its weights.

    Args:
        model: a torchvision or timm ResNet (any model holding their ``BasicBlock``/``Bottleneck``),
            or a resattn model built with ``pattern='none'``.
        pattern: ``'branch'``, ``'post'``, ``'pre'``, ``'dual'`` (or 1-4); ``'none'`` (0) only
            turns foreign blocks into plain resattn blocks (for monitoring and inspection).
        stages: placement: 1-based stage numbers, a rule ``(stage, block_index) -> bool``, or None
            (every stage for patterns 1-3, the last two stages for ``dual``, as ``create_model``).
        **attention_options: fields of :class:`~resattn.layers.blocks.AttentionConfig` (``attn``,
            ``modulation``, ``gamma_init``, ``gamma_max``, ``skip_attn``, ``res_attn``,
            ``skip_modulation``, ``res_modulation``, ``skip_gamma_init``, ``res_gamma_init``,
            ``skip_gamma_max``, ``res_gamma_max``, ``gamma_shape``, ``attn_kwargs``, ...).
            Unlike ``create_model``, ``modulation`` defaults to ``'near_identity'``, so with the
            defaults every gated path starts at gamma = 0 and the model computes what it did.

    Returns:
        A :class:`ConversionReport`. The model records its options as
        ``model.resattn_convert_kwargs``, and, for a torchvision or timm model, its source as
        ``model.resattn_arch`` / ``model.resattn_model_kwargs`` (``'torchvision:resnet50'``,
        ``'timm:resnet50'``), so that :func:`resattn.tools.weights.save_checkpoint` needs no ``arch``.

    Raises:
        ValueError: no supported residual block in ``model``; a resattn block that already has a
            pattern; bad options (the errors of :class:`~resattn.layers.blocks.AttentionConfig` and of
            :func:`~resattn.models.resolve_placement`).
        TypeError: ``model`` is not an ``nn.Module``, or an unknown option.

    Warns:
        FunctionChangeWarning: (a ``UserWarning``) an option that changes the function at init:
            ``gate`` modulation on a used path, or a non-zero gamma init.

    New attention modules and gammas are put on the device and dtype of each block and in its
    train/eval mode. Nothing in the model changes when an error is raised.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    config = _conversion_config(pattern, attention_options)
    if isinstance(stages, Iterable) and not isinstance(stages, (str, bytes)):
        stages = list(stages)  # read once here: a generator would be empty when recorded
    infos = _convertible_blocks(model)
    source_arch = _source_arch(model)  # read before the blocks are swapped
    rule = resolve_placement(stages, config.pattern, max(i.stage for i in infos))
    before = _tensors(model)
    keys_before = set(model.state_dict())
    params_before = sum(p.numel() for p in model.parameters())

    # Phase 1: build every new path and block; the model is untouched until all succeed.
    plan = [step for info in infos
            if (step := _plan_block(info, config, config.pattern != "none"
                                    and bool(rule(info.stage, info.index)))) is not None]
    reasons = _function_changes(config)
    messages = []
    if reasons and any(step.chosen for step in plan):
        messages.append(
            f"convert(pattern={config.pattern!r}) with {', '.join(reasons)}: the converted model "
            "no longer computes the pretrained function at init (use near_identity modulation "
            "with gamma_init=0 on every gated path to keep it)")

    # Phase 2: swap, then record how the model was made.
    for step in plan:
        _swap(model, step)
    for message in messages:
        warnings.warn(message, FunctionChangeWarning, stacklevel=2)
    _record(model, config.pattern, stages, attention_options, source_arch)

    after = _tensors(model)
    state = model.state_dict()
    return ConversionReport(
        pattern=config.pattern,
        blocks_converted=[step.info.name for step in plan if step.chosen],
        blocks_total=len(infos),
        tensors_kept=sum(1 for k in before if k in after and after[k] is before[k]),
        params_before=params_before,
        params_added=sum(p.numel() for p in model.parameters()) - params_before,
        new_keys=[k for k in state if k not in keys_before],
        warnings=messages,
    )


class _Step(NamedTuple):
    """One block of a conversion plan: its new paths and, for a foreign block, its new block."""

    info: BlockInfo
    chosen: bool
    config: AttentionConfig
    paths: dict[str, nn.Module]
    new: Optional[ResidualBlock]


def _convertible_blocks(model: nn.Module) -> list[BlockInfo]:
    """The residual blocks of ``model``, or a ValueError naming the supported types or the
    resattn block that already has attention."""
    infos = find_residual_blocks(model)
    if not infos:
        supported = ", ".join(f"{t.__module__}.{t.__name__}"
                              for types in SUPPORTED_BLOCKS.values() for t in types)
        raise ValueError(f"model={type(model).__name__} has no residual block to convert; "
                         f"supported block types: {supported}")
    for info in infos:
        if info.source == "resattn" and info.module.pattern != "none":
            raise ValueError(
                f"model block {info.name!r} already has attention (pattern="
                f"{info.module.pattern!r}); convert a plain model (pattern='none')")
    return infos


def _plan_block(info: BlockInfo, config: AttentionConfig, chosen: bool) -> Optional[_Step]:
    """Build the paths (on the block's device, dtype and mode) and, for a torchvision or timm
    block, the resattn block around its own modules; None for a resattn block left as it is."""
    if info.source == "resattn" and not chosen:
        return None
    cfg = config if chosen else config.with_pattern("none")
    in_planes, out_planes = _channels(info.module)
    paths = attention_paths(cfg, in_planes, out_planes)
    ref = next(iter(info.module.parameters()), None)
    for m in paths.values():
        if ref is not None:
            m.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        m.train(info.module.training)
    new = None
    if info.source != "resattn":
        cls, modules = _adopted_modules(info.module, info.source)
        new = cls.from_modules(modules, stride=getattr(info.module, "stride", 1), config=cfg,
                               paths=paths)
        new.training = info.module.training
        new_keys = {k for k in new.state_dict() if not _is_path_key(k)}
        if new_keys != set(info.module.state_dict()):  # cannot happen for supported blocks
            raise RuntimeError(f"conversion of {info.name!r} would change its state_dict keys")
    return _Step(info, chosen, cfg, paths, new)


def _swap(model: nn.Module, step: _Step) -> None:
    """Give a resattn block its paths, or put the new block where the foreign one was."""
    if step.new is None:
        step.info.module.set_attention(step.config, step.paths)
    else:
        parent_name, _, child = step.info.name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, step.new)


def _record(model: nn.Module, pattern: str, stages: Placement, options: dict[str, Any],
            source_arch: Optional[tuple[str, dict[str, Any]]]) -> None:
    """``model.resattn_convert_kwargs`` (and the source of a torchvision or timm model) for
    :func:`resattn.tools.weights.save_checkpoint`."""
    record = {"pattern": pattern}
    if stages is not None:
        record["stages"] = stages
    record.update(options)
    model.resattn_convert_kwargs = record
    if getattr(model, "resattn_arch", None) is None and source_arch is not None:
        model.resattn_arch, model.resattn_model_kwargs = source_arch


def _is_path_key(key: str) -> bool:
    return key.split(".", 1)[0] in ("attn", "skip_attn", "res_attn")


# --------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------

def _default_input(model: nn.Module) -> torch.Tensor:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    in_chans = first_conv.in_channels if first_conv is not None else 3
    ref = next(iter(model.parameters()))
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, in_chans, 224, 224, generator=g).to(ref.device, ref.dtype)


@torch.no_grad()
def parity_check(reference: nn.Module, converted: nn.Module, x: Optional[torch.Tensor] = None,
                 *, atol: float = 1e-5) -> dict[str, Any]:
    """Compare the eval-mode logits of ``reference`` (a deep copy taken before conversion) and
    ``converted`` on ``x`` (default: a seeded random batch (8, C, 224, 224)).

    Returns:
        ``{'max_abs_diff': float, 'top1_agreement': float in [0, 1], 'passed': bool}``; passed
        when the largest absolute logit difference is <= ``atol`` and every top-1 class agrees.
    The models' train/eval modes are restored afterwards.
    """
    if x is None:
        x = _default_input(converted)
    modes = [(m, m.training) for m in (reference, converted)]
    try:
        reference.eval()
        converted.eval()
        a = reference(x)
        b = converted(x)
    finally:
        for m, mode in modes:
            m.train(mode)
    diff = (a.float() - b.float()).abs().max().item()
    top1 = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    return {"max_abs_diff": diff, "top1_agreement": top1, "passed": diff <= atol and top1 == 1.0}
