"""Cost of GateMonitor during training: forward + backward of cifar_resnet20 (pattern dual),
batch 128 of 1x28x28 images, on the CPU, with and without the monitor, in one run.

    python benchmarks/bench_monitor.py [--steps 20] [--every 1] [--threads N]
        [--baseline-monitor FILE]

Steps alternate (without, with, without, with, ...) so that drifts of the machine hit every
side alike. One summary() per 10 steps, as a training loop would. Printed: the median step
and, since with ``every`` > 1 the median step is an unrecorded one, the median over windows of
10 consecutive steps of a side (each holding the same share of recorded forwards for
``--every`` 1, 2, 5 or 10) and the ratio of those.
``--baseline-monitor`` adds a third side, the GateMonitor of another revision's monitor.py, in
the same rotation, e.g. to compare with main's::

    git show main:src/resattn/tools/monitor.py > /tmp/monitor_main.py
    python benchmarks/bench_monitor.py --every 10 --steps 40 --baseline-monitor /tmp/monitor_main.py
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
import statistics
import time

import torch

from resattn import create_model
from resattn.tools.monitor import GateMonitor


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def load_monitor(path: str) -> type:
    """GateMonitor of the monitor.py at ``path``, imported as a module of the resattn package
    (its relative imports resolve to this checkout's resattn)."""
    # a monitor.py of the flat layout (resattn/monitor.py) or of resattn/tools/
    package = "resattn.tools" if Path(path).parent.name == "tools" else "resattn"
    spec = importlib.util.spec_from_file_location(f"{package}._bench_baseline_monitor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GateMonitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per side (a multiple of 10 for the window medians)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="GateMonitor(every=...)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--baseline-monitor", default=None, metavar="FILE",
                        help="monitor.py of another revision, timed as a third side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, pattern="dual").train()
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    monitors = {"with": GateMonitor(model, every=args.every)}
    if args.baseline_monitor:
        monitors["baseline"] = load_monitor(args.baseline_monitor)(model, every=args.every)
    sides = ["without", *monitors]

    for _ in range(args.warmup):
        step(model, x, y)
        for monitor in monitors.values():
            with monitor:
                step(model, x, y)
    for monitor in monitors.values():
        monitor.summary()

    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(args.steps):
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:  # rotate the order
            monitor = monitors.get(side)
            if monitor is not None:
                monitor.attach()
            t0 = time.perf_counter()
            step(model, x, y)
            if monitor is not None and (i + 1) % 10 == 0:
                monitor.summary()
            times[side].append(time.perf_counter() - t0)
            if monitor is not None:
                monitor.detach()

    medians = {side: statistics.median(t) for side, t in times.items()}
    windows = {side: statistics.median(sum(t[j:j + 10]) / 10 for j in range(0, len(t) - 9, 10))
               if len(t) >= 10 else float("nan") for side, t in times.items()}
    print(f"cifar_resnet20 dual, batch {args.batch}x1x28x28, forward+backward, CPU, "
          f"{torch.get_num_threads()} threads, {args.steps} steps per side, every={args.every}")
    labels = {"without": "without monitor", "with": "with monitor",
              "baseline": f"with {args.baseline_monitor}"}
    for side in sides:
        print(f"  {labels[side] + ':':32s}median {1000 * medians[side]:8.2f} ms/step, "
              f"10-step windows {1000 * windows[side]:8.2f} ms/step "
              f"(mean {1000 * statistics.mean(times[side]):.2f})")
    for side in monitors:
        print(f"  ratio {labels[side]} / without: {windows[side] / windows['without']:.3f} "
              f"(10-step windows), {medians[side] / medians['without']:.3f} (median step)")


if __name__ == "__main__":
    main()
