"""The main job: train a grid of pattern variants on one data set and report which works best.

A grid is variants x attention types x learning rates x seeds. Variants are the patterns, plus
``dual-gate``, the dual pattern with the skip in ``gate`` modulation (the risky m(x) * x form):

    none       plain ResNet
    branch     pattern 1 (SE-ResNet's place), attn from --attn (default se)
    post       pattern 2, attn from --attn (default se)
    pre        pattern 3, attn from --attn (default se)
    dual       pattern 4, near-identity on both paths: skip --skip-attn (default eca), residual
               --attn (default cbam), gamma from 0, skip gamma bounded by 0.25
    dual-gate  pattern 4 with the skip in gate modulation

Every run has its own folder under ``out/runs/``; a run with a ``result.json`` is finished and
skipped when the same command runs again, a run with only a checkpoint resumes. A run that raises
is recorded as ``failed`` and the grid goes on. See :mod:`resattn.workflow.report` for what is written.
Where the runs execute (here, one after another, or as Ray tasks) is :mod:`resattn.workflow.executors`.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..layers.attention import ATTN_NAMES
from .data import DATASETS
from .executors import DataSpec, Executor, Job, SequentialExecutor
from .train import TrainConfig, _with_precision, config_changes, train

__all__ = ["VARIANTS", "CompareConfig", "RunSpec", "expand_grid", "run_compare", "run_specs"]

#: Variant label -> create_model options (attention added from the grid's attn axis).
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"pattern": "none"},
    "branch": {"pattern": "branch"},
    "post": {"pattern": "post"},
    "pre": {"pattern": "pre"},
    "dual": {"pattern": "dual"},
    "dual-gate": {"pattern": "dual", "skip_modulation": "gate"},
}
_PATTERN_NUMBERS = {"0": "none", "1": "branch", "2": "post", "3": "pre", "4": "dual"}
DEFAULT_ATTN = {"branch": "se", "post": "se", "pre": "se", "dual": "cbam", "dual-gate": "cbam"}

#: The default grid (``make demo``) gives seed-paired 95% CIs and finishes in under 10 minutes on
#: 2 CPU cores: all 6 variants x 3 seeds x 2 epochs on a class-balanced 8k training subset of the
#: large sets, tested on a class-balanced 2k test subset. ``--full``: the whole splits, 15 epochs.
QUICK_EPOCHS, QUICK_SUBSET, QUICK_TEST_SUBSET, QUICK_SEEDS = 2, 8000, 2000, (0, 1, 2)
FULL = {"quick": False, "epochs": 15}
_LARGE = ("fashion-mnist", "cifar10", "cifar100")


@dataclass
class CompareConfig:
    """A comparison grid and the training options shared by its runs.

    Raises (from :meth:`validate`):
        ValueError: unknown variant, attention type, data set, or bad numbers; the message names
            the option and the allowed values.
    """

    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    model: str = "cifar_resnet20"
    patterns: list[str] = field(default_factory=lambda: list(VARIANTS))
    attn: Optional[list[str]] = None
    skip_attn: str = "eca"
    seeds: list[int] = field(default_factory=lambda: list(QUICK_SEEDS))
    lrs: list[float] = field(default_factory=lambda: [0.1])
    epochs: int = QUICK_EPOCHS
    train_subset: Optional[int] = None
    quick: bool = True
    test_subset: Optional[int] = None
    batch_size: int = 128
    out: str = "runs/compare"
    baseline: Optional[str] = None
    train_options: dict[str, Any] = field(default_factory=dict)

    def to_command(self) -> str:
        """The ``resattn compare`` command line that makes this grid (non-default options)."""
        default = CompareConfig()
        flags = {"dataset": "--dataset", "data_dir": "--data-dir", "model": "--model",
                 "patterns": "--patterns", "attn": "--attn", "skip_attn": "--skip-attn",
                 "seeds": "--seeds", "lrs": "--lr", "epochs": "--epochs",
                 "train_subset": "--train-subset", "test_subset": "--test-subset",
                 "batch_size": "--batch-size", "out": "--out", "baseline": "--baseline"}
        parts = ["resattn", "compare"] + (["--full"] if not self.quick else [])
        for name, flag in flags.items():
            value = getattr(self, name)
            if value != getattr(default, name) and value is not None:
                parts += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        if self.download:
            parts.append("--download")
        for k, v in self.train_options.items():
            flag = k.replace("_", "-")
            if isinstance(v, bool):  # switches: --bf16, --deterministic, --no-augment, ...
                parts.append(f"--{flag}" if v else f"--no-{flag}")
            else:
                parts += [f"--{flag}", str(v)]
        return " ".join(shlex.quote(p) for p in parts)

    def effective_train_subset(self) -> Optional[int]:
        """``train_subset``, or the quick default (20k) for the large sets when it is None."""
        if self.train_subset is None and self.quick and self.dataset in _LARGE:
            return QUICK_SUBSET
        return self.train_subset

    def effective_baseline(self) -> str:
        """``baseline``, else ``none`` when the grid has it, else the grid's first variant."""
        if self.baseline is not None:
            return self.baseline
        return "none" if "none" in self.patterns else self.patterns[0]

    def effective_test_subset(self) -> Optional[int]:
        """``test_subset``, or the quick default (2k) for the large sets when it is None."""
        if self.test_subset is None and self.quick and self.dataset in _LARGE:
            return QUICK_TEST_SUBSET
        return self.test_subset

    def validate(self) -> "CompareConfig":
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not allowed; allowed: {', '.join(DATASETS)}")
        self.patterns = [_PATTERN_NUMBERS.get(str(p), str(p)) for p in self.patterns]
        bad = [p for p in self.patterns if p not in VARIANTS]
        if bad or not self.patterns:
            raise ValueError(f"patterns={bad or self.patterns!r} not allowed; allowed: "
                             f"{', '.join(VARIANTS)} (or 0-4)")
        for arg, a in [("attn", a) for a in (self.attn or [])] + [("skip_attn", self.skip_attn)]:
            if a not in ATTN_NAMES and a != "none":
                raise ValueError(f"{arg}={a!r} is not allowed; allowed: {', '.join(ATTN_NAMES)}, "
                                 "none (no attention on that path)")
        if self.baseline is not None and self.baseline not in self.patterns:
            raise ValueError(f"baseline={self.baseline!r} is not one of the variants of this grid "
                             f"({', '.join(self.patterns)})")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"lr={self.lrs!r}: each learning rate must be > 0")
        # a repeated value is the same run twice: it would count as two seeds in the statistics
        for arg, values in (("patterns", self.patterns), ("seeds", self.seeds), ("lr", self.lrs),
                            ("attn", self.attn or [])):
            repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
            if repeated:
                raise ValueError(f"{arg}={list(values)!r} repeats {', '.join(repeated)}; each value "
                                 "must appear once (a repeated run would be counted twice)")
        unknown = set(self.train_options) - {f.name for f in fields(TrainConfig)}
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}")
        expand_grid(self)  # validates every run's TrainConfig before anything trains
        return self


