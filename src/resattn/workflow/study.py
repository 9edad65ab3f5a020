"""Pre-registered studies: ``resattn study FILE [--budget smoke|cpu|full]``.

A study file (YAML) states, before anything runs, what would count as evidence::

    name: skip-form                       # folder name of the output
    claim: In dual, the near-identity skip trains better than the gated skip m(x)*x.
    hypothesis:                           # one mapping, or a list of them (each gets a verdict)
      better: dual                        # the variant expected to win ...
      worse: dual-gate                    # ... against this one (the paired baseline)
      metric: final_acc                   # see METRICS; direction from the metric
      where: {depth: "56"}                # optional: only these factor levels
      delta: 0.5                          # optional: smallest effect of interest (metric units)
    decision_rule:                        # required
      test: paired                        # seed-paired tests, Holm across the study (below)
      confidence: 0.95                    # alpha = 1 - confidence
      delta: 0.5                          # default smallest effect for accuracy hypotheses
    validity:                             # required for every budget but smoke
      floors: {cpu: {plain: 88.0}}        # budget -> variant -> lowest mean final_acc in a cell
      trained: {above_chance: 20.0, loss_fall: 0.1}   # the per-run check (these are defaults)
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

A floor may also be a list of ``{min: 80.0, where: {regime: n1k}}`` (a floor per factor level).

Validity (checked before any verdict):

* a run is **trained** when it finished, its final accuracy is at least chance (100 / classes)
  + ``above_chance`` points, and its training loss fell: the last epoch's mean loss is at most
  (1 - ``loss_fall``) x the first step record's. Untrained runs are counted and listed, never
  dropped: their values enter the statistics as measured (a diverged run scores chance on an
  accuracy metric and 1 on ``diverged``).
* a **floor** is met in a cell when the variant's mean final accuracy there reaches it. A cell
  whose floor is missed makes every hypothesis cell there **invalid**, and the study says which
  floor failed and by how much.

Decision rule ``paired`` (:mod:`resattn.workflow.stats`): in each cell of the factors (or of ``where``) take
the seed-paired differences d = better - worse over the budget's seeds. A seed whose run of either
variant failed, is missing or has no value makes the cell **incomplete** (no verdict). Otherwise the
cell gets a two-sided difference test and, when the hypothesis has a delta, an equivalence test
(TOST, |mean d| < delta); Student t from 5 pairs with a spread, else the exact paired permutation
test. Holm's adjustment runs over every p-value of the study's hypotheses. Cell outcome:
**equivalent**, else **better**/**worse** (the ``better`` variant's side, by the metric's
direction from :data:`resattn.workflow.stability.HIGHER_IS_BETTER`), else **inconclusive**. A hypothesis
takes its cells' outcome when they agree, else **invalid** (any invalid cell), **incomplete** (any
incomplete cell) or **inconclusive** (mixed).

Nothing true by construction: a hypothesis on ``min_skip_gain`` whose ``better`` variant's skip
gain is bounded below by its own options (a near-identity skip with ``skip_gamma_max`` b < 1 keeps
the gain >= 1 - b; an unmodulated skip keeps it at 1) is refused: its outcome measures the bound.

Everything is validated before the first run: an unknown key, factor, option, variant or metric,
or a missing claim, hypothesis, decision rule or floor raises ValueError naming the key.
"""
from __future__ import annotations

import hashlib
import statistics
import itertools
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .compare import RunSpec, run_specs
from .stability import ACCURACY_METRICS, HIGHER_IS_BETTER, higher_is_better
from .train import TrainConfig

__all__ = ["Study", "load_study", "run_study", "run_studies", "evaluate_study", "METRICS", "BUDGETS",
           "DEFAULT_DELTA", "DEFAULT_TRAINED"]

