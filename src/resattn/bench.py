"""Side-by-side cost of the patterns: parameters, MFLOPs per image, training images/s, and each
variant's ratio to the plain network, measured in one run (interleaved rounds, median)."""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from .compare import DEFAULT_ATTN, VARIANTS, _model_kwargs
from .models import create_model
from .train import count_mflops

__all__ = ["run_bench"]


def _step_time(model, opt, x, y, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def run_bench(model_name: str, variants: Sequence[str], *, batch_size: int = 128,
              input_shape: tuple[int, int, int] = (1, 28, 28), steps: int = 10, rounds: int = 3,
              channels_last: bool = True, num_classes: int = 10) -> str:
    """Return a text table; raises ValueError for an unknown variant (allowed: VARIANTS)."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"patterns={bad} not allowed; allowed: {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    x = torch.randn(batch_size, *input_shape)
    y = torch.randint(0, num_classes, (batch_size,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    setups = {}
    for v in variants:
        m = create_model(model_name, num_classes=num_classes, in_chans=input_shape[0],
                         **_model_kwargs(v, DEFAULT_ATTN.get(v), "eca"))
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        _step_time(m, opt, x, y, 2)  # warm-up
        setups[v] = (m, opt, sum(p.numel() for p in m.parameters()), count_mflops(m, input_shape))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            m, opt, *_ = setups[v]
            times[v].append(_step_time(m, opt, x, y, steps))
    base = statistics.median(times[variants[0]])
    lines = [f"{model_name}, batch {batch_size}, input {input_shape}, {torch.get_num_threads()} threads, "
             f"median of {rounds} rounds x {steps} steps; ratios relative to '{variants[0]}'",
             f"{'variant':<10} {'params':>10} {'MFLOPs':>8} {'img/s':>8} {'time ratio':>10}"]
    for v in variants:
        t = statistics.median(times[v])
        _, _, n, mf = setups[v]
        lines.append(f"{v:<10} {n:>10,} {mf:>8.1f} {batch_size / t:>8.0f} {t / base:>10.2f}")
    return "\n".join(lines)
