"""Training precision: ``fp32``, ``bf16`` (autocast), or ``auto`` (bf16 where the hardware has it).

``auto`` resolves to ``bf16`` on CUDA and on CPUs with native bfloat16 arithmetic units (the
``amx_bf16`` or ``avx512_bf16`` flags: Intel Sapphire Rapids and later, AMD Zen 4 and later),
where bf16 autocast makes the convolutions markedly faster; elsewhere (older CPUs emulate bf16,
Apple silicon, ...) it resolves to ``fp32``. What ran is always the resolved value: runs record it
in ``result.json`` as ``precision``.

``bf16`` means ``torch.autocast(device_type, dtype=torch.bfloat16)`` around the forward and the
loss; weights, gradients and the optimizer stay float32.
"""
from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "validate_precision", "cpu_has_native_bf16",
           "resolve_precision", "autocast"]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: The default of ``TrainConfig.precision`` and of the command line (one line to change).
DEFAULT_PRECISION = "auto"

_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def validate_precision(precision: Any, *, arg: str = "precision") -> str:
    """Return ``precision`` when it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: anything else; the message names the argument and the allowed values.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{arg}={precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (``amx_bf16`` or ``avx512_bf16`` in the
    flags of ``/proc/cpuinfo``). Where the flags cannot be read (not Linux), False."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: Union[str, "torch.device"] = "cpu") -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or what ``auto`` means on ``device``.

    Raises:
        ValueError: an unknown ``precision``.
    """
    import torch  # here: the command line imports this module for its default
    validate_precision(precision)
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: Union[str, "torch.device"] = "cpu") -> Any:
    """A context manager: bf16 autocast on ``device`` for a (resolved) ``bf16``, else nothing."""
    import torch
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
