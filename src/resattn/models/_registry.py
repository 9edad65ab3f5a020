"""Model registry: one door (:func:`create_model`) to every architecture, as in timm."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Optional

import torch.nn as nn

from ._pretrained import load_pretrained

__all__ = ["register_model", "create_model", "list_models", "is_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models(filter: Optional[str] = None) -> list[str]:
    """Registered model names, sorted; ``filter`` is a shell-style wildcard (``'cifar_*'``)."""
    names = sorted(_MODELS)
    return [n for n in names if filter is None or fnmatch.fnmatch(n, filter)]


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model."""
    return name in _MODELS


def create_model(name: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: one of :func:`list_models` (``resnet18/34/50/101/152``, ``cifar_resnet20/32/44/56/110``).
        pretrained: False; True for torchvision's ImageNet weights of the same depth (downloaded by
            torchvision when not cached; only for ``resnet*``); or a path to a checkpoint or
            ``state_dict``. The backbone weights load strictly by shape; only attention parameters
            and gamma may stay new (see :func:`resattn.load_pretrained`).
        **kwargs: architecture and attention options, for example ``num_classes``, ``in_chans``,
            ``pattern``, ``attn``, ``modulation``, ``gamma_init``, ``gamma_max``, ``skip_attn``,
            ``res_attn``, ``skip_modulation``, ``res_modulation``, ``skip_gamma_init``,
            ``res_gamma_init``, ``skip_gamma_max``, ``res_gamma_max``, ``gamma_shape``, ``stages``,
            ``norm_layer``, ``act_layer``, ``shortcut``, ``zero_init_residual``, ``drop_rate``,
            ``drop_path_rate``, ``global_pool``, ``device``, ``dtype`` (see
            :class:`resattn.models.ResNet`), and timm's builder keywords (``features_only``,
            ``out_indices``, ``feature_cls``, ``pretrained_cfg_overlay``): the builders go through
            ``timm.models.build_model_with_cfg`` as the ``resattn_<name>`` models of timm's
            registry.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered names) or a bad option.
    """
    if name not in _MODELS:
        raise ValueError(f"model name={name!r} is not registered; allowed: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    if pretrained:
        load_pretrained(model, name if pretrained is True else pretrained)
    return model
