"""resattn: attention in residual networks, in the four placements, with near-identity gating.

The package, by layer (each imports only from the layers above it):

* :mod:`resattn.layers`: the network pieces: attention modules (``attention``), mask forms
  (``masks``), gated paths (``modulation``) and residual blocks (``blocks``);
* :mod:`resattn.models`: the ResNet family, its timm registration and torchvision weights;
* :mod:`resattn.tools`: what acts on a model: ``convert`` (retrofit), ``weights`` (checkpoints),
  ``monitor``, ``inspect``, ``export``, ``advise`` and ``bench``;
* :mod:`resattn.workflow`: experiments: ``data``, ``train``, ``executors``, ``cache``,
  ``compare``, ``stats``, ``stability``, ``report``, ``study``, ``evidence``;
* :mod:`resattn.utils`: ``precision`` and ``machine``; :mod:`resattn.cli` the command line.

The earlier flat paths (``resattn.train``, ``resattn.blocks``, ...) still import, as aliases of
the same modules (:mod:`resattn._aliases`).
"""
from .layers.attention import ATTN_NAMES, create_attention
from .layers.blocks import PATTERNS, AttentionConfig, BasicBlock, Bottleneck, PathConfig, ResidualBlock
from .layers.modulation import MODULATIONS, Modulation
from .models import ResNet, create_model, list_models
from .tools.weights import load_model, load_pretrained, save_checkpoint
from .tools.advise import Advice, advise
from .tools.convert import ConversionReport, convert, parity_check
from .tools.monitor import GateMonitor
from . import _aliases

_aliases.install(__name__)

__version__ = "0.1.0"

__all__ = [
    "ATTN_NAMES", "PATTERNS", "MODULATIONS", "AttentionConfig", "PathConfig", "Modulation",
    "ResidualBlock", "BasicBlock", "Bottleneck", "ResNet", "create_attention", "create_model",
    "list_models", "convert", "parity_check", "ConversionReport", "GateMonitor", "load_pretrained",
    "load_model", "save_checkpoint", "advise", "Advice",
]
