"""Where a result was made: the one description of the machine, the device and the versions that
``result.json``, the compare report and ``study.json`` record."""
from __future__ import annotations

import platform
from typing import Optional

import torch

__all__ = ["machine_description", "device_name", "device_label", "versions"]


def machine_description() -> str:
    """``Linux-6.1-x86_64-with-glibc2.36, x86_64, 16 threads, NVIDIA H200`` (``no GPU`` without
    CUDA): the platform, the processor, torch's thread count and the first GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, {gpu}")


def device_name(device: Optional[torch.device] = None) -> str:
    """``cpu (16 threads)`` or the GPU's name (``NVIDIA H200``): where a run trained."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def device_label(device: str = "cpu") -> str:
    """The device in words: the GPU's name, or the CPU's model, its threads and whether it has
    native bf16 units (:func:`resattn.utils.precision.cpu_has_native_bf16`)."""
    from .precision import cpu_has_native_bf16
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return (f"{name}, {torch.get_num_threads()} threads, native bf16: "
            f"{'yes' if cpu_has_native_bf16() else 'no'}")


def versions() -> str:
    """``torch 2.14.1, python 3.11.2, resattn 0.1.0`` (``unknown`` when not installed)."""
    try:
        from importlib.metadata import version
        own = version("resattn")
    except Exception:  # not installed (PYTHONPATH use)
        own = "unknown"
    return f"torch {torch.__version__}, python {platform.python_version()}, resattn {own}"