@dataclass
class RunSpec:
    """One run of the grid."""

    run_id: str
    variant: str
    attn: Optional[str]
    seed: int
    lr: float
    config: TrainConfig
    cell: dict[str, Any] = field(default_factory=dict)  # a study's factor values for this run


def _attn_or_none(name: Optional[str]) -> Optional[str]:
    """``'none'`` (no attention on that path, from the command line or YAML) as None."""
    return None if name == "none" else name


def _model_kwargs(variant: str, attn: Optional[str], skip_attn: str) -> dict[str, Any]:
    kw = dict(VARIANTS[variant])
    if variant.startswith("dual"):
        kw.update(skip_attn=_attn_or_none(skip_attn), res_attn=_attn_or_none(attn))
    elif attn is not None:
        kw["attn"] = _attn_or_none(attn)
    return kw


def expand_grid(cfg: CompareConfig) -> list[RunSpec]:
    """All runs of the grid, in order: variant, attention, learning rate, seed."""
    specs = []
    for variant in cfg.patterns:
        attns = [None] if variant == "none" else (cfg.attn or [DEFAULT_ATTN[variant]])
        for attn in attns:
            for lr in cfg.lrs:
                for seed in cfg.seeds:
                    opts = {**cfg.train_options}
                    tc = TrainConfig(model=cfg.model, model_kwargs=_model_kwargs(variant, attn, cfg.skip_attn),
                                     dataset=cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                                     train_subset=cfg.effective_train_subset(),
                                     test_subset=cfg.effective_test_subset(), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=lr, seed=seed,
                                     **opts).validate()
                    parts = [variant] + ([attn] if attn else []) + [f"lr{lr:g}", f"s{seed}"]
                    specs.append(RunSpec("-".join(parts), variant, attn, seed, lr, tc))
    return specs


