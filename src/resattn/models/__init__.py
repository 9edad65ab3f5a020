"""Model builders, resattn's registry and timm's (``resattn_*`` names, :mod:`._timm`)."""
from . import _timm  # registers the resattn_* names in timm's registry
from ._registry import create_model, is_model, list_models, register_model
from .resnet import Placement, ResNet, resolve_placement

__all__ = ["create_model", "list_models", "is_model", "register_model", "ResNet", "Placement",
           "resolve_placement"]