BUDGETS = ("smoke", "cpu", "full")
#: The metrics a hypothesis may name: the one direction table (:data:`resattn.workflow.stability.HIGHER_IS_BETTER`).
METRICS = HIGHER_IS_BETTER
TESTS = ("paired",)
#: Default smallest effect of interest of an accuracy hypothesis (percentage points).
DEFAULT_DELTA = 0.5
#: Default per-run "trained" check: final accuracy >= chance + 20 points, training loss fell 10 %.
DEFAULT_TRAINED = {"above_chance": 20.0, "loss_fall": 0.1}
#: Classes of the built-in data sets (chance accuracy is 100 / classes).
_CLASSES = {"fashion-mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
_TOP_KEYS = {"name", "claim", "hypothesis", "decision_rule", "variants", "factors", "fixed",
             "dataset", "budgets", "changes", "notes", "validity"}
_BUDGET_KEYS = {"train_subset", "test_subset", "epochs", "seeds", "batch_size", "factors", "fixed"}
_NOT_OPTIONS = {"model_kwargs", "seed"}  # seeds come from the budget


def _model_option_names() -> set[str]:
    from ..layers.blocks import ATTENTION_OPTIONS
    from ..models.resnet import RESNET_OPTIONS
    return set(RESNET_OPTIONS) | set(ATTENTION_OPTIONS)


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
    delta: Optional[float] = None  # smallest effect of interest; None: no equivalence test

    def text(self) -> str:
        where = f" where {', '.join(f'{k}={v}' for k, v in self.where.items())}" if self.where else ""
        direction = "higher" if higher_is_better(self.metric) else "lower"
        eq = f"; equivalent within ±{self.delta:g}" if self.delta is not None else ""
        return (f"`{self.better}` vs `{self.worse}` on `{self.metric}` ({direction} is better"
                f"{eq}){where}")


@dataclass
class Floor:
    """A validity floor: ``variant``'s mean final accuracy in each cell of ``where`` >= ``min``."""

    variant: str
    min: float
    where: dict[str, str] = field(default_factory=dict)


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
    floors: dict[str, list[Floor]] = field(default_factory=dict)  # budget -> floors
    trained: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TRAINED))

    def rule_text(self) -> str:
        a = 1 - self.confidence
        return (f"In each cell, the seed-paired differences (better − worse): a two-sided test of "
                f"no difference and, where the hypothesis states a smallest effect δ, two one-sided "
                f"tests of equivalence (|Δ| < δ); Student t from 5 pairs with a spread, else the "
                f"exact paired permutation test. Holm's adjustment over every p-value of every "
                f"cell of this study's hypotheses (family-wise error ≤ α = {a:.2g}). Outcome: equivalent, else "
                f"better/worse, else inconclusive; a lost pair makes a cell incomplete, a missed "
                f"floor invalid.")

    def trained_text(self) -> str:
        return (f"a run is trained when it finished with final accuracy ≥ chance + "
                f"{self.trained['above_chance']:g} points and its training loss fell by ≥ "
                f"{100 * self.trained['loss_fall']:g}% from the first logged step")

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


_CHECKED_MODELS: "OrderedDict[str, Optional[str]]" = OrderedDict()
_CHECKED_MODELS_MAX = 256


def _check_model(name: str, model_kw: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory) so that a bad create_model option
    (``pattern: quad``, ``res_attn: foo``, ``skip_gamma_max: big``) is refused before any run.
    The answers are cached by (name, options), the last ``_CHECKED_MODELS_MAX`` of them (a grid
    repeats the same few models; a long-lived process does not grow the cache without bound)."""
    from ..models import create_model, is_model
    if not is_model(name):
        return  # TrainConfig.validate names the unregistered model
    key = repr((name, sorted(model_kw.items(), key=lambda kv: kv[0])))
    if key in _CHECKED_MODELS:
        _CHECKED_MODELS.move_to_end(key)
    else:
        import warnings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                create_model(name, **{**model_kw, "device": "meta"})
            _CHECKED_MODELS[key] = None
        except (TypeError, ValueError) as e:
            _CHECKED_MODELS[key] = str(e)
        while len(_CHECKED_MODELS) > _CHECKED_MODELS_MAX:
            _CHECKED_MODELS.popitem(last=False)
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


def _delta(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}={value!r} must be a number > 0 (the smallest effect of interest, "
                         "in the metric's units)")
    return float(value)


def skip_gain_floor(options: dict[str, Any]) -> Optional[float]:
    """The lowest skip gain a variant's own options allow, whatever training does: 1.0 for a skip
    no gate touches (patterns none, branch, pre; dual without skip attention), 1 - b for a dual
    near-identity skip with ``skip_gamma_max`` b < 1; None when nothing bounds it (a gated skip,
    pattern ``post``, an unbounded gamma)."""
    from ..layers.blocks import AttentionConfig
    from ..layers.blocks import ATTENTION_OPTIONS
    kw = {k: (None if k in _ATTN_KEYS and v == "none" else v)
          for k, v in options.items() if k in ATTENTION_OPTIONS}
    cfg = AttentionConfig(**kw)
    if cfg.pattern in ("none", "branch", "pre") or (cfg.pattern == "dual" and cfg.skip_attn is None):
        return 1.0
    if (cfg.pattern == "dual" and cfg.skip_modulation == "near_identity"
            and cfg.skip_gamma_max is not None and cfg.skip_gamma_max < 1):
        return 1.0 - cfg.skip_gamma_max
    return None


def by_construction(h: Hypothesis, better_options: dict[str, Any]) -> Optional[str]:
    """Why ``h``'s outcome is guaranteed by the ``better`` variant's own options, or None."""
    if h.metric != "min_skip_gain":
        return None
    floor = skip_gain_floor(better_options)
    if floor is None:
        return None
    return (f"`{h.better}` keeps min_skip_gain >= {floor:g} by its options (its skip gain lies in "
            f"[{floor:g}, {2 - floor:g}] whatever training does)")


def _validity(spec: Any, budgets: dict[str, Any], variants: dict[str, Any],
              factors: dict[str, dict[str, Any]], path: str) -> tuple[dict[str, list[Floor]], dict[str, float]]:
    """``validity`` -> (budget -> floors, trained-check settings); every budget but smoke needs a floor."""
    spec = spec or {}
    if not isinstance(spec, dict) or set(spec) - {"floors", "trained"}:
        raise ValueError(f"{path}: validity must be a mapping with floors (budget -> variant -> "
                         "lowest mean final_acc) and optionally trained (above_chance, loss_fall)")
    trained = dict(DEFAULT_TRAINED)
    for k, v in (spec.get("trained") or {}).items():
        if k not in DEFAULT_TRAINED:
            raise ValueError(f"{path}: validity.trained.{k}: unknown key; allowed: "
                             f"{', '.join(DEFAULT_TRAINED)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k == "loss_fall" and v >= 1):
            raise ValueError(f"{path}: validity.trained.{k}={v!r} must be a number >= 0"
                             + (" and < 1 (a fraction)" if k == "loss_fall" else ""))
        trained[k] = float(v)
    floors: dict[str, list[Floor]] = {}
    raw = spec.get("floors") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: validity.floors must map budget -> variant -> floor")
    for b, per_variant in raw.items():
        where = f"{path}: validity.floors.{b}"
        if b not in budgets:
            raise ValueError(f"{where}: {b!r} is not a budget of this study; budgets: {', '.join(budgets)}")
        if not isinstance(per_variant, dict) or not per_variant:
            raise ValueError(f"{where}: expected a mapping variant -> floor (e.g. {{plain: 88.0}})")
        out = []
        for v, fl in per_variant.items():
            if v not in variants:
                raise ValueError(f"{where}.{v}: not a variant; variants: {', '.join(variants)}")
            for i, f in enumerate(fl if isinstance(fl, list) else [fl]):
                f = {"min": f} if not isinstance(f, dict) else f
                if set(f) - {"min", "where"} or isinstance(f.get("min"), bool) or not isinstance(f.get("min"), (int, float)):
                    raise ValueError(f"{where}.{v}: a floor is a number (%) or {{min: N, where: {{factor: level}}}}")
                cond = {str(k): str(x) for k, x in (f.get("where") or {}).items()}
                for k, x in cond.items():
                    if k not in factors or x not in factors[k]:
                        raise ValueError(f"{where}.{v}.where.{k}={x!r}: not a factor level; factors: "
                                         + ("; ".join(f"{ff}: {', '.join(lv)}" for ff, lv in factors.items()) or "none"))
                out.append(Floor(v, float(f["min"]), cond))
        floors[b] = out
    missing = [b for b in budgets if b != "smoke" and b not in floors]
    if missing:
        raise ValueError(f"{path}: validity.floors has no floor for budget {missing[0]!r}; a study "
                         "states before it runs the accuracy its baseline must reach at each budget "
                         "but smoke (e.g. validity: {floors: {cpu: {plain: 88.0}}})")
    return floors, trained


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
    path = str(path)
    text, data = _read_study_file(path)
    claim = str(_require(data, "claim", path)).strip()
    rule = _require(data, "decision_rule", path)
    test, confidence, rule_delta = _decision_rule(rule, path)
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
    hypotheses = [_hypothesis(h, f"{path}: hypothesis" + (f"[{i}]" if len(hyps) > 1 else ""),
                              variants, factors, fixed, rule_delta) for i, h in enumerate(hyps)]
    budgets = _budgets(_require(data, "budgets", path), path)
    floors, trained = _validity(data.get("validity"), budgets, variants, factors, path)
    study = Study(path=path, name=str(data.get("name") or Path(path).stem), claim=claim,
                  hypotheses=hypotheses, test=test, confidence=confidence,
                  variants=variants, factors=factors, fixed=fixed,
                  dataset=str(data.get("dataset", "fashion-mnist")),
                  budgets={k: dict(v or {}) for k, v in budgets.items()},
                  changes=list(data.get("changes") or []), text=text, floors=floors,
                  trained=trained)
    for b in study.budgets:
        study.specs(b)  # every run's options valid at every budget, before anything runs
    return study


def _read_study_file(path: str) -> tuple[str, dict[str, Any]]:
    """The file's text and its mapping, with only the known top-level keys."""
    import yaml
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
    return text, data


