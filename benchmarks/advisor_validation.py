"""Validate ``resattn advise`` against trained gains: the plan of ``studies/advisor/11-advisor.yaml``.

Three stages, each resumable (finished runs are read back, never retrained):

1. ``plan``: the advisor scores the plain cifar_resnet20 once (CPU, seed 0, its defaults) and
   fixes, *before any training*, the ranking of the single placements (each block x ``branch``
   (SE, near-identity, gamma 0) and ``dual`` (ECA skip + CBAM residual, the defaults)) and the
   three-block models ``top3``/``bottom3`` (branch family) and each seed's ``random3``. Written
   to ``OUT/plan.json``; an existing plan is kept as it is (pre-registration).
2. ``grid``: trains plain, every single placement, and top3/random3/bottom3 for every seed with
   :func:`resattn.workflow.train.train` (``OUT/SETTING/runs/VARIANT/seedS``), in ``--workers``
   processes (``concurrent.futures``, spawn), on ``--device``.
3. ``analyse``: gains over plain (seed-paired), the gate test (do gains differ beyond seed noise:
   Friedman across placements, seeds as blocks), Spearman rho of advisor score vs mean gain with
   a bootstrap CI over seeds against the baselines (random ranking, parameter cost, FLOP cost,
   later stages first), and top3 vs random3 vs bottom3 (paired t CIs). Writes
   ``OUT/SETTING/analysis.json``, ``analysis.md`` and ``gains.csv``.

Smallest smoke test (CPU, under a minute on 2 cores)::

    PYTHONPATH=src python benchmarks/advisor_validation.py --out runs/advisor-smoke --smoke

The registered run (a CUDA machine, N processes; 22 variants x 5 seeds = 110 runs)::

    PYTHONPATH=src python benchmarks/advisor_validation.py --out runs/advisor-validation \\
        --device cuda --workers N [--data-dir FASHION_MNIST_DIR]

Rerunning the same command resumes: finished runs are read back; ``--stage analyse`` only
recomputes the statistics. A move to the next registered setting (``--setting noisy``, then
``less-data``, then ``retrofit``) is recorded under ``changes`` in the YAML before its runs.
``retrofit`` first trains (or takes the registered) plain base network, the advisor scores that
network into ``OUT/retrofit/plan.json``, and every run fine-tunes the base (``init_from``).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

#: Registered settings, in the order the study moves through them (see the YAML).
SETTINGS: dict[str, dict[str, Any]] = {
    "main": {"train": {}, "floor": 88.0},
    "noisy": {"train": {"label_noise": 0.2}, "floor": 85.0},
    "less-data": {"train": {"train_subset": 5000, "epochs": 15}, "floor": 80.0},
    # every run (plain included) fine-tunes one trained plain network, the base; the advisor
    # scores that base (its own plan): the retrofit case
    "retrofit": {"train": {"train_subset": 20000, "epochs": 1, "lr": 0.02}, "floor": 88.0,
                 "retrofit": True},
}
#: Training options of every run (the evidence issue's budget where plain trains).
TRAIN = {"model": "cifar_resnet20", "dataset": "fashion-mnist", "epochs": 2, "batch_size": 128,
         "lr": 0.1, "bf16": True, "monitor": False, "log_every": 50}
SMOKE = {"train_subset": 256, "test_subset": 256, "epochs": 1, "bf16": False}
ADVISOR = {"types": ["se", "eca", "cbam"], "paths": ["branch", "skip"], "batches": 4,
           "inits": 2, "batch_size": 128, "seed": 0}
BOOTSTRAP = 2000
CONFIDENCE = 0.95


# ----------------------------------------------------------------------------- plan

def _blocks(smoke: bool) -> list[str]:
    blocks = [f"{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    return ["1.0", "2.1", "3.2"] if smoke else blocks


def _random3(seed: int, smoke: bool) -> list[str]:
    """The registered draw of a seed's random3 blocks."""
    return sorted(random.Random(1000 + seed).sample(_blocks(smoke), 3))


def _run_config(seed: int, device: str, options: dict[str, Any], smoke: bool,
                data_dir: str | None, train: dict[str, Any] | None = None) -> dict[str, Any]:
    """``TrainConfig`` options of one run: ``TRAIN``, then a setting's ``train``, then the smoke
    budget, then the run's own seed, device and model options."""
    config = {**TRAIN, **(train or {}), **(SMOKE if smoke else {})}
    config.update(seed=seed, device=device, model_kwargs=dict(options), num_workers=0,
                  data_dir=data_dir)
    return config


