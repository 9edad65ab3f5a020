"""resattn: attention in residual networks, in the four placements, with near-identity gating."""
from .attention import ATTN_NAMES, create_attention
from .blocks import PATTERNS, AttentionConfig, BasicBlock, Bottleneck, ResidualBlock
from .models import ResNet, create_model, list_models
from .modulation import MODULATIONS, Modulation

__version__ = "0.1.0"

__all__ = [
    "ATTN_NAMES", "PATTERNS", "MODULATIONS", "AttentionConfig", "Modulation", "ResidualBlock",
    "BasicBlock", "Bottleneck", "ResNet", "create_attention", "create_model", "list_models",
]
