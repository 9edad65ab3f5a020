"""Gradient checkpointing (``model.set_grad_checkpointing()``, timm's ``checkpoint_seq``): peak memory
and step time of one forward + backward, with and without, side by side in one run; and whether
loss and gradients agree.

    python benchmarks/bench_grad_checkpointing.py [--model resattn_resnet50] [--batch 8]
        [--size 224] [--device cpu|cuda] [--steps 2] [--threads N]

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the step; on the CPU the rise of the
process's peak resident set (``ru_maxrss``) over the step, each side in its own fresh process
(a process's peak never goes down, so the two sides cannot share one), with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident set. Each side builds the same
model from the same seed and runs the same batch; the first side's loss and gradients are saved and
compared with the second's (max |difference|).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def one_side(args: argparse.Namespace, checkpointing: bool, grads_path: str) -> dict:
    import timm

    import resattn  # noqa: F401  (registers the resattn_* names)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model).to(args.device).train()
    model.set_grad_checkpointing(checkpointing)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(args.device)
    y = torch.randint(0, model.num_classes, (args.batch,), generator=g).to(args.device)
    times, peak = [], 0.0
    for step in range(args.steps):
        model.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
        else:
            peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
        times.append(time.perf_counter() - t0)
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters()}
    if not os.path.exists(grads_path):
        torch.save({"loss": loss.detach().cpu(), "grads": grads}, grads_path)
        diff = None
    else:
        ref = torch.load(grads_path)
        diff = dict(loss=(ref["loss"] - loss.detach().cpu()).abs().item(),
                    grads=max((ref["grads"][n] - grads[n]).abs().max().item() for n in grads))
    return dict(peak_bytes=peak, step_s=min(times), diff=diff)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resattn_resnet50")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=2, help="steps per side (the fastest is shown)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--side", choices=["off", "on"], help=argparse.SUPPRESS)
    p.add_argument("--grads", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:  # a child process: one side, result as JSON on the last line
        print(json.dumps(one_side(args, args.side == "on", args.grads)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        grads = os.path.join(tmp, "grads.pt")
        for side in ("off", "on"):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--side", side, "--grads", grads,
                   "--threads", str(args.threads), "--device", args.device]
            # glibc: every large block in its own mapping, returned at free, so that the peak
            # resident set is the peak of live memory (not of what malloc kept for reuse)
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results[side] = json.loads(out.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    print(f"{args.model}, batch {args.batch} x 3x{args.size}x{args.size}, {args.device}, "
          f"{args.threads} threads, one forward + backward (fastest of {args.steps})")
    print(f"{'':24}{'peak memory (MiB)':>20}{'step (s)':>12}")
    for name, r in (("without checkpointing", off), ("with checkpointing", on)):
        print(f"{name:<24}{r['peak_bytes'] / 2 ** 20:>20.0f}{r['step_s']:>12.2f}")
    print(f"ratio with/without: memory {on['peak_bytes'] / max(off['peak_bytes'], 1):.2f}, "
          f"time {on['step_s'] / off['step_s']:.2f}")
    print(f"max |loss difference| {on['diff']['loss']:.3g}, "
          f"max |gradient difference| {on['diff']['grads']:.3g}")


if __name__ == "__main__":
    main()
