"""Which advisor score predicts what a gate buys? Reliability, short-horizon validity and cost.

For cifar_resnet20 on Fashion-MNIST (batches of 128), at random init and after a short plain
training, for each scoring method of :func:`resattn.tools.advise`:

* reliability: Spearman rho between the scores of two advisor seeds (other batches, other masks);
* validity at the probe's horizon: the "oracle" gain of each gate is the held-out loss decrease
  when that gate alone is trained (backbone frozen, the other gates inert) for ``--oracle-steps``
  Adam steps on fresh batches; rho(score, oracle) per method;
* cost: seconds of one advise call against one plain training step (fwd + bwd + SGD, same
  precision), hence against a 2-epoch run (938 steps) measured in the same conditions.

Writes ``benchmarks/results/advisor_scoring.json`` (and prints a table). On a shared machine the
seconds are loaded; the ratio to a training step measured alongside is the number to quote.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from resattn import create_model
from resattn.tools.advise import advise, dataset_batches, insert_candidates
from resattn.workflow.data import load_dataset

STEPS_PER_RUN = 938  # Fashion-MNIST, batch 128, 2 epochs


def step_seconds(model, data, bf16: bool, repeats: int = 5) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i in range(repeats + 1):
        x, y = data[i % len(data)]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def pretrain(model, data, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for i in range(steps):
        x, y = data[i % len(data)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def oracle(model, train_data, eval_data, steps: int, lr: float) -> dict[str, float]:
    """Held-out loss decrease per gate when it alone is trained (backbone frozen)."""
    cset = insert_candidates(model, types=("se",))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = {}
    try:
        def held_out() -> float:
            with torch.no_grad():
                return sum(float(F.cross_entropy(model(x), y)) for x, y in eval_data) / len(eval_data)

        base = held_out()
        for c in cset.candidates:
            cset.reset(0)
            params = list(c.gate.parameters())
            opt = torch.optim.Adam(params, lr=lr)
            for i in range(steps):
                x, y = train_data[i % len(train_data)]
                loss = F.cross_entropy(model(x), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = torch.zeros_like(p) if g is None else g
                opt.step()
            out[c.name] = base - held_out()
            model.load_state_dict(state, strict=False)  # BN running stats of the passes
    finally:
        cset.remove()
    model.load_state_dict({k: v for k, v in state.items() if not k.count("_gates.")}, strict=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--oracle-steps", type=int, default=10)
    ap.add_argument("--oracle-lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/advisor_scoring.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_dataset("fashion-mnist")
    pool = dataset_batches(bundle.train, batch_size=128, batches=args.pretrain_steps, seed=100)
    oracle_train = dataset_batches(bundle.train, batch_size=128, batches=args.oracle_steps, seed=200)
    oracle_eval = dataset_batches(bundle.test, batch_size=256, batches=2, seed=300)
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", in_chans=1, num_classes=10)
    report = {"threads": args.threads, "load_avg": list(__import__("os").getloadavg()),
              "oracle_steps": args.oracle_steps, "networks": {}}
    step = {bf16: step_seconds(create_model("cifar_resnet20", in_chans=1, num_classes=10), pool[:6],
                               bf16) for bf16 in (False, True)}
    report["train_step_s"] = {"fp32": step[False], "bf16": step[True]}
    for net in ("init", "pretrained"):
        if net == "pretrained":
            report["pretrain_final_loss"] = pretrain(model, pool, args.pretrain_steps)
        t = time.perf_counter()
        orc = oracle(model, oracle_train, oracle_eval, args.oracle_steps, args.oracle_lr)
        oracle_s = time.perf_counter() - t
        names = sorted(orc)
        rows = {"oracle_s": oracle_s, "oracle": orc, "methods": {}}
        later = {n: i for i, n in enumerate(names)}  # name order = stage, block, path order
        blocks = sorted({n.split(":")[0] for n in names})
        rows["later_first_rho"] = float(spearmanr([blocks.index(n.split(":")[0]) for n in names],
                                                  [orc[n] for n in names]).statistic)
        for method, batches, inits in (("grad", 4, 2), ("probe", 2, 1), ("probe", 4, 2),
                                       ("probe", 8, 2)):
            scores, secs = [], []
            for seed in (0, 1):
                data = dataset_batches(bundle.train, batch_size=128, batches=batches, seed=seed)
                adv = advise(model, data, types=("se",), method=method, batches=batches,
                             inits=inits, seed=seed)
                secs.append(adv.meta["seconds"])
                scores.append({f"{r['block']}:{r['path']}:{r['attn']}": r["score"] for r in adv.rows})
            s0 = [scores[0][n] for n in names]
            s1 = [scores[1][n] for n in names]
            o = [orc[n] for n in names]
            key = f"{method}-b{batches}-i{inits}"
            rows["methods"][key] = {
                "seconds": secs, "cost_vs_run": min(secs) / (STEPS_PER_RUN * step[True]),
                "cost_in_train_steps": min(secs) / step[False],
                "rho_seed0_seed1": float(spearmanr(s0, s1).statistic),
                "rho_oracle": [float(spearmanr(s0, o).statistic), float(spearmanr(s1, o).statistic)],
            }
            print(net, key, json.dumps(rows["methods"][key]), flush=True)
        print(net, "later-first rho", rows["later_first_rho"], "oracle s", oracle_s, flush=True)
        report["networks"][net] = rows
        del later
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
