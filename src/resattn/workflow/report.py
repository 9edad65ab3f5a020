"""The comparison report: ``results.csv``, ``report.md`` and PNG plots in the output folder.

    results.csv          one row per run (config, params, MFLOPs per image, train time, images/s,
                         best and final test accuracy, status, diverged, the stability metrics of
                         :mod:`resattn.workflow.stability`) and its group's statistics (``group_*``: n, mean,
                         std, seed-paired difference to the baseline with 95% CI, verdict)
    summary.csv          one row per group (variant, attention, learning rate) with those statistics
    report.md            the grouped table (n, mean ± std, paired difference [95% CI], verdict,
                         stability), the command, machine, versions and wall time
    accuracy.png         final test accuracy: every seed as a point, the mean and its 95% CI
    loss.png             training loss per logged step, one line per run
    gamma.png            mean effective gamma_s and gamma_r per epoch, dual runs
    skip_gain.png        skip gain per block per epoch, dual runs, one line per block
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional


from ..utils.machine import device_label  # noqa: F401 (public here since issue 13)

__all__ = ["write_report", "summarise", "format_table", "read_metrics", "write_csv", "accuracy_plot",
           "metric_plot", "paired_delta_plot", "METRIC_RANGE", "attention_label",
           "machine_lines", "group_label", "write_plots", "device_label", "precision_text"]

CSV_FIELDS = ["run_id", "variant", "cell", "pattern", "attn", "skip_attn", "skip_modulation", "seed", "lr",
              "model", "dataset", "epochs", "train_subset", "precision", "params", "mflops", "train_time_s",
              "images_per_s", "best_acc", "final_acc", "status", "diverged", "error", "defect", "log",
              "attention",
              "loss_spikes", "max_grad_norm", "final_train_loss", "steps_to_mark", "min_skip_gain",
              "min_skip_gain_block", "final_gamma_s", "final_gamma_r", "gamma_s", "gamma_r",
              "group_n", "group_mean", "group_std", "group_diff", "group_ci_low", "group_ci_high",
              "group_verdict"]
SUMMARY_FIELDS = ["group", "variant", "attn", "attention", "cell", "runs", "finished", "diverged", "failed",
                  "params", "mflops", "n", "metric", "mean", "std", "baseline", "n_pairs", "diff",
                  "diff_std", "ci_low", "ci_high", "confidence", "verdict", "best_mean",
                  "images_per_s", "loss_spikes", "max_grad_norm", "final_train_loss",
                  "steps_to_mark", "min_skip_gain", "min_skip_gain_block", "final_gamma_s",
                  "final_gamma_r"]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (empty when missing).

    A last line without its newline that does not parse is a record cut off by a killed run and
    is left out; any other line that does not parse is damage, not something to skip quietly.

    Raises:
        ValueError: a line other than a truncated last one is not JSON (names file and line).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # the last record, cut off while being written
            raise ValueError(f"{path}: line {i} is not a JSON record ({e}); only a truncated "
                             "last line is left out") from e
    return out


def _metrics_for_plots(run_dir: Path) -> list[dict[str, Any]]:
    """:func:`read_metrics`, or nothing for a damaged file (its run is reported as failed)."""
    try:
        return read_metrics(run_dir)
    except ValueError:
        return []


def _cell_label(cell: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items())


def attention_label(model_kwargs: dict[str, Any]) -> str:
    """The attention of a run as tables show it: ``se`` (patterns 1-3), ``eca / cbam`` (dual:
    skip / residual), ``-`` (none); ``none`` for a path without attention. Defaults are
    :class:`resattn.layers.blocks.AttentionConfig`'s."""
    from ..layers.blocks import AttentionConfig, resolve_pattern
    default = AttentionConfig()
    pattern = resolve_pattern(model_kwargs.get("pattern", "none"))

    def name(key: str) -> str:
        v = model_kwargs.get(key, getattr(default, key))
        return "none" if v is None else v if isinstance(v, str) else getattr(v, "__name__", "custom")

    if pattern == "none":
        return "-"
    if pattern == "dual":
        return f"{name('skip_attn')} / {name('res_attn')}"
    return name("attn")


