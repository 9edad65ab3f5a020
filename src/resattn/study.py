"""Pre-registered studies: ``resattn study FILE [--budget smoke|cpu|full]``.

A study file (YAML) states, before anything runs, what would count as evidence::

    name: skip-form                       # folder name of the output
    claim: In dual, the near-identity skip trains better than the gated skip m(x)*x.
    hypothesis:                           # one mapping, or a list of them (each gets a verdict)
      better: dual                        # the variant expected to win ...
      worse: dual-gate                    # ... against this one (the paired baseline)
      metric: final_acc                   # see METRICS; direction from the metric
      where: {depth: "56"}                # optional: only these factor levels
    decision_rule:                        # required
      test: paired_ci                     # the seed-paired mean difference with a Student-t CI
      confidence: 0.95
    variants:                             # name -> options (create_model and training options)
      dual: {pattern: dual}
      dual-gate: {pattern: dual, skip_modulation: gate}
    factors:                              # crossed with the variants; a list of values of one
      model: [cifar_resnet20, cifar_resnet56]   # option, or named levels of several options:
      regime: {noisy: {label_noise: 0.2}, clean: {label_noise: 0.0}}
    fixed: {weight_decay: 5.0e-4}         # options of every run
    dataset: fashion-mnist
    budgets:                              # smoke (tests), cpu (2 cores), full (a GPU)
      smoke: {train_subset: 256, test_subset: 256, epochs: 1, seeds: [0, 1]}
      cpu: {train_subset: 4000, test_subset: 2000, epochs: 2, seeds: [0, 1, 2]}
      full: {epochs: 15, seeds: [0, 1, 2, 3, 4]}
    changes: []                           # edits made after a run, each with its reason

An option's value is set, lowest first, by: TrainConfig's default, ``fixed``, the budget, the
variant, the factor level. A budget may also replace ``factors`` (a smaller grid for ``smoke``).

Decision rule ``paired_ci``: in each cell of the factors (or the cells of ``where``) take the
seed-paired differences better - worse; the cell *supports* the hypothesis when the CI lies on the
better side of 0, *contradicts* it when the CI lies on the other side, and is *inconclusive*
otherwise (or with fewer than 2 pairs). The hypothesis is **supported** when every cell supports
it, **contradicted** when every cell contradicts it, and **inconclusive** otherwise.

Everything is validated before the first run: an unknown key, factor, option, variant or metric,
or a missing claim, hypothesis or decision rule raises ValueError naming the key.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .compare import RunSpec, run_specs
from .stability import HIGHER_IS_BETTER
from .train import TrainConfig

__all__ = ["Study", "load_study", "run_study", "METRICS", "BUDGETS"]

BUDGETS = ("smoke", "cpu", "full")
#: Metric -> higher is better. Accuracies are over finished runs; ``diverged`` (1 or 0) and the
#: stability metrics of :mod:`resattn.stability` also count diverged runs.
METRICS: dict[str, bool] = {"final_acc": True, "best_acc": True, "diverged": False, **HIGHER_IS_BETTER}
TESTS = ("paired_ci",)
_TOP_KEYS = {"name", "claim", "hypothesis", "decision_rule", "variants", "factors", "fixed",
             "dataset", "budgets", "changes", "notes"}
_BUDGET_KEYS = {"train_subset", "test_subset", "epochs", "seeds", "batch_size", "factors", "fixed"}
_NOT_OPTIONS = {"model_kwargs", "seed"}  # seeds come from the budget


def _model_option_names() -> set[str]:
    from .models.resnet import _ATTN_FIELDS, ResNet
    params = set(inspect.signature(ResNet.__init__).parameters) - {"self", "block", "layers", "attn_kwargs"}
    return params | set(_ATTN_FIELDS)


_ATTN_KEYS = {"attn", "skip_attn", "res_attn"}


def _split_options(opts: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options -> (model kwargs, TrainConfig fields); ValueError naming ``where.key`` if unknown."""
    model_names = _model_option_names()
    train_names = set(TrainConfig.__dataclass_fields__) - _NOT_OPTIONS
    model_kw, train_kw = {}, {}
    for k, v in (opts or {}).items():
        if k in train_names:
            train_kw[k] = v
        elif k in model_names:
            model_kw[k] = None if (k in _ATTN_KEYS and v == "none") else v
        else:
            raise ValueError(f"{where}.{k}: unknown option {k!r}; allowed: create_model options "
                             f"({', '.join(sorted(model_names))}) or training options "
                             f"({', '.join(sorted(train_names))})")
    return model_kw, train_kw


