"""resattn: attention in residual networks, in the four placements, with near-identity gating."""
from .attention import ATTN_NAMES, create_attention
from .blocks import PATTERNS, AttentionConfig, BasicBlock, Bottleneck, ResidualBlock
from .models import ResNet, create_model, list_models
from .convert import ConversionReport, convert, parity_check
from .advise import Advice, advise
from .modulation import MODULATIONS, Modulation
from .monitor import GateMonitor
from .weights import load_model, load_pretrained, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "ATTN_NAMES", "PATTERNS", "MODULATIONS", "AttentionConfig", "Modulation", "ResidualBlock",
    "BasicBlock", "Bottleneck", "ResNet", "create_attention", "create_model", "list_models",
    "convert", "parity_check", "ConversionReport", "GateMonitor", "load_pretrained", "load_model",
    "save_checkpoint", "advise", "Advice",
]