def _decision_rule(rule: Any, path: str) -> tuple[str, float, float]:
    """``decision_rule`` as (test, confidence, accuracy delta)."""
    if not isinstance(rule, dict):
        raise ValueError(f"{path}: decision_rule must be a mapping with 'test' (one of {', '.join(TESTS)})")
    if rule.get("test") not in TESTS:
        raise ValueError(f"{path}: decision_rule.test={rule.get('test')!r} is not allowed; allowed: {', '.join(TESTS)}")
    bad = set(rule) - {"test", "confidence", "delta"}
    if bad:
        raise ValueError(f"{path}: decision_rule.{sorted(bad)[0]}: unknown key; allowed: test, "
                         "confidence, delta")
    confidence = float(rule.get("confidence", 0.95))
    if not 0 < confidence < 1:
        raise ValueError(f"{path}: decision_rule.confidence={confidence!r} must be in (0, 1)")
    return rule["test"], confidence, _delta(rule.get("delta", DEFAULT_DELTA), f"{path}: decision_rule.delta")


def _hypothesis(h: Any, where: str, variants: dict[str, dict[str, Any]],
                factors: dict[str, dict[str, dict[str, Any]]], fixed: dict[str, Any],
                rule_delta: float) -> Hypothesis:
    """One ``hypothesis`` entry: two different variants, a known metric, factor levels that
    exist, and not true by construction."""
    if not isinstance(h, dict):
        raise ValueError(f"{where}: expected a mapping with better, worse, metric")
    bad = set(h) - {"better", "worse", "metric", "where", "delta"}
    if bad:
        raise ValueError(f"{where}.{sorted(bad)[0]}: unknown key; allowed: better, worse, "
                         "metric, where, delta")
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
    delta = (_delta(h["delta"], f"{where}.delta") if "delta" in h else
             rule_delta if h["metric"] in ACCURACY_METRICS else None)
    hyp = Hypothesis(h["better"], h["worse"], h["metric"], cond, delta)
    reason = by_construction(hyp, {**fixed, **variants[hyp.better]})
    if reason:
        raise ValueError(f"{where}: true by construction: {reason}; a verdict on it would "
                         "measure the bound, not training. Test accuracy, training loss, loss "
                         "spikes or divergence instead")
    return hyp