@dataclass
class Hypothesis:
    better: str
    worse: str
    metric: str
    where: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        where = f" where {', '.join(f'{k}={v}' for k, v in self.where.items())}" if self.where else ""
        direction = "higher" if METRICS[self.metric] else "lower"
        return f"`{self.better}` beats `{self.worse}` on `{self.metric}` ({direction} is better){where}"


@dataclass
class Study:
    """A validated study file (see the module docstring)."""

    path: str
    name: str
    claim: str
    hypotheses: list[Hypothesis]
    test: str
    confidence: float
    variants: dict[str, dict[str, Any]]
    factors: dict[str, dict[str, dict[str, Any]]]  # factor -> level label -> options
    fixed: dict[str, Any]
    dataset: str
    budgets: dict[str, dict[str, Any]]
    changes: list[Any]
    text: str

    def rule_text(self) -> str:
        c = int(round(100 * self.confidence))
        return (f"Seed-paired mean difference (better - worse) with a {c}% Student-t CI in each cell: "
                f"supported if the CI lies on the better side of 0 in every cell; contradicted if it "
                f"lies on the other side in every cell; else inconclusive.")

    def specs(self, budget: str, *, extra: Optional[dict[str, Any]] = None) -> list[RunSpec]:
        """Every run of the grid at ``budget``: variants x factor levels x seeds (validated)."""
        if budget not in self.budgets:
            raise ValueError(f"{self.path}: budget={budget!r} is not defined in this study; "
                             f"defined: {', '.join(self.budgets) or 'none'}")
        b = dict(self.budgets[budget])
        factors = _levels(b["factors"], "budgets." + budget + ".factors") if "factors" in b else self.factors
        seeds = b.get("seeds", [0, 1, 2])
        if (not isinstance(seeds, list) or not seeds
                or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds)):
            raise ValueError(f"{self.path}: budgets.{budget}.seeds={seeds!r} must be a non-empty "
                             "list of integers, for example [0, 1, 2]")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{self.path}: budgets.{budget}.seeds={seeds!r} repeats a seed; each "
                             "seed must appear once (a repeated run would be counted twice)")
        base = {**self.fixed, **(b.get("fixed") or {}),
                **{k: b[k] for k in ("train_subset", "test_subset", "epochs", "batch_size") if k in b}}
        out = []
        names = list(factors)
        for variant, vopts in self.variants.items():
            for combo in itertools.product(*(factors[f].items() for f in names)):
                cell = {f: label for f, (label, _) in zip(names, combo)}
                opts = dict(base)
                opts.update(vopts)
                for _, level in combo:
                    opts.update(level)
                model_kw, train_kw = _split_options(opts, f"variant {variant}")
                train_kw.setdefault("dataset", self.dataset)
                if "precision" in (extra or {}):  # the command line's word over a file's bf16
                    train_kw.pop("bf16", None)
                train_kw.update(extra or {})
                try:
                    _check_model(train_kw.get("model", TrainConfig.model), model_kw)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{self.path}: variant {variant!r} at {cell or 'the base cell'}, "
                                     f"budget {budget!r}: {e}") from e
                for seed in seeds:
                    try:
                        cfg = TrainConfig(**{**train_kw, "model_kwargs": model_kw, "seed": seed}).validate()
                    except (TypeError, ValueError) as e:
                        raise ValueError(f"{self.path}: variant {variant!r} at {cell or 'the base cell'}, "
                                         f"budget {budget!r}: {e}") from e
                    label = "-".join([variant] + [f"{f}{v}" for f, v in cell.items()] + [f"s{seed}"])
                    out.append(RunSpec(label, variant, None, seed, cfg.lr, cfg, cell=cell))
        return out


_CHECKED_MODELS: dict[str, Optional[str]] = {}