def _mismatch(run_dir: Path, config: TrainConfig, resume: bool = True) -> Optional[str]:
    """What differs between ``config`` and the run already in ``run_dir`` (None when it agrees
    or there is none)."""
    saved = None
    if (run_dir / "result.json").exists():
        saved = json.loads((run_dir / "result.json").read_text()).get("config")
    elif resume and (run_dir / "checkpoint.pt").exists():
        from ..tools.weights import CheckpointError, read_checkpoint
        try:
            ckpt = read_checkpoint(run_dir / "checkpoint.pt")
        except CheckpointError:  # that run fails alone, saying why and how to go on
            return None
        saved = ckpt.get("config") if isinstance(ckpt, dict) else None
    if saved is None:
        return None
    changes = config_changes(saved, config)
    if not changes:
        return None
    return f"{run_dir.name} ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in sorted(changes.items()))})"


def run_compare(cfg: CompareConfig, *, command: Optional[str] = None, progress: bool = True,
                log=print, executor: Optional[Executor] = None, resume: bool = True,
                cache_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Run (or continue) the grid and write the report.

    ``executor``: where the runs execute (:mod:`resattn.workflow.executors`); default one after another
    in this process. The report is the same for every executor. ``resume=False``: runs without
    a ``result.json`` start over instead of continuing from their checkpoint (one that cannot be
    read, for example); finished runs are still reused. ``cache_dir``: train through the
    run cache (:mod:`resattn.workflow.cache`), sharing runs with studies and other grids that use it; each
    run folder then holds copies of the result and metrics, the checkpoint stays in the cache.

    Returns:
        ``{"rows": [...], "paths": {...}, "table": str, "wall_time_s": float}``.

    Raises:
        ValueError: bad grid; :class:`resattn.workflow.data.DataNotFoundError`: data missing (before any run).
    """
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = expand_grid(cfg)
    command = command or cfg.to_command()
    (out / "grid.json").write_text(json.dumps({"command": command, "config": asdict(cfg)},
                                              indent=2, default=str))
    t0 = time.perf_counter()
    rows = run_specs(specs, out / "runs", executor=executor, progress=progress, log=log,
                     resume=resume, cache_dir=cache_dir)
    wall = time.perf_counter() - t0
    from .report import write_report  # matplotlib is imported only when a report is written
    paths, table = write_report(out, rows, command=command, config=cfg, wall_time_s=wall)
    return {"rows": rows, "paths": paths, "table": table, "wall_time_s": wall}


def run_specs(specs: list[RunSpec], runs_dir: Optional[str | Path], *,
              executor: Optional[Executor] = None, progress: bool = True, log=print,
              resume: bool = True, cache_dir: Optional[str | Path] = None,
              run_dirs: Optional[dict[str, Path]] = None) -> list[dict[str, Any]]:
    """Execute a list of runs, each in ``runs_dir/<run_id>`` (or ``run_dirs[run_id]`` where
    ``run_dirs`` is given: a study grid puts each run in its own study's folder); the one runner
    of compare and study.

    The runs go to ``executor`` (default :class:`resattn.workflow.executors.SequentialExecutor`, one after
    another in this process; see :mod:`resattn.workflow.executors` for processes and Ray). A run with a
    ``result.json`` is finished and skipped; one with only a checkpoint resumes; one that raises
    is recorded as ``failed`` and the list goes on (``error``, ``log``: its traceback,
    ``defect``: an exception that is a bug in resattn). ``resume=False``: unfinished runs start
    over instead of continuing from their checkpoints.

    ``cache_dir``: the content-addressed run cache (:mod:`resattn.workflow.cache`): each run trains in
    ``cache_dir/<key>`` unless a run with its key has finished there already (trained once, by
    whichever grid needed it first; specs with one key in this list train once too), and its
    ``result.json`` and ``metrics.jsonl`` are copied into ``runs_dir/<run_id>``.

    Returns:
        One row per spec, in order: the spec's labels and cell, the result (:func:`_flat_result`),
        ``cache_key`` (None without a cache) and the stability metrics of
        :func:`resattn.workflow.stability.run_stability`.

    Raises:
        ValueError: ``runs_dir`` holds runs made with other options (before any run);
        :class:`resattn.workflow.data.DataNotFoundError`: data missing.
    """
    from .report import read_metrics
    from .stability import run_stability

    if run_dirs is None:
        if runs_dir is None:
            raise ValueError("run_specs needs runs_dir or run_dirs")
        run_dirs = {spec.run_id: Path(runs_dir) / spec.run_id for spec in specs}
    for folder in {Path(d).parent for d in run_dirs.values()}:
        folder.mkdir(parents=True, exist_ok=True)
    from .cache import cached_mismatch
    stale = [m for m in ((cached_mismatch(run_dirs[spec.run_id], spec.config)
                          if (run_dirs[spec.run_id] / "cache.json").is_file()
                          else _mismatch(run_dirs[spec.run_id], spec.config, resume))
                         for spec in specs) if m]
    if stale:
        where = sorted({str(Path(d).parent.parent) for d in run_dirs.values()})
        raise ValueError(f"{', '.join(where)} holds runs made with other options, which this grid "
                         f"would reuse: {'; '.join(stale)}. Use another --out, or delete those runs")
    executor = executor or SequentialExecutor(train_fn=train)
    keys: dict[str, Optional[str]] = {spec.run_id: None for spec in specs}
    if cache_dir is None:
        jobs = [Job(spec.run_id, spec.config, run_dirs[spec.run_id],
                    DataSpec.from_config(spec.config), resume=resume) for spec in specs]
    else:
        from .cache import run_key
        cache_dir = Path(cache_dir)
        jobs, seen = [], set()
        for spec in specs:
            key = keys[spec.run_id] = run_key(spec.config)
            if key not in seen:
                seen.add(key)
                jobs.append(Job(spec.run_id, spec.config, cache_dir / key,
                                DataSpec.from_config(spec.config), resume=resume))
    results: dict[str, dict[str, Any]] = {}
    with contextlib.closing(executor.run(jobs, progress=progress, log=log)) as ended:
        for job, result in ended:
            results[job.run_id if cache_dir is None else str(Path(job.run_dir).name)] = result
    if cache_dir is not None:
        from .cache import materialize
        for spec in specs:
            key = keys[spec.run_id]
            result = materialize(cache_dir / key, run_dirs[spec.run_id], key)
            results[spec.run_id] = result if result is not None else results.get(key, {})
    rows = []
    for spec in specs:
        result = results.get(spec.run_id) or {}
        try:
            records = read_metrics(run_dirs[spec.run_id])
        except ValueError as e:  # a damaged metrics.jsonl: that run fails, the others count
            result, records = {"status": "failed", "error": str(e)}, []
        rows.append({"run_id": spec.run_id, "variant": spec.variant, "attn": spec.attn,
                     "seed": spec.seed, "lr": spec.lr, "cell": dict(spec.cell),
                     "cache_key": keys[spec.run_id], **_flat_result(result, spec),
                     **run_stability(records)})
    return rows


def _saved_precision(result: dict[str, Any]) -> Optional[str]:
    """The precision of a result.json written before ``precision`` was recorded (its config's
    ``bf16``); None without a result."""
    if not result.get("config"):
        return None
    return _with_precision(result["config"])["precision"]


def _flat_result(result: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    from ..layers.blocks import AttentionConfig, resolve_pattern
    from .report import attention_label
    kw = spec.config.model_kwargs
    dual = resolve_pattern(kw.get("pattern", "none")) == "dual"
    defaults = AttentionConfig()  # the model's own defaults for the options a run leaves out
    return {
        "pattern": kw.get("pattern"), "attention": attention_label(kw),
        "skip_attn": kw.get("skip_attn", defaults.skip_attn) if dual else None,
        "skip_modulation": kw.get("skip_modulation", defaults.skip_modulation) if dual else None,
        "model": spec.config.model, "dataset": spec.config.dataset, "epochs": spec.config.epochs,
        "train_subset": spec.config.train_subset,
        "precision": result.get("precision") or _saved_precision(result),
        "machine": result.get("machine"), "device": result.get("device"),
        "params": result.get("params"), "mflops": result.get("mflops"),
        "train_time_s": result.get("train_time_s"), "images_per_s": result.get("images_per_s"),
        "best_acc": result.get("best_acc"), "final_acc": result.get("final_acc"),
        "status": result.get("status", "missing"), "diverged": result.get("status") == "diverged",
        "error": result.get("error"), "log": result.get("log"),
        "defect": bool(result.get("defect")),
    }