def group_label(variant: str, attn: Optional[str], cell: dict[str, Any]) -> str:
    """``dual/cbam @ lr=0.1``: a group's name in tables and plots."""
    name = variant + ("" if attn in (None, "-", "") else f"/{attn}")
    return name + (f" @ {_cell_label(cell)}" if cell else "")


def summarise(rows: list[dict[str, Any]], *, baseline: str = "none", metric: str = "final_acc",
              cell_keys: tuple[str, ...] = (), confidence: float = 0.95) -> list[dict[str, Any]]:
    """One line per group (cell, variant, attn) with n, mean, std of ``metric`` over finished runs
    and the seed-paired difference to ``baseline`` in the same cell (:func:`resattn.workflow.stats.paired_difference`).

    Diverged and failed runs are counted, not averaged: a seed pairs only when both runs finished.
    Stability columns are means over finished and diverged runs (``min_skip_gain``: the lowest).
    """
    from .stability import higher_is_better
    from .stats import paired_difference, summarise_values

    higher = higher_is_better(metric)
    counted = ("finished", "diverged") if metric in COUNTS_DIVERGED else ("finished",)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_cell_of(r, cell_keys), r["variant"], r["attn"]), []).append(r)

    def by_seed(rs):
        return {r["seed"]: _value(r, metric) for r in rs if r["status"] in counted}

    base = {cell: rs for (cell, variant, _), rs in groups.items() if variant == baseline}
    out = []
    for (cell, variant, attn), rs in groups.items():
        done = [r for r in rs if r["status"] in ("finished", "diverged")]
        ok = [r for r in done if r["status"] == "finished"]
        s = summarise_values([_value(r, metric) for r in rs if r["status"] in counted])
        paired = None
        if variant != baseline and cell in base:
            paired = paired_difference(by_seed(rs), by_seed(base[cell]), confidence=confidence,
                                       higher_is_better=higher)
        best = summarise_values([r.get("best_acc") for r in ok])
        cell_d = dict(cell)
        low = [(r["min_skip_gain"], r.get("min_skip_gain_block")) for r in done
               if r.get("min_skip_gain") is not None]
        out.append({
            "group": group_label(variant, attn, cell_d), "variant": variant, "attn": attn or "-",
            "attention": rs[0].get("attention") or attn or "-",
            "cell": cell_d, "runs": len(rs), "finished": len(ok),
            "diverged": sum(r["status"] == "diverged" for r in rs),
            "failed": sum(r["status"] in ("failed", "missing") for r in rs),
            "params": done[0]["params"] if done else None,
            "mflops": done[0]["mflops"] if done else None,
            "metric": metric, "summary": s, "n": s.n, "mean": s.mean, "std": s.std,
            "baseline": baseline if paired is not None else None, "paired": paired,
            "n_pairs": paired.n if paired else None, "diff": paired.mean_diff if paired else None,
            "diff_std": paired.std_diff if paired else None,
            "ci_low": paired.ci_low if paired else None, "ci_high": paired.ci_high if paired else None,
            "confidence": confidence, "verdict": paired.verdict if paired else ("baseline" if variant == baseline else "-"),
            "best_mean": best.mean, "values": by_seed(rs),
            "images_per_s": statistics.fmean([r["images_per_s"] for r in done if r.get("images_per_s")])
            if any(r.get("images_per_s") for r in done) else math.nan,
            **{k: _mean_of(done, k) for k in ("loss_spikes", "max_grad_norm", "final_train_loss",
                                               "steps_to_mark", "final_gamma_s", "final_gamma_r")},
            "min_skip_gain": min(low)[0] if low else None,
            "min_skip_gain_block": min(low)[1] if low else None,
        })
    return out


