"""Content-addressed run cache: identical runs are trained once and shared.

Two runs are the same run when their resolved model, training options, data and seed agree. The
key of a run (:func:`run_key`) is the SHA-256 of:

* every :class:`resattn.workflow.train.TrainConfig` field except those that only say *where* it runs
  (:data:`CACHE_IGNORED`: device, DataLoader workers, data folder, download, TensorBoard,
  torch.compile); the data set, its subsets, the epochs, batch, learning rate and seed are in it;
  precision ``auto`` counts as what it resolves to here (``fp32`` or ``bf16``), so a run asked
  for as ``auto`` and one asked for as ``bf16`` on a bf16 machine are one run;
* the model as built: the meta-device model's module tree plus every block's resolved
  :class:`resattn.layers.blocks.AttentionConfig` (defaults filled in, ``none`` for a plain block), so
  ``{pattern: dual}`` and ``{pattern: dual, skip_gamma_max: 0.25, stages: [2, 3]}`` share a key;
* :data:`CACHE_VERSION`, raised when a change of the training code makes old runs unusable.

A run trains in ``<cache>/<key>/`` (its checkpoint lives there); a study or compare that needs it
gets a copy of its ``result.json`` and ``metrics.jsonl`` in its own ``runs/<run_id>/`` with
``cache.json`` naming the key (:func:`materialize`), so a study folder stands on its own (tar, git)
and every study that needs the run reads the one training. ``result.json`` carries ``cache_key``.

One grid at a time should write to a cache folder: two processes that start the same missing run
at once would both train it into the same folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .train import TrainConfig, _plain, _with_precision

__all__ = ["CACHE_VERSION", "CACHE_IGNORED", "run_key", "rekey", "materialize", "default_cache_dir",
           "cached_mismatch"]

CACHE_VERSION = 1
#: TrainConfig fields that do not change what is trained or recorded.
CACHE_IGNORED = frozenset({"device", "num_workers", "data_dir", "download", "tensorboard", "compile"})
_MODEL_KEYS: dict[str, str] = {}


def _model_identity(name: str, model_kwargs: dict[str, Any]) -> str:
    """The meta-device model's module tree and per-block attention configs, as one string."""
    cache_key = repr((name, sorted(model_kwargs.items(), key=lambda kv: kv[0])))
    if cache_key not in _MODEL_KEYS:
        import dataclasses
        import warnings

        from ..models import create_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(name, **{**model_kwargs, "device": "meta"})
        blocks = {}
        for block_name, module in model.named_modules():
            cfg = getattr(module, "config", None)
            if module is not model and dataclasses.is_dataclass(cfg):
                blocks[block_name] = ("none" if getattr(cfg, "pattern", None) == "none"
                                      else repr(cfg))
        rest = {k: v for k, v in model_kwargs.items()
                if k != "stages" and k not in _attention_fields()}
        _MODEL_KEYS[cache_key] = json.dumps({"tree": _tree(model), "blocks": blocks,
                                             "rest": _plain(rest)}, sort_keys=True, default=str)
    return _MODEL_KEYS[cache_key]


def _tree(model: Any) -> list[str]:
    """The module tree as torch-version-independent lines: each module's name and class, the
    settings of resattn's own modules, and every parameter's and buffer's shape. (``str(model)``
    is not: torch 2.14 prints ``bias=True`` in a BatchNorm that torch 2.11 does not, so a run
    trained on one torch had another key on the other.)"""
    lines = []
    for name, module in model.named_modules():
        own = type(module).__module__.startswith("resattn")
        lines.append(f"{name}:{type(module).__name__}" + (f"({module.extra_repr()})" if own else ""))
    lines += [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return lines


def _attention_fields() -> set[str]:
    from ..layers.blocks import ATTENTION_OPTIONS
    return set(ATTENTION_OPTIONS)


def run_key(config: TrainConfig) -> str:
    """The cache key of a run (see the module docstring): 20 hex digits of a SHA-256."""
    opts = {k: v for k, v in _with_precision(_plain(config.to_dict()), resolve=True).items()
            if k not in CACHE_IGNORED and k != "model_kwargs"}
    ident = {"version": CACHE_VERSION, "options": opts,
             "model": _model_identity(config.model, dict(config.model_kwargs))}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def rekey(cache_dir: str | os.PathLike) -> dict[str, str]:
    """Move each finished run of ``cache_dir`` to the key its saved options have under this
    version of :func:`run_key` (after a change of the key's formula, not of training: runs that
    trained the same stay reusable). Returns ``{old key: new key}`` for the runs moved.

    Raises:
        ValueError: two runs map to one key, or a run's new key is taken by another folder.
    """
    from .train import TrainConfig
    cache_dir, moved = Path(cache_dir), {}
    for result in sorted(cache_dir.glob("*/result.json")):
        old = result.parent.name
        doc = json.loads(result.read_text())
        new = run_key(TrainConfig.from_dict(doc["config"]))
        if new == old:
            continue
        if (cache_dir / new).exists() or new in moved.values():
            raise ValueError(f"{cache_dir}: run {old} would move to {new}, which is taken")
        doc["cache_key"] = new
        result.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(result.parent, cache_dir / new)
        moved[old] = new
    return moved


def default_cache_dir(out: str | os.PathLike) -> Path:
    """The cache beside a grid's output folder: ``<parent of out>/cache``."""
    return Path(out).resolve().parent / "cache"


def materialize(cache_run: Path, run_dir: Path, key: str) -> Optional[dict[str, Any]]:
    """Stamp ``cache_key`` into the cached ``result.json`` and copy it and ``metrics.jsonl``
    (and ``train.log`` when there is one) into ``run_dir`` with ``cache.json``. Returns the
    result, or None when the cached run has not ended (nothing is copied)."""
    src = Path(cache_run) / "result.json"
    if not src.is_file():
        return None
    result = json.loads(src.read_text())
    if result.get("cache_key") != key:
        result["cache_key"] = key
        tmp = src.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, src)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "metrics.jsonl", "train.log"):
        if (Path(cache_run) / name).is_file():
            shutil.copyfile(Path(cache_run) / name, run_dir / name)
    (run_dir / "cache.json").write_text(json.dumps({"cache_key": key, "path": str(cache_run)}, indent=2))
    return result


def cached_mismatch(run_dir: Path, config: TrainConfig) -> Optional[str]:
    """For a run folder filled from the cache (``cache.json``): what differs from ``config``
    (None when the keys agree, or the folder is not a cached run: then the caller compares the
    options themselves)."""
    path = Path(run_dir) / "cache.json"
    if not path.is_file():
        return None
    key = json.loads(path.read_text()).get("cache_key")
    return None if key == run_key(config) else f"{Path(run_dir).name} (cache key {key} -> {run_key(config)})"