def _check_model(name: str, model_kw: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory) so that a bad create_model option
    (``pattern: quad``, ``res_attn: foo``, ``skip_gamma_max: big``) is refused before any run.
    Results are cached by (name, options): a grid repeats the same few models."""
    from .models import create_model, is_model
    if not is_model(name):
        return  # TrainConfig.validate names the unregistered model
    key = repr((name, sorted(model_kw.items(), key=lambda kv: kv[0])))
    if key not in _CHECKED_MODELS:
        import warnings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                create_model(name, **{**model_kw, "device": "meta"})
            _CHECKED_MODELS[key] = None
        except (TypeError, ValueError) as e:
            _CHECKED_MODELS[key] = str(e)
    if _CHECKED_MODELS[key] is not None:
        raise ValueError(_CHECKED_MODELS[key])


def _levels(factors: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Factors as factor -> level label -> options; a list of values of option F gives levels
    ``{str(v): {F: v}}``."""
    if not isinstance(factors, dict):
        raise ValueError(f"{where}: expected a mapping of factor -> values, got {type(factors).__name__}")
    out = {}
    for f, values in factors.items():
        if isinstance(values, dict):
            levels = {}
            for label, opts in values.items():
                if not isinstance(opts, dict):
                    raise ValueError(f"{where}.{f}.{label}: a named level must be a mapping of options")
                _split_options(opts, f"{where}.{f}.{label}")
                levels[str(label)] = dict(opts)
        elif isinstance(values, list) and values:
            _split_options({f: values[0]}, where)
            levels = {str(v): {f: v} for v in values}
        else:
            raise ValueError(f"{where}.{f}: expected a non-empty list of values or a mapping of "
                             "named levels")
        out[str(f)] = levels
    return out


def _require(data: dict, key: str, path: str) -> Any:
    if key not in data or data[key] in (None, "", [], {}):
        raise ValueError(f"{path}: the study has no {key!r}; a pre-registered study states its "
                         f"{key.replace('_', ' ')} before it runs")
    return data[key]


def load_study(path: str | Path) -> Study:
    """Read and validate a study file; nothing runs.

    Raises:
        ValueError: unreadable or not a mapping; a missing ``claim``, ``hypothesis``,
            ``decision_rule``, ``variants`` or ``budgets``; an unknown top-level key, budget key,
            factor, option, variant or metric. The message names the file and the key.
    """
    import yaml

    path = str(path)
    try:
        text = Path(path).read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read it as YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    claim = str(_require(data, "claim", path)).strip()
    rule = _require(data, "decision_rule", path)
    if not isinstance(rule, dict):
        raise ValueError(f"{path}: decision_rule must be a mapping with 'test' (one of {', '.join(TESTS)})")
    if rule.get("test") not in TESTS:
        raise ValueError(f"{path}: decision_rule.test={rule.get('test')!r} is not allowed; allowed: {', '.join(TESTS)}")
    bad = set(rule) - {"test", "confidence"}
    if bad:
        raise ValueError(f"{path}: decision_rule.{sorted(bad)[0]}: unknown key; allowed: test, confidence")
    confidence = float(rule.get("confidence", 0.95))
    if not 0 < confidence < 1:
        raise ValueError(f"{path}: decision_rule.confidence={confidence!r} must be in (0, 1)")

    variants = _require(data, "variants", path)
    if not isinstance(variants, dict):
        raise ValueError(f"{path}: variants must be a mapping of name -> options")
    variants = {str(k): dict(v or {}) for k, v in variants.items()}
    for name, opts in variants.items():
        _split_options(opts, f"{path}: variants.{name}")
    factors = _levels(data.get("factors") or {}, f"{path}: factors")
    fixed = dict(data.get("fixed") or {})
    _split_options(fixed, f"{path}: fixed")

    hyps = _require(data, "hypothesis", path)
    hyps = hyps if isinstance(hyps, list) else [hyps]
    hypotheses = []
    for i, h in enumerate(hyps):
        where = f"{path}: hypothesis" + (f"[{i}]" if len(hyps) > 1 else "")
        if not isinstance(h, dict):
            raise ValueError(f"{where}: expected a mapping with better, worse, metric")
        bad = set(h) - {"better", "worse", "metric", "where"}
        if bad:
            raise ValueError(f"{where}.{sorted(bad)[0]}: unknown key; allowed: better, worse, metric, where")
        for k in ("better", "worse"):
            if h.get(k) not in variants:
                raise ValueError(f"{where}.{k}={h.get(k)!r} is not a variant; variants: {', '.join(variants)}")
        if h["better"] == h["worse"]:
            raise ValueError(f"{where}: better and worse are both {h['better']!r}; a hypothesis "
                             "compares two different variants")
        if h.get("metric") not in METRICS:
            raise ValueError(f"{where}.metric={h.get('metric')!r} is not a known metric; allowed: "
                             f"{', '.join(METRICS)}")
        cond = {str(k): str(v) for k, v in (h.get("where") or {}).items()}
        for k, v in cond.items():
            if k not in factors:
                raise ValueError(f"{where}.where.{k}: {k!r} is not a factor of this study; factors: "
                                 + (", ".join(factors) or "none"))
            if v not in factors[k]:
                raise ValueError(f"{where}.where.{k}={v!r}: not a factor level; factors: "
                                 + "; ".join(f"{f}: {', '.join(lv)}" for f, lv in factors.items()))
        hypotheses.append(Hypothesis(h["better"], h["worse"], h["metric"], cond))

    budgets = _require(data, "budgets", path)
    if not isinstance(budgets, dict):
        raise ValueError(f"{path}: budgets must be a mapping of {', '.join(BUDGETS)} -> settings")
    for b, settings in budgets.items():
        if b not in BUDGETS:
            raise ValueError(f"{path}: budgets.{b}: unknown budget; allowed: {', '.join(BUDGETS)}")
        bad = set(settings or {}) - _BUDGET_KEYS
        if bad:
            raise ValueError(f"{path}: budgets.{b}.{sorted(bad)[0]}: unknown key; allowed: "
                             f"{', '.join(sorted(_BUDGET_KEYS))}")
    study = Study(path=path, name=str(data.get("name") or Path(path).stem), claim=claim,
                  hypotheses=hypotheses, test=rule["test"], confidence=confidence,
                  variants=variants, factors=factors, fixed=fixed,
                  dataset=str(data.get("dataset", "fashion-mnist")),
                  budgets={k: dict(v or {}) for k, v in budgets.items()},
                  changes=list(data.get("changes") or []), text=text)
    for b in study.budgets:
        study.specs(b)  # every run's options valid at every budget, before anything runs
    return study