REGISTERED = Path(__file__).resolve().parents[1] / "studies" / "advisor"
REGISTERED_PLAN = REGISTERED / "11-advisor-plan.json"
#: the retrofit setting's trained plain network (a state_dict) and the advisor's plan for it
REGISTERED_BASE = REGISTERED / "11-advisor-retrofit-base.pt"
REGISTERED_RETROFIT_PLAN = REGISTERED / "11-advisor-retrofit-plan.json"


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_base(folder: Path, smoke: bool, data_dir: str | None = None) -> Path:
    """The retrofit setting's base: plain cifar_resnet20 trained with ``TRAIN`` (seed 0).

    Its final weights are written as a ``state_dict`` to ``folder/base.pt``; the registered
    copy (``studies/advisor/11-advisor-retrofit-base.pt``) is used when present, so that every
    re-check fine-tunes the same network. An existing base is kept as it is.
    """
    import shutil

    path = folder / "base.pt"
    if path.exists():
        print(f"base: kept {path} (sha256 {_sha256(path)[:12]})")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if not smoke and REGISTERED_BASE.exists():
        shutil.copyfile(REGISTERED_BASE, path)
        print(f"base: the registered {REGISTERED_BASE} (sha256 {_sha256(path)[:12]})")
        return path
    import torch

    from resattn.tools.weights import load_model

    config = _run_config(0, "cpu", {"pattern": "none"}, smoke, data_dir)
    r = _run_one(str(folder / "base"), config)
    print(f"base: trained plain, {r['status']} {r['final_acc']:.2f}%", flush=True)
    model, _ = load_model(folder / "base" / "checkpoint.pt")
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def make_plan(out: Path, seeds: list[int], smoke: bool, data_dir: str | None = None,
              weights: Path | None = None, registered: Path = REGISTERED_PLAN
              ) -> dict[str, Any]:
    """Score the placements once and freeze ranking, top3, bottom3 and random3 in
    ``out/plan.json`` (the registered copy when present). ``weights``: a ``state_dict`` the
    plain network is loaded with before scoring (the retrofit setting's base)."""
    path = out / "plan.json"
    if not path.exists() and not smoke and registered.exists():
        plan = json.loads(registered.read_text())
        if weights is not None and plan.get("base_sha256") != _sha256(weights):
            raise SystemExit(f"{weights} is not the base the registered plan {registered} scored")
        out.mkdir(parents=True, exist_ok=True)
        if plan["seeds"] == seeds:
            path.write_text(registered.read_text())
        else:  # a re-check on fresh seeds: the same ranking, each new seed's random3 drawn as registered
            combo = {k: v for k, v in plan["combos"]["top3"].items() if k != "stages"}
            plan["combos"]["random3"] = {str(s): {**combo, "stages": _random3(s, False)}
                                         for s in seeds}
            plan.update(seeds=seeds, recheck_of=str(registered))
            path.write_text(json.dumps(plan, indent=1))
            print(f"plan: seeds {seeds} re-check the registered ranking (random3 drawn per seed)")
        print(f"plan: the registered {registered} (created {plan['created']})")
        return plan
    if path.exists():
        plan = json.loads(path.read_text())
        if plan["seeds"] != seeds:
            raise SystemExit(f"--seeds {seeds} differ from the seeds {plan['seeds']} of {path}; "
                             "use another --out for other seeds")
        print(f"plan: kept {path} (registered {plan['created']})")
        return plan
    import torch

    from resattn import create_model
    from resattn.tools.advise import advise, dataset_batches
    from resattn.workflow.data import load_dataset

    bundle = load_dataset("fashion-mnist", data_dir)
    torch.manual_seed(ADVISOR["seed"])
    model = create_model("cifar_resnet20", in_chans=1, num_classes=10)
    base: dict[str, Any] = {}
    if weights is not None:
        from resattn.tools.weights import load_pretrained
        load_pretrained(model, torch.load(weights, map_location="cpu", weights_only=True))
        base = {"base": str(weights), "base_sha256": _sha256(weights)}
    data = dataset_batches(bundle.train, batch_size=ADVISOR["batch_size"],
                           batches=ADVISOR["batches"], seed=ADVISOR["seed"])
    t = time.perf_counter()
    adv = advise(model, data, types=ADVISOR["types"], paths=ADVISOR["paths"],
                 batches=ADVISOR["batches"], inits=ADVISOR["inits"], seed=ADVISOR["seed"])
    seconds = time.perf_counter() - t
    row = {(r["block"], r["path"], r["attn"]): r for r in adv.rows}
    placements = {}
    for b in _blocks(smoke):
        s, i = b.split(".")
        name = f"layer{s}.{i}"
        br = row[(name, "branch", "se")]
        sk, rs = row[(name, "skip", "eca")], row[(name, "branch", "cbam")]
        placements[f"b{b}-branch"] = {
            "block": b, "order": int(s) * 10 + int(i), "score": br["score"],
            "params": br["params"], "flops": br["flops"],
            "options": {"pattern": "branch", "attn": "se", "modulation": "near_identity",
                        "stages": [b]}}
        placements[f"b{b}-dual"] = {
            "block": b, "order": int(s) * 10 + int(i), "score": sk["score"] + rs["score"],
            "params": sk["params"] + rs["params"], "flops": sk["flops"] + rs["flops"],
            "options": {"pattern": "dual", "stages": [b]}}
    branch = sorted((p for p in placements if p.endswith("-branch")),
                    key=lambda p: -placements[p]["score"])
    top3 = [placements[p]["block"] for p in branch[:3]]
    bottom3 = [placements[p]["block"] for p in branch[-3:]]
    random3 = {str(s): _random3(s, smoke) for s in seeds}
    combo = {"pattern": "branch", "attn": "se", "modulation": "near_identity"}
    plan = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "advisor": dict(ADVISOR),
            "advisor_seconds_cpu": seconds, "advisor_meta": adv.meta, "seeds": seeds, **base,
            "placements": placements,
            "combos": {"top3": {**combo, "stages": top3}, "bottom3": {**combo, "stages": bottom3},
                       "random3": {str(s): {**combo, "stages": r} for s, r in random3.items()}}}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1))
    adv.save(out / "advice")
    print(f"plan: wrote {path}; advisor {seconds:.1f} s; top3 {top3}, bottom3 {bottom3}")
    return plan


