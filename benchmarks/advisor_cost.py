"""Cost of one ``advise`` call against one training run of the same model on the same data.

cifar_resnet20 on Fashion-MNIST, batch 128: the median seconds of a plain training step (SGD,
bf16 autocast as the 2-epoch reference run, channels_last) and of advise calls, measured
interleaved in one process so that machine load affects both alike; a 2-epoch run is 938 steps.
Writes ``benchmarks/results/advisor_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from resattn import create_model
from resattn.tools.advise import advise, dataset_batches
from resattn.workflow.data import load_dataset

STEPS_PER_RUN = 938
CALLS = {
    "default (se; pre, branch, skip, post; 4 batches x 2 inits)":
        dict(types=("se",), paths=("pre", "branch", "skip", "post")),
    "study (se, eca, cbam; branch, skip; 4 batches x 2 inits)":
        dict(types=("se", "eca", "cbam"), paths=("branch", "skip")),
}


def train_steps(data, n: int) -> list[float]:
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, num_classes=10).to(
        memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    times = []
    for i in range(n + 1):
        x, y = data[i % len(data)]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/advisor_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_dataset("fashion-mnist")
    data = dataset_batches(bundle.train, batch_size=128, batches=4, seed=0)
    steps, calls = [], {k: {"fp32": [], "bf16": []} for k in CALLS}
    for _ in range(args.rounds):
        steps += train_steps(data, 5)
        for name, kw in CALLS.items():
            for prec in ("fp32", "bf16"):
                torch.manual_seed(0)
                model = create_model("cifar_resnet20", in_chans=1, num_classes=10)
                t = time.perf_counter()
                advise(model, data, batches=4, inits=2, bf16=prec == "bf16", **kw)
                calls[name][prec].append(time.perf_counter() - t)
    step = statistics.median(steps)
    run = STEPS_PER_RUN * step
    report = {"threads": args.threads, "load_avg_end": list(os.getloadavg()),
              "train_step_bf16_s": step, "run_2_epochs_s_estimate": run, "calls": {}}
    for name, by in calls.items():
        report["calls"][name] = {p: {"s": statistics.median(v), "fraction_of_run":
                                     statistics.median(v) / run} for p, v in by.items()}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
