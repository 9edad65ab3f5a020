"""Is a default bound on the residual gamma of ``dual`` warranted? A short side-by-side measurement.

Trains cifar_resnet20 ``dual`` (eca skip / cbam residual, near-identity, gamma from 0) with
``res_gamma_max`` None (today's default) and 1.0, on (a) Fashion-MNIST with 40% of the training
labels replaced at random ("noisy data") and (b) clean labels; same seed, same batches. Prints per
run: the lowest effective residual gamma over blocks during training, the lowest path gain
1 + gamma * max(m) it implies (< 0: the residual path inverts its input somewhere), final training
loss, and test accuracy on a clean test subset.

    PYTHONPATH=src python benchmarks/gamma_bound.py [--steps 150] [--subset 4096]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from resattn import create_model
from resattn.workflow.data import load_dataset


def run(bundle, res_gamma_max, noise: float, steps: int, batch: int, lr: float, seed: int = 0):
    torch.manual_seed(seed)
    x, y = bundle.train.tensors
    g = torch.Generator().manual_seed(seed)
    y = y.clone()
    flip = torch.rand(len(y), generator=g) < noise
    y[flip] = torch.randint(0, bundle.num_classes, (int(flip.sum()),), generator=g)
    model = create_model("cifar_resnet20", pattern="dual", in_chans=bundle.in_chans,
                         num_classes=bundle.num_classes, res_gamma_max=res_gamma_max)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    paths = [m for m in model.modules() if getattr(m, "arg", None) == "res_attn" and m.gamma is not None]
    lowest, loss = float("inf"), float("nan")
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        loss_t = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        opt.step()
        loss = loss_t.item()
        with torch.no_grad():
            lowest = min(lowest, min(p.effective_gamma().min().item() for p in paths))
    model.eval()
    xt, yt = bundle.test.tensors
    with torch.no_grad():
        acc = sum((model(xt[i:i + 512]).argmax(1) == yt[i:i + 512]).sum().item()
                  for i in range(0, len(yt), 512)) / len(yt)
    # masks are sigmoid products in (0, 1): the lowest gain is 1 + min(gamma, 0) * (max m <= 1)
    return lowest, 1 + min(lowest, 0.0), loss, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--subset", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()
    bundle = load_dataset("fashion-mnist", train_subset=args.subset, test_subset=2000)
    print(f"cifar_resnet20 dual (eca/cbam), Fashion-MNIST {args.subset} train / 2000 test, "
          f"{args.steps} steps of {args.batch}, lr {args.lr}, {torch.get_num_threads()} threads")
    print(f"{'labels':<12} {'res_gamma_max':>13} {'min gamma':>10} {'min gain':>9} "
          f"{'last loss':>9} {'test acc':>8} {'s':>5}")
    for noise in (0.4, 0.0):
        for bound in (None, 1.0):
            t = time.perf_counter()
            low, gain, loss, acc = run(bundle, bound, noise, args.steps, args.batch, args.lr)
            label = f"{int(noise * 100)}% random" if noise else "clean"
            print(f"{label:<12} {str(bound):>13} {low:>10.3f} {gain:>9.3f} {loss:>9.3f} "
                  f"{acc:>8.3f} {time.perf_counter() - t:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