# ----------------------------------------------------------------------------- grid

def _variants(plan: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    v = {"plain": {"pattern": "none"}}
    v.update({name: p["options"] for name, p in plan["placements"].items()})
    v["top3"] = plan["combos"]["top3"]
    v["bottom3"] = plan["combos"]["bottom3"]
    v["random3"] = plan["combos"]["random3"][str(seed)]
    return v


_BUNDLES: dict[str, Any] = {}


def _run_one(run_dir: str, config: dict[str, Any]) -> dict[str, Any]:
    """One training run in a worker process (data loaded once per process)."""
    import torch

    from resattn.workflow.data import load_dataset
    from resattn.workflow.train import TrainConfig, train

    torch.set_num_threads(max(1, int(os.environ.get("ADVISOR_THREADS", "1"))))
    key = f"{config.get('train_subset')}-{config.get('test_subset')}"
    if key not in _BUNDLES:
        _BUNDLES[key] = load_dataset("fashion-mnist", config.get("data_dir"),
                                     train_subset=config.get("train_subset"),
                                     test_subset=config.get("test_subset"))
    res = train(TrainConfig(**config), run_dir, bundle=_BUNDLES[key], progress=False)
    return {"status": res.status, "final_acc": res.final_acc, "train_time_s": res.train_time_s}


def _result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    if path.exists():
        r = json.loads(path.read_text())
        if r.get("status") in ("finished", "diverged"):  # a diverged run counts as measured
            return r
    return None


def grid_jobs(plan: dict[str, Any], out: Path, setting: str, device: str, smoke: bool,
              data_dir: str | None = None, base: Path | None = None
              ) -> list[tuple[str, dict[str, Any]]]:
    """``(run_dir, TrainConfig options)`` of every run of ``setting`` not finished yet."""
    jobs = []
    for seed in plan["seeds"]:
        for name, options in _variants(plan, seed).items():
            run_dir = out / setting / "runs" / name / f"seed{seed}"
            if _result(run_dir) is not None:
                continue
            config = _run_config(seed, device, options, smoke, data_dir, SETTINGS[setting]["train"])
            if base is not None:  # retrofit: every variant starts from the base's weights
                config["init_from"] = str(base)
            jobs.append((str(run_dir), config))
    return jobs


def run_grid(plan: dict[str, Any], out: Path, setting: str, device: str, workers: int,
             smoke: bool, data_dir: str | None = None, base: Path | None = None) -> None:
    jobs = grid_jobs(plan, out, setting, device, smoke, data_dir, base)
    total = len(jobs)
    print(f"grid: {total} runs to train ({setting}), {workers} processes on {device}", flush=True)
    if not jobs:
        return
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, d, c): d for d, c in jobs}
        for n, f in enumerate(as_completed(futures), 1):
            d = futures[f]
            try:
                r = f.result()
                print(f"[{n}/{total}] {d}: {r['status']} {r['final_acc']:.2f}% "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            except Exception as e:  # a failed run is reported and left out; the rest go on
                print(f"[{n}/{total}] {d}: FAILED {type(e).__name__}: {e}", flush=True)


# ----------------------------------------------------------------------------- analysis

def _t_ci(d: list[float]) -> dict[str, Any]:
    from scipy import stats
    n = len(d)
    mean = sum(d) / n if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "ci": [float("nan"), float("nan")], "p": float("nan")}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else float("nan")
    return {"n": n, "mean": mean, "ci": [mean - half, mean + half], "p": p}