# ----------------------------------------------------------------------------- verdicts

def evaluate_hypothesis(h: Hypothesis, rows: list[dict[str, Any]], factors: list[str],
                        confidence: float) -> dict[str, Any]:
    """Per-cell paired results and the overall verdict of one hypothesis (see the module docstring)."""
    from .report import summarise
    summary = summarise(rows, baseline=h.worse, metric=h.metric, cell_keys=tuple(factors),
                        confidence=confidence)
    cells = []
    for s in summary:
        if s["variant"] != h.better or s["paired"] is None:
            continue
        if any(str(s["cell"].get(k)) != v for k, v in h.where.items()):
            continue
        p = s["paired"]
        outcome = {"better": "supports", "worse": "contradicts"}.get(p.verdict, "inconclusive")
        cells.append({"cell": s["cell"], "n": p.n, "diff": p.mean_diff, "std": p.std_diff,
                      "ci_low": p.ci_low, "ci_high": p.ci_high, "outcome": outcome})
    outcomes = {c["outcome"] for c in cells}
    verdict = ("supported" if outcomes == {"supports"} else
               "contradicted" if outcomes == {"contradicts"} else "inconclusive")
    return {"hypothesis": h.text(), "better": h.better, "worse": h.worse, "metric": h.metric,
            "where": h.where, "cells": cells, "verdict": verdict, "summary": summary}