#: Metrics whose value a diverged run has too (its accuracy is not averaged).
COUNTS_DIVERGED = ("diverged", "loss_spikes", "max_grad_norm", "min_skip_gain", "final_gamma_s",
                   "final_gamma_r", "steps_to_mark", "final_train_loss")


def _value(r: dict[str, Any], metric: str) -> Optional[float]:
    v = r.get(metric)
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _cell_of(r: dict[str, Any], cell_keys: tuple[str, ...]) -> tuple:
    """A run's cell: its study factor levels (``r['cell']``), or its own fields (compare's lr)."""
    cell = r.get("cell") or {}
    return tuple((k, cell.get(k, r.get(k))) for k in cell_keys)


def _mean_of(rs: list[dict[str, Any]], key: str) -> Optional[float]:
    vals = [float(r[key]) for r in rs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return statistics.fmean(vals) if vals else None


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_table(summary: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The grouped table as Markdown or aligned text: n, mean ± std (no spread at n=1), the
    seed-paired difference to the baseline with its CI, the verdict, cost and stability."""
    from .stats import format_mean, format_paired

    metric = summary[0]["metric"] if summary else "final_acc"
    conf = int(round(100 * summary[0]["confidence"])) if summary else 95
    head = ["variant", "attn"] + (["cell"] if any(s["cell"] for s in summary) else []) + [
        "runs", "params", "MFLOPs", f"{metric} mean ± std", f"Δ vs baseline [{conf}% CI]", "verdict",
        "img/s", "diverged", "failed", "loss spikes", "max grad norm", "min skip gain", "γ_s end"]
    lines = []
    pm = "±" if markdown else "+-"
    for s in summary:
        lines.append([s["variant"], s.get("attention") or s["attn"]] + ([_cell_label(s["cell"])] if "cell" in head else []) + [
            str(s["runs"]),
            f"{s['params']:,}" if s["params"] else "-",
            f"{s['mflops']:.1f}" if s["mflops"] else "-",
            format_mean(s["summary"], pm=pm),
            format_paired(s["paired"]) if s["paired"] else "-",
            s["verdict"],
            _f(s["images_per_s"], ".0f"), str(s["diverged"]), str(s["failed"]),
            _f(s["loss_spikes"], ".1f"), _f(s["max_grad_norm"], ".2f"),
            (f"{s['min_skip_gain']:.2f} ({s['min_skip_gain_block']})" if s["min_skip_gain"] is not None else "-"),
            _f(s["final_gamma_s"], "+.3f"),
        ])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] +
                     [fmt.format(*r) for r in lines])


def _attach_groups(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                   cell_keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each run row with its group's statistics (``group_*`` columns of results.csv)."""
    index = {(tuple(s["cell"].items()), s["variant"], s["attn"]): s for s in summary}
    out = []
    for r in rows:
        s = index.get((_cell_of(r, cell_keys), r["variant"], r["attn"] or "-"))
        g = {} if s is None else {"group_n": s["n"], "group_mean": s["mean"], "group_std": s["std"],
                                  "group_diff": s["diff"], "group_ci_low": s["ci_low"],
                                  "group_ci_high": s["ci_high"], "group_verdict": s["verdict"]}
        out.append({**r, **g})
    return out


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] = CSV_FIELDS) -> None:
    """Rows as CSV with ``fields`` as columns (None as empty, lists and dicts as JSON)."""
    def cell(v: Any) -> Any:
        if v is None:
            return ""
        return json.dumps(v) if isinstance(v, (list, dict)) else v
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: cell(r.get(k)) for k in fields})


#: The range a metric can take, for clipping CIs in plots (None: unbounded on that side).
METRIC_RANGE: dict[str, tuple[Optional[float], Optional[float]]] = {
    "final_acc": (0.0, 100.0), "best_acc": (0.0, 100.0), "diverged": (0.0, 1.0),
    "min_skip_gain": (0.0, None), "loss_spikes": (0.0, None), "max_grad_norm": (0.0, None),
    "final_train_loss": (0.0, None), "steps_to_mark": (0.0, None),
}