def _rho(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr
    r = spearmanr(a, b).statistic
    return float(r) if r == r else 0.0  # constant input: no rank information


def analyse(plan: dict[str, Any], out: Path, setting: str) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    root = out / setting / "runs"
    seeds = plan["seeds"]
    acc: dict[str, dict[int, float]] = {}
    for seed in seeds:
        for name in _variants(plan, seed):
            r = _result(root / name / f"seed{seed}")
            if r is not None:
                acc.setdefault(name, {})[seed] = float(r["final_acc"])
    plain = acc.get("plain", {})
    names = list(plan["placements"])
    complete = [s for s in seeds if s in plain and all(s in acc.get(n, {}) for n in names)]
    result: dict[str, Any] = {"setting": setting, "seeds_complete": complete,
                              "runs_found": sum(len(v) for v in acc.values())}
    floor = SETTINGS[setting]["floor"]
    plain_mean = sum(plain.values()) / len(plain) if plain else float("nan")
    result["floor"] = {"plain_mean": plain_mean, "floor": floor, "met": plain_mean >= floor}
    if len(complete) < 2:
        result["verdict"] = "incomplete: fewer than 2 seeds with every placement and plain"
        _write(out / setting, result, [])
        return result
    gains = {n: [acc[n][s] - plain[s] for s in complete] for n in names}
    g = np.array([gains[n] for n in names])  # placements x seeds
    fr = stats.friedmanchisquare(*g) if len(names) >= 3 else None
    best = max(names, key=lambda n: g[names.index(n)].mean())
    worst = min(names, key=lambda n: g[names.index(n)].mean())
    result["gate"] = {
        "test": "Friedman across placements (seeds as blocks), alpha 0.05",
        "statistic": float(fr.statistic) if fr else float("nan"),
        "p": float(fr.pvalue) if fr else float("nan"),
        "differ": bool(fr and fr.pvalue < 0.05),
        "best_minus_worst (post hoc, descriptive)": {
            "best": best, "worst": worst,
            **_t_ci(list(g[names.index(best)] - g[names.index(worst)]))}}
    score = [plan["placements"][n]["score"] for n in names]
    baselines = {"params": [plan["placements"][n]["params"] for n in names],
                 "flops": [plan["placements"][n]["flops"] for n in names],
                 "later_first": [plan["placements"][n]["order"] for n in names]}
    rng = np.random.default_rng(0)
    boots = {"advisor": []} | {k: [] for k in baselines}
    k = len(complete)
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, k, k)
        mean = g[:, idx].mean(1).tolist()
        boots["advisor"].append(_rho(score, mean))
        for b, vals in baselines.items():
            boots[b].append(_rho(vals, mean))
    mean_gain = g.mean(1).tolist()
    lo, hi = (1 - CONFIDENCE) / 2 * 100, (1 + CONFIDENCE) / 2 * 100
    rho = {}
    for key, vals in [("advisor", score)] + list(baselines.items()):
        bs = np.array(boots[key])
        rho[key] = {"rho": _rho(vals, mean_gain), "ci": np.percentile(bs, [lo, hi]).tolist()}
        if key != "advisor":
            diff = np.array(boots["advisor"]) - bs
            rho[key]["advisor_minus_this_ci"] = np.percentile(diff, [lo, hi]).tolist()
    perm = np.array([_rho(rng.permutation(score).tolist(), mean_gain) for _ in range(BOOTSTRAP)])
    rho["random"] = {"rho_null_95": np.percentile(perm, [lo, hi]).tolist(),
                     "p_random_ge_advisor": float((perm >= rho["advisor"]["rho"]).mean())}
    beats = all(rho[b]["advisor_minus_this_ci"][0] > 0 for b in baselines) and \
        rho["random"]["p_random_ge_advisor"] < 1 - CONFIDENCE
    result["rho"] = rho
    result["claim_supported"] = bool(rho["advisor"]["ci"][0] > 0 and beats)
    combos = {}
    cs = [s for s in seeds if all(s in acc.get(c, {}) for c in ("top3", "random3", "bottom3"))]
    for a, b in (("top3", "random3"), ("top3", "bottom3"), ("random3", "bottom3"),
                 ("top3", "plain")):
        pair = [s for s in cs if s in acc.get(b, {})]
        combos[f"{a} - {b}"] = _t_ci([acc[a][s] - acc[b][s] for s in pair])
    result["combos"] = combos
    if not result["floor"]["met"]:
        result["verdict"] = (f"invalid: plain's mean final accuracy {plain_mean:.2f}% is below "
                             f"the floor {floor}%")
    elif not result["gate"]["differ"]:
        result["verdict"] = ("gains do not differ beyond seed noise: the ranking cannot be "
                             "validated in this setting")
    else:
        result["verdict"] = (("supported" if result["claim_supported"] else "not supported") +
                             f": rho {rho['advisor']['rho']:+.2f} [{rho['advisor']['ci'][0]:+.2f}"
                             f", {rho['advisor']['ci'][1]:+.2f}]")
    rows = [{"placement": n, "mean_gain": float(np.mean(gains[n])),
             "sd_gain": float(np.std(gains[n], ddof=1)), "n": len(gains[n]),
             "advisor_score": plan["placements"][n]["score"], **{b: baselines[b][i] for b in baselines}}
            for i, n in enumerate(names)]
    _write(out / setting, result, rows)
    return result


