"""Where a training step's time goes, with torch.profiler: the data path against the model.

Runs the training loop of ``resattn.workflow.train`` itself (its batches, augmentation and optimizer step)
for a few steps and reports the time inside ``data`` (cutting and augmenting the next batch) and
``step`` (forward, loss, backward, optimizer), then the operators of the step that took the most
self time. With ``--variants`` it profiles each in turn (for example ``none`` and ``dual``) so the
operators a gated path adds can be read side by side.

    python benchmarks/profile_step.py --precision bf16 --variants none,dual --steps 6 --threads 2

Measured numbers depend on the machine's load; say so when quoting them.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function


def _variant(spec: str) -> dict:
    from resattn.tools.bench import parse_variant
    return parse_variant(spec)


def profile_variant(spec: str, args: argparse.Namespace) -> None:
    from resattn.workflow.data import load_dataset
    from resattn.workflow.train import TrainConfig, _Dist, _epoch_batches, _prepare, _select_device, _step

    n = args.batch_size * (args.steps + args.warmup)
    bundle = load_dataset(args.dataset, train_subset=n, test_subset=args.batch_size)
    cfg = TrainConfig(model=args.model, model_kwargs=_variant(spec), dataset=args.dataset,
                      batch_size=args.batch_size, precision=args.precision, monitor=False,
                      device=args.device, epochs=1)
    device = _select_device(cfg.device)
    with tempfile.TemporaryDirectory() as out:
        run = _prepare(cfg, __import__("pathlib").Path(out), device, _Dist(device), bundle,
                       resume=False, progress=False)
        run.net.train()
        batches = _epoch_batches(run, 0)
        for _ in range(args.warmup):
            _step(run, *next(batches))
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                with record_function("data"):
                    x, y = next(batches)
                with record_function("step"):
                    _step(run, x, y)
                    sync()
        wall = time.perf_counter() - t0
    events = {e.key: e for e in prof.key_averages()}
    data = events["data"].cpu_time_total / 1e3
    step = events["step"].cpu_time_total / 1e3
    print(f"\n== {spec}: {args.model}, batch {args.batch_size}, {run.precision}, {device}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps: {1e3 * wall / args.steps:.1f} "
          f"ms/step wall; data {data / args.steps:.2f} ms/step ({100 * data / (data + step):.1f}%), "
          f"step {step / args.steps:.1f} ms/step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--variants", default="none,dual", help="comma list, as resattn bench")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec in args.variants.split(","):
        profile_variant(spec, args)


if __name__ == "__main__":
    main()
