"""Network pieces: attention modules (:mod:`.attention`), their mask forms (:mod:`.masks`), the
gated paths z -> z * g(z) (:mod:`.modulation`) and the residual blocks in the four placements
(:mod:`.blocks`)."""
from .attention import ATTN_NAMES, create_attention
from .blocks import (PATTERNS, AttentionConfig, BasicBlock, Bottleneck, PathConfig, ResidualBlock,
                     attention_paths)
from .modulation import MODULATIONS, Modulation

__all__ = ["ATTN_NAMES", "create_attention", "PATTERNS", "AttentionConfig", "PathConfig",
           "BasicBlock", "Bottleneck", "ResidualBlock", "attention_paths", "MODULATIONS",
           "Modulation"]