def _clip(v: float, lo: Optional[float], hi: Optional[float]) -> float:
    return min(max(v, lo if lo is not None else v), hi if hi is not None else v)


def accuracy_plot(path: Path, summary: list[dict[str, Any]], *, title: str = "",
                  ylabel: str = "final test accuracy (%)") -> Optional[Path]:
    """Every seed as a point, and per group the mean with its 95% CI (Student t; none at n=1).

    ``summary`` must be of an accuracy metric (``final_acc`` or ``best_acc``): the title and axis
    say accuracy. The CI bars are clipped to [0, 100] % (marked where clipped) and each group's
    n is written under its mean.

    Raises:
        ValueError: a summary of another metric (use :func:`metric_plot`).
    """
    metrics = {s.get("metric", "final_acc") for s in summary}
    if metrics - {"final_acc", "best_acc"}:
        raise ValueError(f"accuracy_plot: the summary is of {sorted(metrics)}, not an accuracy; "
                         "summarise(rows, metric='final_acc') first, or use metric_plot")
    return metric_plot(path, summary, title=title, ylabel=ylabel, metric="final_acc")


def _subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, from matplotlib's ``Figure`` alone: no pyplot,
    so writing a report neither switches the caller's backend nor leaves figures open."""
    from matplotlib.figure import Figure
    fig_kw = {k: kw.pop(k) for k in ("figsize",) if k in kw}
    fig = Figure(**fig_kw)
    return fig, fig.subplots(nrows, ncols, **kw)


