"""Mask form of timm's attention modules: A(z) = p * m, computed with the module's own submodules.

Every attention type that scales its input gives, for an input z of shape (N, C, H, W),

    A(z) = p * m        p: a full-size map (z itself, or z * m_c for the two-stage CBAM),
                        m: a mask broadcastable to p

so a gated path can apply its modulation in one fused operation on the full map instead of
materialising z * m, then gamma * (z * m), then z + ... (see :mod:`resattn.layers.modulation`). The
masks below repeat, line by line, the ``forward`` of the timm module they stand for (timm 1.0.x,
``timm/layers/``) up to the final ``x * gate(...)``; they read the module's own parameters, so
state_dicts and checkpoints are unchanged.

    type           timm class             m: shape                     p
    se             SEModule               (N, C, 1, 1)                 z
    ese            EffectiveSEModule      (N, C, 1, 1)                 z
    eca, ecam      EcaModule              (N, C, 1, 1)                 z
    ceca           CecaModule             (N, C, 1, 1)                 z
    ge             GatherExcite           (N, C, 1, 1) or (N, C, H, W) z   (extent > 0: upsampled)
    gc             GlobalContext (scale)  (N, C, 1, 1)                 z
    cbam, lcbam    (Light)CbamModule      (N, 1, H, W)                 z * m_c (timm's channel
                                                                       stage)
    coord, ela     CoordAttn, EfficientLocalAttn   (N,C,H,1) x (N,C,1,W) product -> (N, C, H, W)
    scoord, strip  SimpleCoordAttn, StripAttn      sigmoid of (N,C,H,1) + (N,C,1,W) -> (N, C, H, W)

With ``has_skip=True`` (coord family) timm returns z * m + z = z * (1 + m); the mask is then 1 + m.

Pooling. Means are sums scaled on the small result (:func:`mean_hw`, :func:`mean_c`): the
backward of ``mean`` writes grad / n over the whole map, a sum's is a broadcast view. Under
bf16 (or fp16) autocast the maps are bf16, and PyTorch's CPU kernel for ``amax`` over H, W or
over C is a slow path in bf16 (measured 25 to 90 times slower than in fp32 on a 128x32x14x14
map); for those maps :func:`max_hw` uses the adaptive max-pooling kernel and :func:`max_c` an
fp32 maximum that saves nothing new: the same values and gradients, except that the gradient
of a maximum over H, W reached by several entries at once (a tie, likelier in bf16's 8 bits)
goes to one of them instead of being shared. fp32 and fp64 maps keep ``amax``.

Pointwise MLPs on pooled vectors. timm's SE-style MLPs are 1x1 convolutions on (N, C, 1, 1)
maps; :func:`pointwise` runs such a convolution (same weight, same bias) as ``F.linear`` on the
flattened vector: the same matrix product, without the convolution's per-call set-up (measured
0.25-0.3 ms less per SE mask, forward and backward, bf16, batch 128, on this project's CPU).

No mask form: ``gca`` (GlobalContext with ``fuse_add``: it adds a context term, z + t(z), which no
mask reproduces), user callables and any other module. Those keep the module's own forward
(:func:`has_mask_form` is False) and :class:`~resattn.layers.modulation.Modulation` applies them as before.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers.cbam import (CbamModule, ChannelAttn, LightCbamModule, LightChannelAttn,
                              LightSpatialAttn, SpatialAttn)
from timm.layers.coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn
from timm.layers.eca import CecaModule, EcaModule
from timm.layers.gather_excite import GatherExcite
from timm.layers.global_context import GlobalContext
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule

__all__ = ["MaskForm", "has_mask_form", "mask_form", "mean_hw", "mean_c", "max_hw", "max_c",
           "pointwise", "has_hooks"]

#: (p, m) with A(z) == p * m; p is None when it is z itself.
MaskForm = tuple[Optional[torch.Tensor], torch.Tensor]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def mean_hw(x: torch.Tensor) -> torch.Tensor:
    """Mean over H, W: (N, C, H, W) -> (N, C, 1, 1), as a sum scaled on the small result (the
    backward of ``mean`` writes grad / (H W) over the full map; a sum's is a broadcast view)."""
    return x.sum((2, 3), keepdim=True) * (1.0 / (x.shape[2] * x.shape[3]))


def mean_c(x: torch.Tensor) -> torch.Tensor:
    """Mean over C: (N, C, H, W) -> (N, 1, H, W), as :func:`mean_hw` does it."""
    return x.sum(1, keepdim=True) * (1.0 / x.shape[1])


def max_hw(x: torch.Tensor) -> torch.Tensor:
    """Maximum over H, W: (N, C, H, W) -> (N, C, 1, 1) (autograd keeps the argmax, not x)."""
    if x.dtype in _LOW_PRECISION:
        return F.adaptive_max_pool2d(x, 1)
    return x.amax((2, 3), keepdim=True)


class _MaxOverChannels(torch.autograd.Function):
    """amax over C of a low-precision x, computed in fp32 (the bf16 kernel is the slow one);
    saves x (the path saves it anyway) and the small result. Backward as ``amax``'s: the
    gradient is shared by the channels that reach the maximum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        values = (x.float() if x.dtype in _LOW_PRECISION else x).amax(dim=1, keepdim=True)
        ctx.save_for_backward(x, values)
        return values.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, values = ctx.saved_tensors
        # 1 where x reaches the maximum, else 0, in x's dtype without a bool map: x - max <= 0,
        # so sign() + 1 is 0 or 1 (values is exact in x's dtype: it is one of x's entries)
        mask = (x - values.to(x.dtype)).sign_().add_(1)
        return mask.mul_(grad / mask.sum(dim=1, keepdim=True))


def max_c(x: torch.Tensor) -> torch.Tensor:
    """Maximum over C: (N, C, H, W) -> (N, 1, H, W)."""
    if x.dtype in _LOW_PRECISION and torch.is_grad_enabled() and x.requires_grad:
        return _MaxOverChannels.apply(x)
    if x.dtype in _LOW_PRECISION:
        return x.float().amax(dim=1, keepdim=True).to(x.dtype)
    return x.amax(dim=1, keepdim=True)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                      "_global_backward_hooks", "_global_backward_pre_hooks")


def has_hooks(module: nn.Module, *, own: bool = True) -> bool:
    """True when ``module(x)`` would call a hook: forward, forward-pre or backward, the
    module's own (``own``) or global ones (``torch.nn.modules.module.register_module_*``)."""
    from torch.nn.modules import module as _m
    return ((own and any(getattr(module, d, None) for d in _HOOK_DICTS))
            or any(getattr(_m, d, None) for d in _GLOBAL_HOOK_DICTS))


def pointwise(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a pooled x (N, C, 1, 1): a plain 1x1 ``nn.Conv2d`` (stride 1, no padding,
    one group) runs as ``F.linear`` on x flattened, then back to (N, C_out, 1, 1); anything else
    (another module, a larger map, a conv with a hook: :func:`has_hooks`) is called as it is."""
    if (type(conv) is nn.Conv2d and x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1
            and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            and conv.padding in ((0, 0), "valid") and not has_hooks(conv)):
        y = F.linear(x.flatten(1), conv.weight.flatten(1), conv.bias)
        return y.view(y.shape[0], y.shape[1], 1, 1)
    return conv(x)


def _se(mod: SEModule, x: torch.Tensor) -> MaskForm:
    x_se = mean_hw(x)
    if mod.add_maxpool:
        x_se = 0.5 * x_se + 0.5 * max_hw(x)
    x_se = pointwise(mod.fc1, x_se)
    x_se = mod.act(mod.bn(x_se))
    x_se = pointwise(mod.fc2, x_se)
    return None, mod.gate(x_se)


def _ese(mod: EffectiveSEModule, x: torch.Tensor) -> MaskForm:
    x_se = mean_hw(x)
    if mod.add_maxpool:
        x_se = 0.5 * x_se + 0.5 * max_hw(x)
    return None, mod.gate(pointwise(mod.fc, x_se))


def _eca(mod: EcaModule, x: torch.Tensor) -> MaskForm:
    y = mean_hw(x).view(x.shape[0], 1, -1)
    y = mod.conv(y)
    if mod.conv2 is not None:
        y = mod.act(y)
        y = mod.conv2(y)
    return None, mod.gate(y).view(x.shape[0], -1, 1, 1)


def _ceca(mod: CecaModule, x: torch.Tensor) -> MaskForm:
    y = mean_hw(x).view(x.shape[0], 1, -1)
    y = F.pad(y, (mod.padding, mod.padding), mode="circular")
    y = mod.conv(y)
    return None, mod.gate(y).view(x.shape[0], -1, 1, 1)


def _ge(mod: GatherExcite, x: torch.Tensor) -> MaskForm:
    size = x.shape[-2:]
    if mod.gather is not None:
        x_ge = mod.gather(x)
    elif mod.extent == 0:
        x_ge = mean_hw(x)
        if mod.add_maxpool:
            x_ge = 0.5 * x_ge + 0.5 * max_hw(x)
    else:
        x_ge = F.avg_pool2d(x, kernel_size=mod.gk, stride=mod.gs, padding=mod.gk // 2,
                            count_include_pad=False)
        if mod.add_maxpool:
            x_ge = 0.5 * x_ge + 0.5 * F.max_pool2d(x, kernel_size=mod.gk, stride=mod.gs,
                                                   padding=mod.gk // 2)
    x_ge = mod.mlp(x_ge)
    if x_ge.shape[-1] != 1 or x_ge.shape[-2] != 1:
        x_ge = F.interpolate(x_ge, size=size)
    return None, mod.gate(x_ge)


def _gc(mod: GlobalContext, x: torch.Tensor) -> MaskForm:
    B, C, H, W = x.shape
    if mod.conv_attn is not None:
        attn = mod.conv_attn(x).reshape(B, 1, H * W)
        attn = F.softmax(attn, dim=-1).unsqueeze(3)
        context = (x.reshape(B, C, H * W).unsqueeze(1) @ attn).view(B, C, 1, 1)
    else:
        context = mean_hw(x)
    return None, mod.gate(mod.mlp_scale(context))


def _channel_mask(ch: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CBAM's channel mask m_c (N, C, 1, 1), as timm's ChannelAttn / LightChannelAttn compute it
    before ``x * m_c``; ChannelAttn's shared MLP runs once on the two pooled vectors stacked."""
    if isinstance(ch, LightChannelAttn):
        pooled = 0.5 * mean_hw(x) + 0.5 * max_hw(x)
        return torch.sigmoid(pointwise(ch.fc2, ch.act(pointwise(ch.fc1, pooled))))
    n = x.shape[0]
    both = pointwise(ch.fc2, ch.act(pointwise(ch.fc1, torch.cat([mean_hw(x), max_hw(x)], dim=0))))
    return ch.gate(both[:n] + both[n:])


def _cbam(mod: nn.Module, x: torch.Tensor) -> MaskForm:
    # two stages: the channel stage gives p = z * m_c (one full pass; the spatial mask is read
    # from it), the spatial mask m_s = gate(conv(pool_c(p))) is (N, 1, H, W)
    p = x * _channel_mask(mod.channel, x)
    sp = mod.spatial
    if isinstance(sp, LightSpatialAttn):
        a = 0.5 * mean_c(p) + 0.5 * max_c(p)
    else:
        a = torch.cat([mean_c(p), max_c(p)], dim=1)
    return p, sp.gate(sp.conv(a))


def _skip(mod: nn.Module, m: torch.Tensor) -> MaskForm:
    return None, (m + 1) if mod.has_skip else m


def _coord(mod: CoordAttn, x: torch.Tensor) -> MaskForm:
    N, C, H, W = x.size()
    x_h = x.mean(3, keepdim=True)
    x_w = x.mean(2, keepdim=True).transpose(-1, -2)
    y = mod.act(mod.bn1(mod.conv1(torch.cat([x_h, x_w], dim=2))))
    x_h, x_w = torch.split(y, [H, W], dim=2)
    a_h = mod.gate(mod.conv_h(x_h))
    a_w = mod.gate(mod.conv_w(x_w.transpose(-1, -2)))
    return _skip(mod, a_w * a_h)


def _scoord(mod: SimpleCoordAttn, x: torch.Tensor) -> MaskForm:
    x_h = mod.act(mod.fc1(x.mean(dim=3).transpose(1, 2)))
    x_w = mod.act(mod.fc1(x.mean(dim=2).transpose(1, 2)))
    a_h = mod.fc_h(x_h).transpose(1, 2).unsqueeze(-1)
    a_w = mod.fc_w(x_w).transpose(1, 2).unsqueeze(-2)
    return _skip(mod, mod.gate(a_h + a_w))


def _ela(mod: EfficientLocalAttn, x: torch.Tensor) -> MaskForm:
    x_h = mod.act(mod.norm_h(mod.conv_h(x.mean(dim=3, keepdim=True))))
    x_w = mod.act(mod.norm_w(mod.conv_w(x.mean(dim=2, keepdim=True))))
    return _skip(mod, mod.gate(x_h) * mod.gate(x_w))


def _strip(mod: StripAttn, x: torch.Tensor) -> MaskForm:
    x_h = mod.conv_h(x.mean(dim=3, keepdim=True))
    x_w = mod.conv_w(x.mean(dim=2, keepdim=True))
    return _skip(mod, mod.gate(x_h + x_w))


# exact classes: a subclass may change forward, so it keeps its own
_FORMS: dict[type, Callable[[nn.Module, torch.Tensor], MaskForm]] = {
    SEModule: _se, EffectiveSEModule: _ese, EcaModule: _eca, CecaModule: _ceca,
    GatherExcite: _ge, GlobalContext: _gc, CbamModule: _cbam, LightCbamModule: _cbam,
    CoordAttn: _coord, SimpleCoordAttn: _scoord, EfficientLocalAttn: _ela, StripAttn: _strip,
}


def has_mask_form(module: Optional[nn.Module]) -> bool:
    """True when :func:`mask_form` reproduces ``module``'s forward (dispatch on its exact timm
    class; ``GlobalContext`` only with ``fuse_scale`` and without ``fuse_add``)."""
    if module is None or type(module) not in _FORMS:
        return False
    if isinstance(module, GlobalContext):
        return module.mlp_add is None and module.mlp_scale is not None
    if isinstance(module, (CbamModule, LightCbamModule)):
        return (type(module.channel) in (ChannelAttn, LightChannelAttn)
                and type(module.spatial) in (SpatialAttn, LightSpatialAttn))
    return True


def mask_form(module: nn.Module, z: torch.Tensor) -> MaskForm:
    """(p, m) with ``module(z) == p * m`` (p None: p is z), for a module with
    :func:`has_mask_form`.

    Args:
        module: a timm attention module (see the table in this module's docstring).
        z: input (N, C, H, W).

    Returns:
        p: None (meaning z) or a full-size (N, C, H, W) map; m: the mask, broadcastable to z.

    Raises:
        ValueError: ``module`` has no mask form.
    """
    fn = _FORMS.get(type(module))
    if fn is None or not has_mask_form(module):
        allowed = ", ".join(c.__name__ for c in _FORMS)
        raise ValueError(f"module={type(module).__name__} has no mask form; allowed: {allowed} "
                         "(GlobalContext without fuse_add)")
    return fn(module, z)