def _write(folder: Path, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "analysis.json").write_text(json.dumps(result, indent=1))
    if rows:
        with (folder / "gains.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    lines = [f"# Advisor validation ({result['setting']})", "",
             f"Verdict: **{result.get('verdict')}**", "",
             f"Plain floor: mean {result['floor']['plain_mean']:.2f}% vs {result['floor']['floor']}% "
             f"({'met' if result['floor']['met'] else 'MISSED'}); seeds complete: "
             f"{result['seeds_complete']}", ""]
    if "gate" in result:
        gt = result["gate"]
        lines += [f"Gate ({gt['test']}): chi2 {gt['statistic']:.2f}, p {gt['p']:.3g} -> "
                  f"{'gains differ' if gt['differ'] else 'no difference shown'}", "",
                  "| ranking | rho | 95% CI | advisor - this [CI] |", "|---|---:|---|---|"]
        for k, v in result["rho"].items():
            if k == "random":
                lines.append(f"| random (null) | 0 | {v['rho_null_95'][0]:+.2f}, "
                             f"{v['rho_null_95'][1]:+.2f} | P(random >= advisor) = "
                             f"{v['p_random_ge_advisor']:.3f} |")
                continue
            d = v.get("advisor_minus_this_ci")
            lines.append(f"| {k} | {v['rho']:+.2f} | {v['ci'][0]:+.2f}, {v['ci'][1]:+.2f} | "
                         + (f"{d[0]:+.2f}, {d[1]:+.2f}" if d else "-") + " |")
        lines += ["", "| comparison | n | mean (points) | 95% CI | p |", "|---|---:|---:|---|---:|"]
        for k, v in result["combos"].items():
            lines.append(f"| {k} | {v['n']} | {v['mean']:+.2f} | {v['ci'][0]:+.2f}, "
                         f"{v['ci'][1]:+.2f} | {v['p']:.3g} |")
    (folder / "analysis.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/advisor-validation")
    ap.add_argument("--setting", choices=list(SETTINGS), default="main")
    ap.add_argument("--stage", choices=["all", "plan", "grid", "analyse"], default="all")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--workers", type=int, default=1, help="training processes at once")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--data-dir", default=None,
                    help="folder with Fashion-MNIST's IDX files (default: resattn's search path)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny budget (256 images, 1 epoch, seeds 0,1, three blocks): checks the "
                         "pipeline, says nothing about the advisor")
    args = ap.parse_args(argv)
    seeds = [0, 1] if args.smoke else [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    base = None
    if SETTINGS[args.setting].get("retrofit"):
        base = make_base(out / args.setting, args.smoke, args.data_dir)
        plan = make_plan(out / args.setting, seeds, args.smoke, args.data_dir, weights=base,
                         registered=REGISTERED_RETROFIT_PLAN)
    else:
        plan = make_plan(out, seeds, args.smoke, args.data_dir)
    if args.stage in ("all", "grid"):
        run_grid(plan, out, args.setting, args.device, args.workers, args.smoke, args.data_dir,
                 base)
    if args.stage in ("all", "analyse"):
        result = analyse(plan, out, args.setting)
        print((out / args.setting / "analysis.md").read_text())
        print(f"verdict: {result['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
