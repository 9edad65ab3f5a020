"""Cost of GateMonitor during training: forward + backward of cifar_resnet20 (pattern dual),
batch 128 of 1x28x28 images, on the CPU, with and without the monitor, in one run.

    python benchmarks/bench_monitor.py [--steps 20] [--every 1] [--threads N]

Steps alternate (without, with, without, with, ...) so that drifts of the machine hit both
sides alike; the medians are compared. One summary() per 10 steps, as a training loop would.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from resattn import create_model
from resattn.monitor import GateMonitor


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="GateMonitor(every=...)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual").train()
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    monitor = GateMonitor(model, every=args.every)

    for _ in range(args.warmup):
        step(model, x, y)
        with monitor:
            step(model, x, y)
    monitor.summary()

    times: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(args.steps):
        for side in ("without", "with"):
            if side == "with":
                monitor.attach()
            t0 = time.perf_counter()
            step(model, x, y)
            if side == "with" and (i + 1) % 10 == 0:
                monitor.summary()
            times[side].append(time.perf_counter() - t0)
            monitor.detach()

    base, mon = statistics.median(times["without"]), statistics.median(times["with"])
    print(f"cifar_resnet20 dual, batch {args.batch}x1x28x28, forward+backward, CPU, "
          f"{torch.get_num_threads()} threads, {args.steps} steps per side, every={args.every}")
    for label, side, median in (("without monitor", "without", base), ("with monitor", "with", mon)):
        mean = statistics.mean(times[side])
        print(f"  {label + ':':17s}median {1000 * median:8.2f} ms/step  (mean {1000 * mean:.2f})")
    print(f"  overhead ratio (with / without): {mon / base:.3f}")


if __name__ == "__main__":
    main()