def metric_plot(path: Path, summary: list[dict[str, Any]], *, metric: str, ylabel: str,
                title: str = "") -> Optional[Path]:
    """Every seed as a point, and per group the mean with its CI (Student t; none at n=1), the
    CI clipped to the metric's range (:data:`METRIC_RANGE`; an arrow where clipped) and n
    written under each group."""
    from .stats import t_quantile

    done = [s for s in summary if s["values"]]
    if not done:
        return None
    lo_lim, hi_lim = METRIC_RANGE.get(metric, (None, None))
    fig, ax = _subplots(figsize=(max(4.0, 1.1 * len(done) + 2), 3.8))
    lows, highs = [], []
    for i, s in enumerate(done):
        vals = [v for v in s["values"].values() if v is not None]
        jitter = [i + 0.12 * (j - (len(vals) - 1) / 2) / max(1, len(vals) - 1) for j in range(len(vals))]
        ax.scatter(jitter, vals, s=14, color="tab:blue", alpha=0.7, zorder=3,
                   label="one seed" if i == 0 else None)
        if s["std"] is not None and s["n"] >= 2:
            half = t_quantile(s["confidence"], s["n"] - 1) * s["std"] / math.sqrt(s["n"])
            low, high = _clip(s["mean"] - half, lo_lim, hi_lim), _clip(s["mean"] + half, lo_lim, hi_lim)
            ax.errorbar([i + 0.3], [s["mean"]], yerr=[[s["mean"] - low], [high - s["mean"]]],
                        fmt="s", color="black", capsize=4, ms=4,
                        label=f"mean, {int(round(100 * s['confidence']))}% CI" if i == 0 else None)
            for end, clipped in ((low, low > s["mean"] - half), (high, high < s["mean"] + half)):
                if clipped:
                    ax.plot([i + 0.3], [end], marker="v" if end == low else "^", color="tab:red",
                            ms=5, zorder=4)
            lows.append(low)
            highs.append(high)
        lows += vals
        highs += vals
    span = max(highs) - min(lows)
    bottom, top = min(lows) - 0.1 * span - 0.5, max(highs) + 0.1 * span + 0.5
    bottom = bottom if lo_lim is None else max(bottom, lo_lim - 0.02 * max(span, 1))
    top = top if hi_lim is None else min(top, hi_lim + 0.02 * max(span, 1))
    ax.set_ylim(bottom, top)
    for i, s in enumerate(done):
        ax.annotate(f"n={s['n']}", (i, 0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(done)), [s["group"].replace(" @ ", "\n") for s in done], fontsize=7)
    ax.set_ylabel(ylabel)
    n = max(s["n"] for s in done)
    what = "Final test accuracy" if metric in ("final_acc", "best_acc") else metric
    ax.set_title(title or (f"{what} per variant: seeds and mean with CI (red: CI clipped to the "
                           "metric's range)" if n > 1 else f"{what} per variant (n=1: no CI)"),
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def paired_delta_plot(path: Path, cells: list[dict[str, Any]], *, metric: str, better: str,
                      worse: str, thresholds: tuple[float, ...] = (0.0,), confidence: float = 0.95,
                      title: str = "") -> Optional[Path]:
    """The seed-paired difference a verdict rests on: per cell the mean Δ (``better`` minus
    ``worse`` on ``metric``) with its CI and n, and the decision thresholds as lines.

    Args:
        cells: dicts with ``cell``, ``n``, ``diff``, ``ci_low``, ``ci_high`` and ``outcome``
            (as :func:`resattn.workflow.study.evaluate_hypothesis` returns them).
        thresholds: the values the decision rule compares the CI with (0: the CI must exclude
            no difference).
    """
    shown = [c for c in cells if c.get("diff") is not None]
    if not shown:
        return None
    colors = {"supports": "tab:green", "contradicts": "tab:red", "better": "tab:green",
              "worse": "tab:red", "equivalent": "tab:blue"}
    fig, ax = _subplots(figsize=(max(4.5, 1.2 * len(shown) + 2.5), 3.8))
    for i, c in enumerate(shown):
        color = colors.get(c.get("outcome"), "tab:grey")
        if c.get("ci_low") is not None:
            ax.errorbar([i], [c["diff"]], yerr=[[c["diff"] - c["ci_low"]], [c["ci_high"] - c["diff"]]],
                        fmt="o", color=color, capsize=5, ms=5)
        else:
            ax.plot([i], [c["diff"]], "o", color=color, mfc="white")
        ax.annotate(f"n={c['n']}" + ("" if c.get("ci_low") is not None else " (no CI)"),
                    (i, c["diff"]), xytext=(8, 0), textcoords="offset points", fontsize=7,
                    va="center")
    for t in thresholds:
        ax.axhline(t, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(shown)), [", ".join(f"{k}={v}" for k, v in c["cell"].items()) or "(all)"
                                      for c in shown], fontsize=7)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel(f"Δ {metric} ({better} − {worse})")
    ax.set_title(title or (f"{better} vs {worse}: seed-paired Δ {metric} per cell, "
                           f"{int(round(100 * confidence))}% CI; dashed: decision threshold"),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_plots(out: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
           threshold: float = 0.7) -> dict[str, Path]:
    """The report's figures that have something to show, by name: ``accuracy``, ``loss``,
    ``gamma`` and ``skip_gain`` (the last two for dual runs with gate records)."""
    metrics = {r["run_id"]: _metrics_for_plots(out / "runs" / r["run_id"]) for r in rows}
    dual = [r for r in rows if _is_dual(r)]
    gate_epochs = {r["run_id"]: [m for m in metrics[r["run_id"]]
                                 if m.get("type") == "epoch" and m.get("gates")] for r in dual}
    # the first seed with gate records (a failed run of seed 0 leaves none)
    first_seed = min((r["seed"] for r in dual if gate_epochs[r["run_id"]]), default=0)
    seed_of = {r["run_id"]: r["seed"] for r in dual}
    shown = {k: v for k, v in gate_epochs.items() if v and seed_of[k] == first_seed}
    paths = {"accuracy": accuracy_plot(out / "accuracy.png", summary),
             "loss": _loss_plot(out / "loss.png", rows, metrics),
             "gamma": _gamma_plot(out / "gamma.png", shown, first_seed),
             "skip_gain": _skip_gain_plot(out / "skip_gain.png", dict(list(shown.items())[:8]),
                                          threshold)}
    return {k: v for k, v in paths.items() if v is not None}


def _loss_plot(path: Path, rows: list[dict[str, Any]],
               metrics: dict[str, list[dict[str, Any]]]) -> Optional[Path]:
    """Training loss per logged step (per epoch where no run logged steps), one line per run."""
    fig, ax = _subplots(figsize=(7, 4))
    by_step = any(m.get("type") == "step" for ms in metrics.values() for m in ms)
    kind, x_key, y_key = ("step", "step", "loss") if by_step else ("epoch", "epoch", "train_loss")
    drawn = False
    for r in rows:
        recs = [m for m in metrics[r["run_id"]] if m.get("type") == kind]
        if recs:
            ax.plot([m[x_key] for m in recs], [m[y_key] for m in recs], label=r["run_id"], lw=1,
                    marker=None if by_step else "o")
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel(kind)
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    if len(rows) <= 16:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("Training loss" + (f" ({len(rows)} runs)" if len(rows) > 16 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _gamma_plot(path: Path, gate_epochs: dict[str, list[dict[str, Any]]],
                seed: int) -> Optional[Path]:
    """Mean effective γ_s (solid) and γ_r (dashed) over the dual blocks, per epoch and run."""
    from matplotlib.ticker import MaxNLocator
    if not gate_epochs:
        return None
    fig, ax = _subplots(figsize=(7, 4))
    for run_id, eps in gate_epochs.items():
        for key, style in (("gamma/skip_attn", "-"), ("gamma/res_attn", "--")):
            ys = [_block_mean(e.get("gates_end") or e["gates"], key) for e in eps]
            if any(not math.isnan(y) for y in ys):
                ax.plot([e["epoch"] for e in eps], ys, style, marker="o",
                        label=f"{run_id} {'γ_s' if 'skip' in key else 'γ_r'}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean effective γ over dual blocks")
    ax.set_title(f"γ_s (solid) and γ_r (dashed) at the end of each epoch (seed {seed})")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _skip_gain_plot(path: Path, gate_epochs: dict[str, list[dict[str, Any]]],
                    threshold: float) -> Optional[Path]:
    """Skip gain per block per epoch, one panel per run, with the warning threshold."""
    from matplotlib.ticker import MaxNLocator
    if not gate_epochs:
        return None
    fig, axes = _subplots(1, len(gate_epochs), figsize=(5 * len(gate_epochs), 3.8), squeeze=False,
                          sharey=True)
    for ax, (run_id, eps) in zip(axes[0], gate_epochs.items()):
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
    fig.savefig(path, dpi=120)
    return path


def _is_dual(r: dict[str, Any]) -> bool:
    return r.get("pattern") == "dual" or str(r["variant"]).startswith("dual")


def _block_mean(gates: dict[str, dict[str, float]], key: str) -> float:
    vals = [v[key] for v in gates.values() if key in v]
    return statistics.fmean(vals) if vals else math.nan


def _stability(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines on the dual runs: status, lowest skip gain and mean gammas at the end."""
    lines = []
    for r in rows:
        if not _is_dual(r):
            continue
        eps = [m for m in _metrics_for_plots(out / "runs" / r["run_id"])
               if m.get("type") == "epoch" and m.get("gates")]
        if not eps:
            continue
        end = eps[-1].get("gates_end") or eps[-1]["gates"]  # the model the run ended with
        gates = {b: v for b, v in end.items() if "gate_energy/skip_attn" in v}
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


def precision_text(rows: list[dict[str, Any]]) -> str:
    """What precision the runs trained in (``precision`` of their result.json), for example
    ``'bf16 (all 18 runs)'``; runs without a result are not counted."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("precision"):
            counts[r["precision"]] = counts.get(r["precision"], 0) + 1
    if not counts:
        return "unknown"
    if len(counts) == 1:
        (p, n), = counts.items()
        return f"{p} (all {n} runs with a result)"
    return ", ".join(f"{p}: {n} runs" for p, n in sorted(counts.items()))


def machine_lines(command: str, wall_time_s: float, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the exact command, wall time, precision, machine and versions."""
    from ..utils.machine import machine_description, versions
    return [
        "    " + command, "",
        f"- wall time of this invocation: {wall_time_s:.0f} s; training time of all runs: "
        f"{sum(r.get('train_time_s') or 0 for r in rows):.0f} s",
        f"- precision: {precision_text(rows)}",
        f"- machine: {machine_description()}",
        f"- {versions()}",
        f"- written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
    ]


STATS_NOTE = ("n = finished seeds; mean ± std over them (no spread at n=1). Δ = seed-paired mean "
              "difference to the baseline (same seed: same data subset, order, augmentation draws "
              "and flipped labels), with a {conf}% CI from Student's t over the pairs; verdict "
              "`better`/`worse` when the CI excludes 0, else `indistinguishable` at this budget "
              "(`n<2`: no CI). Diverged runs are counted, not averaged. Stability columns: "
              "see `resattn.workflow.stability` (loss spikes: step-loss peaks above 3x the running median).")


def unfinished_runs(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines listing the runs that failed or have no result (none when all finished)."""
    failed = [r for r in rows if r["status"] in ("failed", "missing")]
    if not failed:
        return []

    def line(r: dict[str, Any]) -> str:
        what = "**defect in resattn** (please report it): " if r.get("defect") else ""
        log = f" (traceback: `{r['log']}`)" if r.get("log") else ""
        return f"- `{r['run_id']}`: {what}{r.get('error')}{log}"

    return ["## Runs that did not finish", ""] + [line(r) for r in failed] + [""]


def write_report(out: Path, rows: list[dict[str, Any]], *, command: str, config: Any,
                 wall_time_s: float) -> tuple[dict[str, Path], str]:
    """Write results.csv, summary.csv, plots and report.md into ``out``; return (paths, text table)."""
    out = Path(out)
    cell_keys = ("lr",) if len(config.lrs) > 1 else ()
    baseline = config.effective_baseline()
    summary = summarise(rows, baseline=baseline, cell_keys=cell_keys)
    write_csv(out / "results.csv", _attach_groups(rows, summary, cell_keys))
    write_csv(out / "summary.csv", summary, SUMMARY_FIELDS)
    plots = write_plots(out, rows, summary, threshold=config.train_options.get("skip_gain_threshold", 0.7))
    md = [
        "# resattn compare report", "",
        f"Data set: **{config.dataset}**, model: **{config.model}**, epochs: {config.epochs}, "
        f"train subset: {config.effective_train_subset() or 'all'}, test subset: "
        f"{config.effective_test_subset() or 'all'}, seeds: {config.seeds}, lr: {config.lrs}, "
        f"baseline: `{baseline}`.", "",
        format_table(summary, markdown=True), "",
        STATS_NOTE.format(conf=95) + " Accuracy is top-1 on the test split at the last epoch. "
        "MFLOPs per image from `torch.utils.flop_counter` (multiply-add = 2 FLOPs). "
        "img/s = training images per second.", "",
        "## How this was made", "",
    ] + machine_lines(command, wall_time_s, rows)
    if any(s["n"] < 2 for s in summary):
        md += ["Groups with n=1 show no spread: differences of about a point between variants "
               "are within run-to-run noise at this budget; add seeds (`--seeds 0,1,2`) before "
               "reading a ranking into them.", ""]
    md += _stability(out, rows)
    md += unfinished_runs(rows)
    if plots:
        md += ["## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()] + [""]
    (out / "report.md").write_text("\n".join(md))
    paths = {"results": out / "results.csv", "summary": out / "summary.csv", "report": out / "report.md", **plots}
    return paths, format_table(summary)
