"""The comparison report: ``results.csv``, ``report.md`` and PNG plots in the output folder.

    results.csv          one row per run (config, params, MFLOPs per image, train time, images/s,
                         best and final test accuracy, status, diverged)
    report.md            table grouped by variant (mean +- std over seeds), the command, machine
    accuracy.png         final test accuracy per variant, mean +- std over seeds
    loss.png             training loss per logged step, one line per run
    gamma.png            mean effective gamma_s and gamma_r per epoch, dual runs
    skip_gain.png        skip gain per block per epoch, dual runs, one line per block
"""
from __future__ import annotations

import csv
import json
import math
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["write_report", "summarise", "format_table", "read_metrics"]

CSV_FIELDS = ["run_id", "variant", "pattern", "attn", "skip_attn", "skip_modulation", "seed", "lr",
              "model", "dataset", "epochs", "train_subset", "params", "mflops", "train_time_s",
              "images_per_s", "best_acc", "final_acc", "status", "diverged", "error"]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (empty when missing)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (variant, attn): runs, params, MFLOPs, accuracies mean/std, images/s, diverged."""
    groups: dict[tuple[str, Optional[str]], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["attn"]), []).append(r)
    out = []
    for (variant, attn), rs in groups.items():
        done = [r for r in rs if r["status"] in ("finished", "diverged")]
        ok = [r for r in done if r["status"] == "finished"]
        best = _mean_std([r["best_acc"] for r in ok])
        final = _mean_std([r["final_acc"] for r in ok])
        out.append({
            "variant": variant, "attn": attn or "-", "runs": len(rs), "finished": len(ok),
            "diverged": sum(r["status"] == "diverged" for r in rs),
            "failed": sum(r["status"] in ("failed", "missing") for r in rs),
            "params": done[0]["params"] if done else None,
            "mflops": done[0]["mflops"] if done else None,
            "best_mean": best[0], "best_std": best[1], "final_mean": final[0], "final_std": final[1],
            "images_per_s": statistics.fmean([r["images_per_s"] for r in done]) if done else math.nan,
        })
    return out


def format_table(summary: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The grouped table as Markdown or aligned text."""
    head = ["variant", "attn", "runs", "params", "MFLOPs", "best acc %", "final acc %", "img/s",
            "diverged", "failed"]
    lines = []
    for s in summary:
        pm = "±" if markdown else "+-"
        lines.append([
            s["variant"], s["attn"], str(s["runs"]),
            f"{s['params']:,}" if s["params"] else "-",
            f"{s['mflops']:.1f}" if s["mflops"] else "-",
            f"{s['best_mean']:.2f} {pm} {s['best_std']:.2f}" if s["finished"] else "-",
            f"{s['final_mean']:.2f} {pm} {s['final_std']:.2f}" if s["finished"] else "-",
            f"{s['images_per_s']:.0f}" if not math.isnan(s["images_per_s"]) else "-",
            str(s["diverged"]), str(s["failed"]),
        ])
    if markdown:
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows += ["| " + " | ".join(r) + " |" for r in lines]
        return "\n".join(rows)
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] +
                     [fmt.format(*r) for r in lines])


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def _plots(out: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
           threshold: float = 0.7) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths: dict[str, Path] = {}
    done = [s for s in summary if s["finished"]]
    if done:
        fig, ax = plt.subplots(figsize=(1.2 * len(done) + 2, 3.5))
        labels = [s["variant"] + ("" if s["attn"] == "-" else f"\n{s['attn']}") for s in done]
        ax.bar(range(len(done)), [s["final_mean"] for s in done],
               yerr=[s["final_std"] for s in done], capsize=4, color="tab:blue", alpha=0.8)
        lo = min(s["final_mean"] - s["final_std"] for s in done)
        ax.set_ylim(max(0.0, lo - 3), min(100.0, max(s["final_mean"] + s["final_std"] for s in done) + 1.5))
        ax.set_xticks(range(len(done)), labels)
        ax.set_ylabel("final test accuracy (%)")
        seeds = max(s["finished"] for s in done)
        ax.set_title("Final test accuracy per variant" + (" (mean ± std over seeds)" if seeds > 1
                     else " (one seed: no error bars)"))
        fig.tight_layout()
        paths["accuracy"] = out / "accuracy.png"
        fig.savefig(paths["accuracy"], dpi=120)
        plt.close(fig)

    metrics = {r["run_id"]: read_metrics(out / "runs" / r["run_id"]) for r in rows}
    fig, ax = plt.subplots(figsize=(7, 4))
    by_step = any(m.get("type") == "step" for ms in metrics.values() for m in ms)
    kind, x_key, y_key = ("step", "step", "loss") if by_step else ("epoch", "epoch", "train_loss")
    drawn = False
    for r in rows:
        recs = [m for m in metrics[r["run_id"]] if m.get("type") == kind]
        if recs:
            ax.plot([m[x_key] for m in recs], [m[y_key] for m in recs], label=r["run_id"], lw=1,
                    marker=None if by_step else "o")
            drawn = True
    if drawn:
        ax.set_xlabel(kind)
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("Training loss")
        fig.tight_layout()
        paths["loss"] = out / "loss.png"
        fig.savefig(paths["loss"], dpi=120)
    plt.close(fig)

    dual = [r for r in rows if str(r["variant"]).startswith("dual")]
    gate_epochs = {r["run_id"]: [m for m in metrics[r["run_id"]] if m.get("type") == "epoch" and m.get("gates")]
                   for r in dual}
    if any(gate_epochs.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for run_id, eps in gate_epochs.items():
            for key, style in (("gamma/skip_attn", "-"), ("gamma/res_attn", "--")):
                ys = [_block_mean(e["gates"], key) for e in eps]
                if any(not math.isnan(y) for y in ys):
                    ax.plot([e["epoch"] for e in eps], ys, style, marker="o",
                            label=f"{run_id} {'γ_s' if 'skip' in key else 'γ_r'}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean effective γ over dual blocks")
        ax.set_title("γ_s (solid) and γ_r (dashed) per epoch")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths["gamma"] = out / "gamma.png"
        fig.savefig(paths["gamma"], dpi=120)
        plt.close(fig)

        runs = [k for k, v in gate_epochs.items() if v]
        fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False,
                                 sharey=True)
        for ax, run_id in zip(axes[0], runs):
            eps = gate_epochs[run_id]
            blocks = [b for b, v in eps[0]["gates"].items() if "gate_energy/skip_attn" in v]
            for b in blocks:
                ax.plot([e["epoch"] for e in eps], [e["gates"][b]["skip_gain"] for e in eps],
                        marker=".", label=b)
            ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.axhline(threshold, color="tab:red", lw=0.8, ls="--")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(run_id, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("skip gain ‖s‖/‖skip(x)‖")
            ax.legend(fontsize=6)
        fig.suptitle(f"Skip gain per block (below 1: the identity path shrinks; red: warning "
                     f"threshold {threshold:g})")
        fig.tight_layout()
        paths["skip_gain"] = out / "skip_gain.png"
        fig.savefig(paths["skip_gain"], dpi=120)
        plt.close(fig)
    return paths


def _block_mean(gates: dict[str, dict[str, float]], key: str) -> float:
    vals = [v[key] for v in gates.values() if key in v]
    return statistics.fmean(vals) if vals else math.nan


def _stability(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines on the dual runs: status, lowest skip gain and mean gammas at the end."""
    lines = []
    for r in rows:
        if not str(r["variant"]).startswith("dual"):
            continue
        eps = [m for m in read_metrics(out / "runs" / r["run_id"]) if m.get("type") == "epoch" and m.get("gates")]
        if not eps:
            continue
        gates = {b: v for b, v in eps[-1]["gates"].items() if "gate_energy/skip_attn" in v}
        if not gates:
            continue
        low_block, low = min(((b, v["skip_gain"]) for b, v in gates.items()), key=lambda t: t[1])
        g_s, g_r = _block_mean(gates, "gamma/skip_attn"), _block_mean(gates, "gamma/res_attn")
        gammas = ", ".join(f"{n} {g:+.3f}" for n, g in (("mean γ_s", g_s), ("mean γ_r", g_r))
                           if not math.isnan(g))
        closing = sum(1 for m in eps if m.get("closing"))
        lines.append(f"- `{r['run_id']}`: {r['status']}; after epoch {eps[-1]['epoch']} the lowest "
                     f"skip gain is {low:.2f} ({low_block}){'; ' + gammas if gammas else ''}; "
                     f"closing-identity warnings in {closing} of {len(eps)} epochs")
    return (["## Stability of the dual-path runs", ""] + lines + [""]) if lines else []


def write_report(out: Path, rows: list[dict[str, Any]], *, command: str, config: Any,
                 wall_time_s: float) -> tuple[dict[str, Path], str]:
    """Write results.csv, plots and report.md into ``out``; return (paths, text table)."""
    out = Path(out)
    summary = summarise(rows)
    _write_csv(out / "results.csv", rows)
    plots = _plots(out, rows, summary, threshold=config.train_options.get("skip_gain_threshold", 0.7))
    md = [
        "# resattn compare report", "",
        f"Data set: **{config.dataset}**, model: **{config.model}**, epochs: {config.epochs}, "
        f"train subset: {config.effective_train_subset() or 'all'}, seeds: {config.seeds}, lr: {config.lrs}.", "",
        format_table(summary, markdown=True), "",
        "Accuracy is top-1 on the test split; best = best epoch, final = last epoch; mean ± std "
        "over seeds of finished runs. MFLOPs per image from `torch.utils.flop_counter` "
        "(multiply-add = 2 FLOPs). img/s = training images per second.", "",
        "## How this was made", "",
        f"    {command}", "",
        f"- wall time of this invocation: {wall_time_s:.0f} s; training time of all runs: "
        f"{sum(r.get('train_time_s') or 0 for r in rows):.0f} s",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}",
        f"- torch {torch.__version__}, python {platform.python_version()}",
        f"- written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
    ]
    if any(s["finished"] < 2 for s in summary):
        md += ["Single-seed groups show no spread: differences of about a point between variants "
               "are within run-to-run noise at this budget; add seeds (`--seeds 0,1,2`) before "
               "reading a ranking into them.", ""]
    md += _stability(out, rows)
    failed = [r for r in rows if r["status"] in ("failed", "missing")]
    if failed:
        md += ["## Runs that did not finish", ""] + [f"- `{r['run_id']}`: {r.get('error')}" for r in failed] + [""]
    if plots:
        md += ["## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()] + [""]
    (out / "report.md").write_text("\n".join(md))
    paths = {"results": out / "results.csv", "report": out / "report.md", **plots}
    return paths, format_table(summary)