def _budgets(budgets: Any, path: str) -> dict[str, Any]:
    """``budgets``: known budget names with known keys."""
    if not isinstance(budgets, dict):
        raise ValueError(f"{path}: budgets must be a mapping of {', '.join(BUDGETS)} -> settings")
    for b, settings in budgets.items():
        if b not in BUDGETS:
            raise ValueError(f"{path}: budgets.{b}: unknown budget; allowed: {', '.join(BUDGETS)}")
        bad = set(settings or {}) - _BUDGET_KEYS
        if bad:
            raise ValueError(f"{path}: budgets.{b}.{sorted(bad)[0]}: unknown key; allowed: "
                             f"{', '.join(sorted(_BUDGET_KEYS))}")
    return budgets


# ----------------------------------------------------------------------------- cost

#: The cost model of :func:`estimate_cpu_hours`: plain cifar_resnet20, 2 epochs of the full
#: Fashion-MNIST training set (120,000 images), bf16 autocast, 2 CPU cores: 90 s (measured: 86 s).
BASE_RUN_S, BASE_IMAGES = 90.0, 120_000
_TRAIN_SIZES = {"fashion-mnist": 60_000, "digits": 1_437, "cifar10": 50_000, "cifar100": 50_000}


def estimate_cpu_hours(specs: list[Any]) -> float:
    """A rough CPU-hour estimate of a list of runs on 2 cores (distinct runs only): the base run
    scaled by images seen, depth (layers / 20), attention (x 1.5 unless pattern none), batch
    (x sqrt(128 / batch) below 128) and precision (x 1.5 without bf16). Guesses beyond the base
    run, stated as such; the reports carry measured times."""
    import re

    from .cache import run_key
    total, seen = 0.0, set()
    for spec in specs:
        c = spec.config
        key = run_key(c)
        if key in seen:
            continue
        seen.add(key)
        m = re.search(r"resnet(\d+)", c.model)
        depth = int(m.group(1)) / 20 if m else 1.0
        n = c.train_subset or _TRAIN_SIZES.get(c.dataset, 60_000)
        attn = 1.0 if c.model_kwargs.get("pattern", "none") == "none" else 1.5
        batch = max(1.0, (128 / c.batch_size) ** 0.5)
        prec = 1.0 if c.precision != "fp32" else 1.5
        total += BASE_RUN_S * n * c.epochs / BASE_IMAGES * depth * attn * batch * prec
    return total / 3600


# ----------------------------------------------------------------------------- verdicts

def chance_accuracy(dataset: str) -> float:
    """Chance accuracy (%) of a built-in data set; 0 where the class count is not known here."""
    n = _CLASSES.get(dataset)
    return 100.0 / n if n else 0.0


def trained_check(row: dict[str, Any], chance: float, trained: dict[str, float]) -> Optional[str]:
    """Why a run did not train (None when it did, or when it did not run to an end: a failed or
    missing run is counted as such, not as untrained); see the module docstring."""
    if row["status"] in ("failed", "missing"):
        return None
    if row["status"] != "finished":
        return row["status"]
    acc = row.get("final_acc")
    if acc is None or acc < chance + trained["above_chance"]:
        return f"final accuracy {acc if acc is None else round(acc, 2)} < chance {chance:g} + {trained['above_chance']:g}"
    first, last = row.get("initial_train_loss"), row.get("final_train_loss")
    if first is None or last is None or not last <= (1 - trained["loss_fall"]) * first:
        return f"training loss did not fall by {100 * trained['loss_fall']:g}% ({first} -> {last})"
    return None


def metric_value(row: dict[str, Any], metric: str, chance: float) -> Optional[float]:
    """A run's value of ``metric`` as the decision rule counts it: None for a failed or missing
    run (a lost pair); a diverged run scores ``chance`` on accuracies and 1 on ``diverged``."""
    from .sinks import is_finite_number
    if row["status"] not in ("finished", "diverged"):
        return None
    if metric == "diverged":
        return 1.0 if row["status"] == "diverged" else 0.0
    if metric in ACCURACY_METRICS and row["status"] == "diverged":
        return chance
    v = row.get(metric)
    return float(v) if is_finite_number(v) and not isinstance(v, bool) else None


def _cell_key(cell: dict[str, Any], factors: list[str]) -> tuple:
    return tuple(str(cell.get(f)) for f in factors)


