"""How an attention module A is applied to one path of a residual block.

With A(z) = z * m(z) (the form of timm's SE, ECA, CBAM, CoordAtt, ...):

    gate:           out = A(z)                  = z * m(z)
    near_identity:  out = z + gamma * A(z)      = z * (1 + gamma * m(z))

``near_identity`` is exactly the identity at gamma = 0, whatever A is, so a block whose every path
is near-identity with gamma = 0 computes the plain residual block. This is the same zero-initialised
learnable scale as ReZero (Bachlechner et al., 2020) and LayerScale (Touvron et al., CaiT, 2021),
applied to the attention term only.

With ``gamma_max`` set, gamma is bounded: gamma = gamma_max * tanh(theta / gamma_max), where theta is
the stored parameter (slope 1 at 0, so small gammas train like the unbounded form). For a mask in
[0, 1] the path gain z -> out then stays within [1 - gamma_max, 1 + gamma_max]: the skip can be tuned
but never closed. Unbounded (``gamma_max=None``, the default of every path but the dual skip),
gamma can leave [-1, 1] and, once gamma * m < -1 somewhere, 1 + gamma * m(z) changes sign: the path
then inverts its input there. A tester saw a residual gamma reach -2.2 within 30 steps on noisy
data; set ``gamma_max`` (for example 1.0) where the sign must stay.

Fused paths. For an attention type with a mask form (:mod:`resattn.layers.masks`: every timm type resattn
supports except ``gca``) the path is computed from the mask, in one operation on the full map:

    gate:           out = z * m                     (CBAM: p * m_s, p = z * m_c)
    near_identity:  out = z * (1 + gamma * m)       (CBAM: addcmul(z, p, gamma * m_s))

and autograd saves z (p for CBAM) and the small mask only, not z * m nor gamma * (z * m).
:meth:`Modulation.terms` gives A(z) as a sum of such products so that a block can fold its skip
into the same operation (:func:`add_terms`: skip + A(F(x)) is one ``addcmul``). Types without a
mask form, user callables, TorchScript and tracing/ONNX export use the reference form
``attn(z)`` / ``z + gamma * attn(z)``.

The switch belongs to the model (timm's habit): every :class:`Modulation` and every residual
block captures ``fused`` at construction (``create_model(..., fused=False)``), and
``model.set_fused(False)`` (or :func:`set_fused` on any module, or ``with fused(model, False):``)
turns its paths to the reference form, for comparisons; other models are untouched.

Hooks. A path runs its attention module's own ``forward`` (the reference form), so that every
hook is called and what it returns is used, while any hook (forward, pre, backward; global ones
included) is registered on that module or on a module inside it. Forward hooks and pre-hooks on
the :class:`Modulation` itself (the gate monitor's) are called in the fused form too, with z and
A(z) (:meth:`Modulation.terms`); backward hooks or hooks taking keyword arguments there make the
block call the path as a module.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from .attention import AttnSpec, attn_name, create_attention
from .masks import has_hooks, has_mask_form, mask_form

__all__ = ["MODULATIONS", "GAMMA_SHAPES", "Modulation", "FusedSwitch", "validate_modulation",
           "fused", "set_fused", "fused_enabled", "has_hooks", "add_terms", "scale_terms", "Terms"]

#: A(z) as a sum of products: [(p, s), ...] means sum of p * s (s None: p itself).
Terms = List[Tuple[torch.Tensor, Optional[torch.Tensor]]]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def eager_only(fn: Any) -> Any:
    """``torch.jit.unused`` for code that TorchScript must skip: the string annotations of this
    file (``from __future__ import annotations``) are resolved first, as TorchScript needs them
    for the stub it compiles in place of ``fn``."""
    import typing
    fn.__annotations__ = typing.get_type_hints(fn)
    return torch.jit.unused(fn)


class FusedSwitch:
    """Mixin of the modules that hold a fused/reference choice (:class:`Modulation`, residual
    blocks, ResNet): ``fused`` is captured at construction; :meth:`set_fused` sets it on the
    module and every such module inside it."""

    fused = True  # no annotation: TorchScript reads class annotations

    @torch.jit.ignore
    def set_fused(self, enabled: bool = True) -> None:
        """Fused (True) or reference (False) form on every gated path inside this module."""
        set_fused(self, enabled)  # type: ignore[arg-type]


def _switches(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, FusedSwitch)]


def _moved_to_the_model(name: str, enabled: Any) -> TypeError:
    return TypeError(
        f"{name}({enabled!r}) switched every model in the process; the switch belongs to each "
        f"model now: model.set_fused({enabled!r}), set_fused(model, {enabled!r}) or "
        f"'with fused(model, {enabled!r}):'")


def set_fused(module: nn.Module, enabled: bool = True) -> None:
    """Use the fused (True) or the reference (False) form on every gated path inside
    ``module`` (a model, a block, a path); other models are untouched.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` (the process-wide ``set_fused(False)`` of
            earlier versions; the message names the replacement).
    """
    if not isinstance(module, nn.Module):
        raise _moved_to_the_model("set_fused", module)
    for m in _switches(module):
        m.fused = bool(enabled)


@contextlib.contextmanager
def fused(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager: ``with fused(model, False): model(x)`` runs ``model``'s reference
    (unfused) form; each path's own setting comes back at the end.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` (the process-wide ``fused(False)`` of
            earlier versions; the message names the replacement).
    """
    if not isinstance(module, nn.Module):
        raise _moved_to_the_model("fused", module)
    before = [(m, m.fused) for m in _switches(module)]
    set_fused(module, enabled)
    try:
        yield module
    finally:
        for m, value in before:
            m.fused = value


@eager_only
def fused_enabled() -> bool:
    """True when nothing needs the reference form (TorchScript tracing, torch.fx symbolic
    tracing, ONNX export): the fused form branches on the mask's type. Each module's own
    ``fused`` setting is checked besides."""
    return (not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not fx_tracing())


@eager_only
def fx_tracing() -> bool:
    """True inside ``torch.fx.symbolic_trace`` (timm's feature extraction uses it): shapes are
    proxies there, so eager-only checks and the fused form step aside."""
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


@eager_only
def scale_terms(terms: Terms, factor: torch.Tensor) -> Terms:
    """Every term times ``factor`` (small, for example a per-sample drop-path scale (N, 1, 1, 1)):
    a wrapper of a path's output applied to its :data:`Terms` without a full pass."""
    return [(p, factor if s is None else s * factor) for p, s in terms]


@eager_only
def add_terms(terms: Terms) -> torch.Tensor:
    """sum of p * s over ``terms`` in one pass per scaled term: an unscaled term starts the sum for
    free, each scaled one is an ``addcmul``. s is cast to p's dtype (under autocast the masks stay
    small while the maps keep bf16). Shapes: every p (N, C, H, W), every s broadcastable to it."""
    out: Optional[torch.Tensor] = None
    rest = []
    for p, s in terms:
        if s is None and out is None:
            out = p
        else:
            rest.append((p, s))
    for p, s in rest:
        if s is not None and s.dtype != p.dtype:
            s = s.to(p.dtype)
        if out is None:
            out = p if s is None else p * s
        elif s is None:
            out = out + p
        else:
            out = torch.addcmul(out, p, s)
    assert out is not None, "add_terms needs at least one term"
    return out

MODULATIONS: tuple[str, ...] = ("gate", "near_identity")
GAMMA_SHAPES: tuple[str, ...] = ("scalar", "channel")


def _is_number(v: object) -> bool:
    """A real number (int or float), not a bool or a string such as ``'0.1'``."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def validate_modulation(modulation: str, gamma_init: float, gamma_max: Optional[float],
                        gamma_shape: str = "scalar", *, prefix: str = "") -> None:
    """Check modulation options; ``prefix`` ('skip_', 'res_' or '') names the arguments in errors.

    Raises:
        ValueError: ``modulation`` not in :data:`MODULATIONS`; ``gamma_shape`` not in
            :data:`GAMMA_SHAPES`; ``gamma_init`` not a finite number (a string or bool
            included); ``gamma_max`` not a finite number > 0 (or None); or
            |gamma_init| >= gamma_max (tanh cannot reach the bound).
    """
    if modulation not in MODULATIONS:
        raise ValueError(f"{prefix}modulation={modulation!r} is not allowed; allowed: "
                         f"{', '.join(MODULATIONS)}")
    if gamma_shape not in GAMMA_SHAPES:
        raise ValueError(f"gamma_shape={gamma_shape!r} is not allowed; allowed: "
                         f"{', '.join(GAMMA_SHAPES)}")
    if not (_is_number(gamma_init) and math.isfinite(gamma_init)):
        raise ValueError(f"{prefix}gamma_init={gamma_init!r} must be a finite number")
    if gamma_max is not None:
        if not (_is_number(gamma_max) and gamma_max > 0 and math.isfinite(gamma_max)):
            raise ValueError(f"{prefix}gamma_max={gamma_max!r} must be a finite number > 0, or None "
                             "for an unbounded gamma")
        if abs(gamma_init) >= gamma_max:
            raise ValueError(f"|{prefix}gamma_init|={abs(gamma_init)!r} must be < "
                             f"{prefix}gamma_max={gamma_max!r}")


def bounded_gamma(theta: torch.Tensor, gamma_max: Optional[float]) -> torch.Tensor:
    """gamma = gamma_max * tanh(theta / gamma_max), or theta itself when unbounded."""
    if gamma_max is None:
        return theta
    return gamma_max * torch.tanh(theta / gamma_max)


def initial_theta(gamma_init: float, gamma_max: Optional[float]) -> float:
    """The stored parameter theta that :func:`bounded_gamma` turns into ``gamma_init``:
    gamma_max * atanh(gamma_init / gamma_max), or ``gamma_init`` itself when unbounded."""
    if gamma_max is None:
        return float(gamma_init)
    return gamma_max * math.atanh(gamma_init / gamma_max)


class Modulation(FusedSwitch, nn.Module):
    """One gated path: ``gate`` (A(z)) or ``near_identity`` (z + gamma * A(z)).

    Args:
        attn: attention spec (name, callable ``channels -> nn.Module``, or None). With None the
            path is the identity and no parameters are created.
        channels: channels C of the path.
        modulation: ``'gate'`` or ``'near_identity'``.
        gamma_init: initial gamma (near_identity only).
        gamma_max: bound on |gamma| (near_identity only), or None for unbounded.
        gamma_shape: ``'scalar'`` (one gamma) or ``'channel'`` (shape (1, C, 1, 1)).
        attn_kwargs: keyword arguments for the attention module (``rd_ratio``, ``kernel_size``...).
        arg: argument name used in error messages (``attn``, ``skip_attn``, ``res_attn``).
        fused: compute the path from the attention's mask form (see the module docstring);
            False: the reference form. :meth:`set_fused` changes it later.

    Shape:
        input and output (N, C, H, W).

    Attributes:
        attn: the attention module (None when ``attn`` is None).
        gamma: the stored parameter (theta when bounded), only with ``near_identity``.

    Raises:
        ValueError: see :func:`validate_modulation` and :func:`resattn.layers.attention.validate_attn`;
            in training, an input of batch 1 and size 1x1 to a type with a BatchNorm inside
            (``cbam``), which names the input's shape.

    Unbounded gamma: with ``gamma_max=None`` the path gain 1 + gamma * m is not kept positive;
    gamma < -1 lets it change sign where m is near 1 (a residual gamma reached -2.2 within 30
    steps on noisy data in a tester's run). Bound it (``gamma_max``) where that matters.
    """

    def __init__(self, attn: AttnSpec, channels: int, modulation: str = "gate", *,
                 gamma_init: float = 0.0, gamma_max: Optional[float] = None,
                 gamma_shape: str = "scalar", attn_kwargs: Optional[dict[str, Any]] = None,
                 arg: str = "attn", prefix: str = "", fused: bool = True) -> None:
        super().__init__()
        self.fused = bool(fused)
        validate_modulation(modulation, gamma_init, gamma_max, gamma_shape, prefix=prefix)
        self.mode = modulation
        self.arg = arg
        self.attn_type = attn_name(attn)
        self.attn = create_attention(attn, channels, arg=arg, **(attn_kwargs or {}))
        self.gamma_max = None if gamma_max is None else float(gamma_max)
        if self.attn is not None and modulation == "near_identity":
            theta = initial_theta(gamma_init, self.gamma_max)
            shape = (1, channels, 1, 1) if gamma_shape == "channel" else ()
            self.gamma = nn.Parameter(torch.full(shape, theta))
        else:
            self.register_parameter("gamma", None)
        # CBAM's spatial stage normalises (N, 1, H, W) with BatchNorm: it needs N * H * W > 1
        self.needs_batch = self.attn is not None and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.attn.modules())

    @property
    def is_identity(self) -> bool:
        """True when this path has no attention."""
        return self.attn is None

    def effective_gamma(self) -> Optional[torch.Tensor]:
        """The gamma actually applied (bounded by ``gamma_max`` when set); None without gamma."""
        return None if self.gamma is None else bounded_gamma(self.gamma, self.gamma_max)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.attn is None:
            return z
        if not torch.jit.is_scripting() and not fx_tracing():
            self.check_input(z)
            if self.fusable():
                return add_terms(self._mask_terms(z))
        return self.reference(z)

    @eager_only
    def check_input(self, z: torch.Tensor) -> None:
        """Raise a ValueError naming the input when a BatchNorm inside the attention module would
        see one value per channel in training (batch 1 on a 1x1 map: CBAM's spatial stage)."""
        if self.training and getattr(self, "needs_batch", False) and z.dim() == 4 and \
                z.shape[0] * z.shape[2] * z.shape[3] == 1:
            raise ValueError(
                f"{self.arg}={self.attn_type!r} in training normalises over batch x height x "
                f"width with BatchNorm, which needs more than one value; its input (N, C, H, W) "
                f"is {tuple(z.shape)}: use a batch size >= 2 or larger inputs, or model.eval()")

    def reference(self, z: torch.Tensor) -> torch.Tensor:
        """The unfused form: ``attn(z)`` (gate) or ``z + gamma * attn(z)`` (near_identity)."""
        if self.attn is None:
            return z
        gamma = self.gamma
        if gamma is None:  # gate
            return self.attn(z)
        return z + bounded_gamma(gamma, self.gamma_max) * self.attn(z)

    @eager_only
    def fusable(self) -> bool:
        """True when this path runs fused now: ``fused`` on, nothing tracing, a mask form for its
        attention type, and no hook on the attention module or inside it (those run the
        module's own forward, so that every hook is called and its return value used)."""
        return (self.fused and fused_enabled() and has_mask_form(self.attn)
                and not any(has_hooks(m) for m in self.attn.modules()))

    @eager_only
    def terms(self, z: torch.Tensor) -> Terms:
        """A(z) as :data:`Terms` (a sum of products, see :func:`add_terms`).

        The identity path is [(z, None)]; a path without a fused form is [(self(z), None)].
        Forward hooks and pre-hooks on this module (the gate monitor's, on its recorded
        forwards) are called as ``self(z)`` would call them, with (z,) and A(z); when none
        returns a value the terms stay folded (the block's output is bit for bit the one
        without hooks), else the returned value is the path's output. Backward hooks, hooks
        taking keyword arguments and global hooks make it ``[(self(z), None)]``.
        """
        if self.attn is None:
            return [(z, None)]
        if not self.fusable() or self._needs_call():
            return [(self(z), None)]
        if self._forward_hooks or self._forward_pre_hooks:
            return self._hooked_terms(z)
        self.check_input(z)
        return self._mask_terms(z)

    @eager_only
    def _needs_call(self) -> bool:
        """Hooks that only ``self(z)`` honours: backward, with keyword arguments, global."""
        return bool(self._backward_hooks or self._backward_pre_hooks
                    or self._forward_hooks_with_kwargs or self._forward_pre_hooks_with_kwargs
                    or has_hooks(self, own=False))

    @eager_only
    def _hooked_terms(self, z: torch.Tensor) -> Terms:
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, (z,))
            if result is not None:
                z = result[0] if isinstance(result, tuple) else result
        self.check_input(z)
        terms = self._mask_terms(z)
        if not self._forward_hooks:
            return terms
        out = add_terms(terms)  # with autograd: a hook may return a value built from it
        replaced = False
        for hook in list(self._forward_hooks.values()):
            result = hook(self, (z,), out)
            if result is not None:
                out, replaced = result, True
        return [(out, None)] if replaced else terms

    @eager_only
    def _mask_terms(self, z: torch.Tensor) -> Terms:
        p, m = mask_form(self.attn, z)
        if self.gamma is None:  # gate: p * m
            return [(z if p is None else p, m)]
        gm = bounded_gamma(self.gamma, self.gamma_max) * m
        if p is not None:  # two stages: z + gamma * (p * m)
            return [(z, None), (p, gm)]
        if z.dtype in _LOW_PRECISION:  # 1 + gamma * m would round gamma * m away
            return [(z, None), (z, gm)]
        return [(z, 1 + gm)]

    def extra_repr(self) -> str:
        s = f"mode={self.mode}, attn={self.attn_type}"
        if self.gamma is not None:
            s += f", gamma_shape={tuple(self.gamma.shape)}, gamma_max={self.gamma_max}"
        return s


def gamma_names(model: nn.Module) -> set[str]:
    """Names of the gamma parameters of every :class:`Modulation` in ``model`` (``layer1.0.
    skip_attn.gamma``, ...): the scale of an attention term, which weight decay would pull to 0.
    The same for resattn's models (their ``no_weight_decay``) and converted torchvision or timm
    ones."""
    return {f"{name}.gamma" if name else "gamma" for name, m in model.named_modules()
            if isinstance(m, Modulation) and m.gamma is not None}