def run_study(study: Study, budget: str, out: str | Path, *, command: str, progress: bool = True,
              log=print, extra: Optional[dict[str, Any]] = None, executor=None) -> dict[str, Any]:
    """Run the study's grid at ``budget`` through :func:`resattn.compare.run_specs` (on
    ``executor``, default sequential; see :mod:`resattn.executors`) and write
    ``out/report.md``, ``study.json``, ``results.csv``, ``summary.csv``, the plots and a copy of the
    study file. ``extra``: execution options (device, tensorboard, compile, num_workers).

    Raises:
        ValueError: ``budget`` not in the study; runs in ``out`` made with other options.
    """
    if budget not in study.budgets:
        raise ValueError(f"{study.path}: budget={budget!r} is not defined; this study has "
                         f"{', '.join(study.budgets)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = study.specs(budget, extra=extra)
    (out / "study.yaml").write_text(study.text)
    t0 = time.perf_counter()
    rows = run_specs(specs, out / "runs", executor=executor, progress=progress, log=log)
    wall = time.perf_counter() - t0
    factors = list(specs[0].cell) if specs else []
    results = [evaluate_hypothesis(h, rows, factors, study.confidence) for h in study.hypotheses]
    return _write_study_report(study, budget, out, rows, results, factors, command, wall)


def _write_study_report(study: Study, budget: str, out: Path, rows: list[dict[str, Any]],
                        results: list[dict[str, Any]], factors: list[str], command: str,
                        wall: float) -> dict[str, Any]:
    import platform

    import torch

    from .report import (SUMMARY_FIELDS, STATS_NOTE, _attach_groups, _plots, accuracy_plot,
                         format_table, machine_lines, unfinished_runs, write_csv)
    from .stats import format_paired, Paired

    first = results[0]["summary"] if results else []
    write_csv(out / "results.csv", _attach_groups(rows, first, tuple(factors)))
    write_csv(out / "summary.csv", [s for r in results for s in r["summary"]], SUMMARY_FIELDS)
    plots = {k: p.name for k, p in _plots(out, rows, first).items()}
    for i, r in enumerate(results):
        if r["metric"] not in ("final_acc", "best_acc"):
            p = accuracy_plot(out / f"hypothesis{i + 1}.png", r["summary"], ylabel=r["metric"],
                              title=f"{r['metric']}: seeds and mean with 95% CI")
            if p is not None:
                plots[f"hypothesis{i + 1}"] = p.name
    b = study.budgets[budget]
    md = [f"# Study: {study.name} (budget `{budget}`)", "",
          f"**Claim.** {study.claim}", "",
          "**Hypotheses.**", ""] + [f"{i + 1}. {h.text()}" for i, h in enumerate(study.hypotheses)] + [
          "", f"**Decision rule** (`{study.test}`). {study.rule_text()}", "",
          f"Data: {study.dataset}; budget `{budget}`: " +
          ", ".join(f"{k}={v}" for k, v in b.items() if k != "factors") + ".", ""]
    if study.changes:
        md += ["**Changes recorded after registration:**", ""] + [f"- {c}" for c in study.changes] + [""]
    md += ["## Verdicts", ""]
    for i, r in enumerate(results):
        md += [f"### Hypothesis {i + 1}: **{r['verdict']}**", "", r["hypothesis"], "",
               "| cell | n pairs | Δ (better − worse) [CI] | cell outcome |", "|---|---|---|---|"]
        if not r["cells"]:
            md.append("| (no cell of this hypothesis at this budget) | 0 | - | inconclusive |")
        for c in r["cells"]:
            p = Paired(c["n"], c["diff"], c["std"], c["ci_low"], c["ci_high"], study.confidence, "")
            cell = ", ".join(f"{k}={v}" for k, v in c["cell"].items()) or "(all)"
            md.append(f"| {cell} | {c['n']} | {format_paired(p, 3)} | {c['outcome']} |")
        md += ["", format_table(r["summary"], markdown=True), ""]
    md += [STATS_NOTE.format(conf=int(round(100 * study.confidence))), "",
           "## How this was made", ""] + machine_lines(command, wall, rows)
    md += unfinished_runs(rows)
    if plots:
        md += ["## Plots", ""] + [f"![{k}]({p})" for k, p in plots.items()] + [""]
    (out / "report.md").write_text("\n".join(md))
    doc = {
        "name": study.name, "claim": study.claim, "budget": budget, "budget_settings": b,
        "rule": study.rule_text(), "test": study.test, "confidence": study.confidence,
        "study_file": study.path, "study_sha256": hashlib.sha256(study.text.encode()).hexdigest(),
        "changes": study.changes, "command": command, "wall_time_s": wall,
        "train_time_s": sum(r.get("train_time_s") or 0 for r in rows),
        "runs": len(rows), "finished": sum(r["status"] == "finished" for r in rows),
        "diverged": sum(r["status"] == "diverged" for r in rows),
        "failed": sum(r["status"] in ("failed", "missing") for r in rows),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads" +
                   (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"),
        "torch": torch.__version__, "plots": plots,
        "hypotheses": [{k: v for k, v in r.items() if k != "summary"} |
                       {"table": [{k: s[k] for k in ("group", "variant", "cell", "n", "mean", "std",
                                                      "diff", "ci_low", "ci_high", "verdict", "diverged",
                                                      "failed", "metric")} for s in r["summary"]]}
                       for r in results],
    }
    (out / "study.json").write_text(json.dumps(doc, indent=2, default=str))
    return {"rows": rows, "results": results, "report": out / "report.md", "study_json": out / "study.json",
            "wall_time_s": wall}