@dataclass
class _Grid:
    """A study's finished rows, indexed for the checks: by (variant, cell, seed)."""

    by: dict[tuple, dict[str, Any]]
    cells: list[tuple]
    factors: list[str]
    seeds: list[int]
    chance: float

    def cells_where(self, where: dict[str, Any]) -> list[tuple[tuple, dict[str, Any]]]:
        """(cell key, cell as a dict) of the cells that match ``where``."""
        out = []
        for c in self.cells:
            cell = dict(zip(self.factors, c))
            if all(cell.get(k) == v for k, v in where.items()):
                out.append((c, cell))
        return out

    def value(self, variant: str, c: tuple, seed: int, metric: str) -> Optional[float]:
        row = self.by.get((variant, c, seed))
        return metric_value(row, metric, self.chance) if row else None


def evaluate_study(study: Study, budget: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Validity and verdicts of a study from its rows (one per run; see
    :func:`resattn.workflow.compare.run_specs`). Rows gain ``untrained`` (the reason, or None).

    Returns:
        ``{"validity": {...}, "hypotheses": [...]}`` with every cell's n, Δ, CI, p-values
        (raw and Holm-adjusted), method and outcome, and each hypothesis's verdict.
    """
    chance = chance_accuracy(study.dataset)
    factors = list(rows[0]["cell"]) if rows else []
    for r in rows:
        r["untrained"] = trained_check(r, chance, study.trained)
    grid = _Grid(by={(r["variant"], _cell_key(r["cell"], factors), r["seed"]): r for r in rows},
                 cells=sorted({_cell_key(r["cell"], factors) for r in rows}), factors=factors,
                 seeds=study.budgets[budget].get("seeds", [0, 1, 2]), chance=chance)
    validity, invalid_cells = _check_floors(study, budget, rows, grid)
    return {"validity": validity, "hypotheses": _verdicts(study, grid, invalid_cells)}


def _check_floors(study: Study, budget: str, rows: list[dict[str, Any]], grid: _Grid
                  ) -> tuple[dict[str, Any], dict[tuple, list[str]]]:
    """The validity record and the cells whose baseline missed its floor (with the reasons)."""
    floors, invalid_cells, pending = [], {}, []
    for f in study.floors.get(budget, []):
        for c, cell in grid.cells_where(f.where):
            vals = [v for s in grid.seeds
                    if (v := grid.value(f.variant, c, s, "final_acc")) is not None]
            mean = statistics.fmean(vals) if vals else None
            ok = mean is not None and mean >= f.min
            label = ", ".join(f"{k}={v}" for k, v in cell.items()) or "(all)"
            floors.append({"variant": f.variant, "cell": cell, "min": f.min, "mean": mean,
                           "n": len(vals), "met": ok if vals else None})
            if not vals:  # no baseline run has ended here yet: the cell is incomplete, not invalid
                pending.append(f"`{f.variant}` at {label}: no finished run yet")
            elif not ok:
                invalid_cells.setdefault(c, []).append(
                    f"`{f.variant}` at {label}: mean final_acc {mean:.2f}% < floor {f.min:g}% "
                    f"(n={len(vals)})")
    untrained = [{"run_id": r["run_id"], "variant": r["variant"], "cell": r["cell"],
                  "reason": r["untrained"]} for r in rows if r["untrained"]]
    reasons = [x for v in invalid_cells.values() for x in v]
    missing = sum(1 for r in rows if r["status"] == "missing")
    validity = {"valid": not reasons, "reasons": reasons, "floors": floors, "untrained": untrained,
                "runs": len(rows), "missing": missing, "pending": pending,
                "trained_rule": study.trained_text(), "chance": grid.chance}
    return validity, invalid_cells


def _hypothesis_cells(study: Study, h: Hypothesis, grid: _Grid, invalid_cells: dict[tuple, Any]
                      ) -> tuple[list[dict[str, Any]], list[Any]]:
    """One hypothesis's cells (seed-paired tests; outcome preset to invalid / incomplete where
    the cell cannot decide) and their tests (None where preset)."""
    from .stats import paired_tests
    cells, tests = [], []
    for c, cell in grid.cells_where(h.where):
        diffs, lost = [], []
        for s in grid.seeds:
            va, vb = grid.value(h.better, c, s, h.metric), grid.value(h.worse, c, s, h.metric)
            if va is None or vb is None:
                lost.append(s)
            else:
                diffs.append(va - vb)
        t = paired_tests(diffs, delta=h.delta, confidence=study.confidence)
        outcome = "invalid" if c in invalid_cells else "incomplete" if lost else None
        cells.append({"cell": cell, "n": t.n, "diff": t.diff, "std": t.std, "ci_low": t.ci_low,
                      "ci_high": t.ci_high, "method": t.method, "p_diff": t.p_diff,
                      "p_equiv": t.p_equiv, "lost_seeds": lost, "outcome": outcome,
                      "untrained": sum(1 for v in (h.better, h.worse) for s in grid.seeds
                                       if (v, c, s) in grid.by and grid.by[(v, c, s)]["untrained"])})
        tests.append(None if outcome else t)
    return cells, tests


def _verdicts(study: Study, grid: _Grid, invalid_cells: dict[tuple, Any]) -> list[dict[str, Any]]:
    """Every hypothesis's cells decided together (Holm across the study) and its verdict."""
    from .stats import decide
    hyp_cells, tests, directions = [], [], []
    for h in study.hypotheses:
        cells, t = _hypothesis_cells(study, h, grid, invalid_cells)
        hyp_cells.append(cells)
        tests += t
        directions += [higher_is_better(h.metric)] * len(t)
    decided = iter(decide(tests, higher_is_better=directions, alpha=1 - study.confidence))
    results = []
    for h, hc in zip(study.hypotheses, hyp_cells):
        for c in hc:
            d = next(decided)
            c["p_diff_adj"] = d and d["p_diff_adj"]
            c["p_equiv_adj"] = d and d["p_equiv_adj"]
            if d is not None:
                c["outcome"] = d["outcome"]
        outs = {c["outcome"] for c in hc}
        verdict = (outs.pop() if len(outs) == 1 else "invalid" if "invalid" in outs
                   else "incomplete" if "incomplete" in outs else "inconclusive")
        results.append({"hypothesis": h.text(), "better": h.better, "worse": h.worse,
                        "metric": h.metric, "where": h.where, "delta": h.delta,
                        "higher_is_better": higher_is_better(h.metric), "cells": hc,
                        "verdict": verdict if hc else "incomplete"})
    return results


def group_table(study: Study, rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per (cell, variant): runs, finished, diverged, untrained, failed, and mean ± std of
    ``metric`` as the decision rule counts it."""
    from .stats import summarise_values
    chance = chance_accuracy(study.dataset)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((tuple(r["cell"].items()), r["variant"]), []).append(r)
    out = []
    for (cell, variant), rs in groups.items():
        s = summarise_values([v for v in (metric_value(r, metric, chance) for r in rs) if v is not None])
        out.append({"cell": dict(cell), "variant": variant, "metric": metric, "runs": len(rs),
                    "finished": sum(r["status"] == "finished" for r in rs),
                    "diverged": sum(r["status"] == "diverged" for r in rs),
                    "untrained": sum(bool(r.get("untrained")) for r in rs),
                    "failed": sum(r["status"] in ("failed", "missing") for r in rs),
                    "n": s.n, "mean": s.mean, "std": s.std})
    return out


def _run_folder(study: Study, budget: str, out: Path, extra: Optional[dict[str, Any]]):
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(study.text)
    return study.specs(budget, extra=extra)


def run_study(study: Study, budget: str, out: str | Path, *, command: str, progress: bool = True,
              log=print, extra: Optional[dict[str, Any]] = None, executor=None,
              resume: bool = True, cache_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Run one study's grid at ``budget`` and write its report; see :func:`run_studies`."""
    return run_studies([study], budget, {study.name: out}, command=command, progress=progress,
                       log=log, extra=extra, executor=executor, resume=resume,
                       cache_dir=cache_dir)[0]


def run_studies(studies: list[Study], budget: str, outs: dict[str, str | Path], *, command: str,
                progress: bool = True, log=print, extra: Optional[dict[str, Any]] = None,
                executor=None, resume: bool = True, cache_dir: Optional[str | Path] = None
                ) -> list[dict[str, Any]]:
    """Run several studies' grids at ``budget`` as ONE list of runs on ``executor`` (default
    sequential; :mod:`resattn.workflow.executors`), each distinct run trained once in the run cache
    ``cache_dir`` (default ``<parent of the first output folder>/cache``; :mod:`resattn.workflow.cache`),
    then write each study's ``out/report.md``, ``study.json``, ``results.csv``, ``summary.csv``,
    plots and a copy of the study file. ``outs``: study name -> output folder. ``extra``:
    execution options (device, tensorboard, compile, num_workers). ``resume=False``: unfinished
    runs start over instead of continuing from their checkpoints.

    Raises:
        ValueError: ``budget`` not in a study; runs in an output folder made with other options.
    """
    from .cache import default_cache_dir
    for st in studies:
        if budget not in st.budgets:
            raise ValueError(f"{st.path}: budget={budget!r} is not defined; this study has "
                             f"{', '.join(st.budgets)}")
    folders = {st.name: Path(outs[st.name]) for st in studies}
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(next(iter(folders.values())))
    all_specs = {st.name: _run_folder(st, budget, folders[st.name], extra) for st in studies}
    # one list of runs: each study's runs under its own folder, shared runs trained once
    import copy
    flat = []
    for st in studies:
        for spec in all_specs[st.name]:
            sp = copy.copy(spec)
            sp.run_id = f"{st.name}/{spec.run_id}"
            flat.append(sp)
    t0 = time.perf_counter()
    from .executors import ReportOnlyExecutor
    report_only = isinstance(executor, ReportOnlyExecutor)  # the wall time is no training time
    # each run's copy goes straight into its own study's folder (the cache holds the training)
    run_dirs = {sp.run_id: folders[sp.run_id.split("/", 1)[0]] / "runs" / sp.run_id.split("/", 1)[1]
                for sp in flat}
    rows_all = run_specs(flat, None, executor=executor, progress=progress, log=log,
                         resume=resume, cache_dir=cache_dir, run_dirs=run_dirs) if flat else []
    wall = time.perf_counter() - t0
    out = []
    by_id = {r["run_id"]: r for r in rows_all}
    for st in studies:
        rows = []
        for spec in all_specs[st.name]:
            r = dict(by_id[f"{st.name}/{spec.run_id}"])
            r["run_id"] = spec.run_id
            rows.append(r)
        ev = evaluate_study(st, budget, rows)
        out.append(_write_study_report(st, budget, folders[st.name], rows, ev, command, wall,
                                       cache_dir, report_only=report_only))
    return out


def _fmt_p(p: Optional[float]) -> str:
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def cell_line(c: dict[str, Any]) -> str:
    """``+0.53 [+0.12, +0.94]``; ``+0.00 (zero spread)``; ``+0.53 (n=1)``; ``-``."""
    if c.get("diff") is None:
        return "-"
    if c.get("n", 0) < 2:
        return f"{c['diff']:+.2f} (n=1)"
    if c.get("ci_low") is None:
        return f"{c['diff']:+.2f} (zero spread)"
    return f"{c['diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def validity_word(validity: Optional[dict[str, Any]]) -> str:
    """``valid``, ``invalid`` (a floor missed), ``incomplete`` (a floor's runs not ended yet) or
    ``-`` (made before validity gates)."""
    if not validity or "valid" not in validity:
        return "-"
    if not validity["valid"]:
        return "invalid"
    return "incomplete" if validity.get("pending") or validity.get("missing") else "valid"


def validity_line(validity: dict[str, Any]) -> str:
    """One line: valid, invalid (why) or incomplete (runs missing), and the untrained runs."""
    un, missing = validity["untrained"], validity.get("missing", 0)
    ended = validity["runs"] - missing
    tail = (f"; {len(un)} of {ended} ended runs did not train (counted, listed)" if un
            else f"; all {ended} ended runs trained")
    if missing:
        tail += f"; {missing} of {validity['runs']} runs not run yet"
    if not validity["valid"]:
        return f"**invalid**: {'; '.join(validity['reasons'])}{tail}"
    met = [f for f in validity["floors"] if f["met"]]
    text = ", ".join(f"{f['variant']} {f['mean']:.2f}% ≥ {f['min']:g}%" for f in met[:4])
    more = "…" if len(met) > 4 else ""
    if validity.get("pending") or missing:
        unknown = f"; not yet known: {'; '.join(validity['pending'])}" if validity.get("pending") else ""
        return f"**incomplete** (floors met so far: {text or 'none'}{more}{unknown}){tail}"
    return f"**valid** (floors met: {text or 'none at this budget'}{more}){tail}"


def _write_study_report(study: Study, budget: str, out: Path, rows: list[dict[str, Any]],
                        ev: dict[str, Any], command: str, wall: float, cache_dir: Path,
                        report_only: bool = False) -> dict[str, Any]:
    """results.csv, summary.csv, the plots, report.md and study.json of one study
    (``report_only``: written from the cache alone, so the wall time is no training time)."""
    from .report import CSV_FIELDS, write_csv

    results, validity = ev["hypotheses"], ev["validity"]
    write_csv(out / "results.csv", rows, CSV_FIELDS + ["untrained", "cache_key"])
    tables = {m: group_table(study, rows, m) for m in dict.fromkeys(["final_acc"] + [r["metric"] for r in results])}
    write_csv(out / "summary.csv", [g for t in tables.values() for g in t],
              ["metric", "cell", "variant", "runs", "finished", "diverged", "untrained", "failed",
               "n", "mean", "std"])
    plots = _study_plots(study, out, rows, results)
    md = _study_markdown(study, budget, rows, results, validity, tables)
    md += _made_and_plots(command, wall, rows, cache_dir, plots)
    (out / "report.md").write_text("\n".join(md))
    doc = _study_doc(study, budget, rows, results, validity, tables, command, wall, plots,
                     report_only)
    (out / "study.json").write_text(json.dumps(doc, indent=2, default=str))
    return {"rows": rows, "results": results, "validity": validity, "report": out / "report.md",
            "study_json": out / "study.json", "wall_time_s": wall}


def _study_plots(study: Study, out: Path, rows: list[dict[str, Any]],
                 results: list[dict[str, Any]]) -> dict[str, str]:
    """The compare report's plots (accuracy.png shows accuracy, whatever the hypotheses measure)
    and per hypothesis the paired delta per cell its verdict rests on: file names by key."""
    from .report import paired_delta_plot, summarise, write_plots
    factors = list(rows[0]["cell"]) if rows else []
    first = summarise(rows, baseline=study.hypotheses[0].worse, metric="final_acc",
                      cell_keys=tuple(factors), confidence=study.confidence)
    plots = {k: p.name for k, p in write_plots(out, rows, first).items()}
    for i, r in enumerate(results):
        delta = r.get("delta")
        sign = 1 if r.get("higher_is_better", True) else -1
        p = paired_delta_plot(out / f"hypothesis{i + 1}.png", r["cells"], metric=r["metric"],
                              better=r["better"], worse=r["worse"],
                              thresholds=(0.0,) + ((delta, -delta) if delta else ()),
                              confidence=study.confidence,
                              title=(f"{r['better']} vs {r['worse']}: seed-paired Δ {r['metric']} "
                                     f"per cell, {int(round(100 * study.confidence))}% CI; dashed: 0"
                                     + (f" and ±δ = {delta:g}" if delta else "")
                                     + ("" if sign > 0 else " (lower is better)")))
        if p is not None:
            plots[f"hypothesis{i + 1}"] = p.name
    return plots


def _study_markdown(study: Study, budget: str, rows: list[dict[str, Any]],
                    results: list[dict[str, Any]], validity: dict[str, Any],
                    tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    """report.md up to "How this was made": claim, validity, hypotheses, rule, verdicts per
    cell, the groups of every metric, the runs that did not train."""
    b = study.budgets[budget]
    md = [f"# Study: {study.name} (budget `{budget}`)", "",
          f"**Claim.** {study.claim}", "",
          f"**Validity.** {validity_line(validity)}. Rule: {study.trained_text()}; each floor "
          f"is the lowest mean final accuracy its variant must reach in a cell.", "",
          "**Hypotheses.**", ""] + [f"{i + 1}. {h.text()}" for i, h in enumerate(study.hypotheses)] + [
          "", f"**Decision rule** (`{study.test}`). {study.rule_text()}", "",
          f"Data: {study.dataset}; budget `{budget}`: " +
          ", ".join(f"{k}={v}" for k, v in b.items() if k != "factors") + ".", ""]
    if budget == "smoke":
        md += ["> **smoke budget**: a test of the machinery; its verdicts are not evidence.", ""]
    if study.changes:
        md += ["**Changes recorded after registration:**", ""] + [f"- {c}" for c in study.changes] + [""]
    md += ["## Verdicts", ""]
    for i, r in enumerate(results):
        md += [f"### Hypothesis {i + 1}: **{r['verdict']}**", "", r["hypothesis"], "",
               "| cell | n pairs | Δ (better − worse) [CI] | test | p (Holm) | p equiv. (Holm) | untrained | outcome |",
               "|---|---|---|---|---|---|---|---|"]
        for c in r["cells"]:
            cell = ", ".join(f"{k}={v}" for k, v in c["cell"].items()) or "(all)"
            lost = f" (lost seeds {c['lost_seeds']})" if c["lost_seeds"] else ""
            md.append(f"| {cell} | {c['n']}{lost} | {cell_line(c)} | {c['method']} | "
                      f"{_fmt_p(c['p_diff_adj'])} | {_fmt_p(c['p_equiv_adj'])} | {c['untrained']} | "
                      f"{c['outcome']} |")
        md.append("")
    for m, t in tables.items():
        md += [f"### `{m}` per group", "", "| cell | variant | runs | diverged | untrained | failed | mean ± std (n) |",
               "|---|---|---|---|---|---|---|"]
        for g in t:
            cell = ", ".join(f"{k}={v}" for k, v in g["cell"].items()) or "(all)"
            ms = "-" if g["mean"] is None else (f"{g['mean']:.3f} ± {g['std']:.3f} (n={g['n']})"
                                                if g["std"] is not None else f"{g['mean']:.3f} (n={g['n']})")
            md.append(f"| {cell} | {g['variant']} | {g['runs']} | {g['diverged']} | {g['untrained']} | "
                      f"{g['failed']} | {ms} |")
        md.append("")
    if validity["untrained"]:
        md += ["## Runs that did not train", ""] + [f"- `{u['run_id']}`: {u['reason']}"
                                                     for u in validity["untrained"]] + [""]
    return md


def _made_and_plots(command: str, wall: float, rows: list[dict[str, Any]], cache_dir: Path,
                    plots: dict[str, str]) -> list[str]:
    """The end of report.md, as the compare report has it: how it was made (command, machine,
    versions, run cache), the runs that did not finish, the plots."""
    from .report import machine_lines, unfinished_runs
    md = ["## How this was made", ""] + machine_lines(command, wall, rows)
    md += [f"- run cache: `{cache_dir}` (each run's `cache.json` names its key)", ""]
    md += unfinished_runs(rows)
    if plots:
        md += ["## Plots", ""] + [f"![{k}]({p})" for k, p in plots.items()] + [""]
    return md


def _study_doc(study: Study, budget: str, rows: list[dict[str, Any]], results: list[dict[str, Any]],
               validity: dict[str, Any], tables: dict[str, list[dict[str, Any]]], command: str,
               wall: float, plots: dict[str, str], report_only: bool) -> dict[str, Any]:
    """study.json: what the evidence page reads."""
    import torch

    from ..utils.machine import machine_description
    return {
        "name": study.name, "claim": study.claim, "budget": budget,
        "budget_settings": study.budgets[budget], "smoke": budget == "smoke",
        "rule": study.rule_text(), "test": study.test, "confidence": study.confidence,
        "study_file": study.path, "study_sha256": hashlib.sha256(study.text.encode()).hexdigest(),
        "changes": study.changes, "command": command, "wall_time_s": wall,
        "train_time_s": sum(r.get("train_time_s") or 0 for r in rows), "report_only": report_only,
        "runs": len(rows), "finished": sum(r["status"] == "finished" for r in rows),
        "diverged": sum(r["status"] == "diverged" for r in rows),
        "failed": sum(r["status"] in ("failed", "missing") for r in rows),
        "untrained": len(validity["untrained"]),
        "validity": validity, "validity_line": validity_line(validity),
        "precision": sorted({r.get("precision") or "-" for r in rows}) if rows else [],
        "machine": machine_description(),
        "run_machines": sorted({str(r.get("machine")) for r in rows if r.get("machine")}),
        "run_devices": sorted({str(r.get("device")) for r in rows if r.get("device")}),
        "torch": torch.__version__, "plots": plots,
        "hypotheses": [r | {"table": tables[r["metric"]]} for r in results],
    }
