"""Metrics sinks: where the records of a training run go.

A record is a flat-ish dict with a ``"type"`` (``step``, ``epoch``, ``diverged``); the training loop
hands every record to each sink and knows nothing about files or loggers. Two sinks ship:

    JsonlSink         ``metrics.jsonl``, one strict-JSON object per line (the source of every
                      report, of :mod:`resattn.workflow.stability` and of resume's clean-up)
    TensorBoardSink   TensorBoard event files (``tensorboard/`` beside ``metrics.jsonl``): scalars per
                      step (loss, train accuracy, gradient norm, lr, images/s) and per epoch (losses,
                      accuracies, lr, and per block gamma_s, gamma_r and skip gain)

A new sink is any object with ``write(record)`` and ``close()``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

__all__ = ["MetricsSink", "JsonlSink", "TensorBoardSink", "finite_or_null"]


class MetricsSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def finite_or_null(value: Any) -> Any:
    """NaN and infinities as None, so that metrics files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


class JsonlSink:
    """Appends each record as one JSON line to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(finite_or_null(record)) + "\n")

    def close(self) -> None:
        pass


class TensorBoardSink:
    """Scalars into TensorBoard event files under ``log_dir`` (``torch.utils.tensorboard``).

    Step records are written at their global ``step``; epoch records at their ``epoch`` under
    ``epoch/...``; per-block gate statistics as ``gates/<block>/{gamma_s,gamma_r,skip_gain}``.

    Raises:
        ImportError: the ``tensorboard`` package is missing (``pip install 'resattn[tensorboard]'``).
    """

    STEP_KEYS = ("loss", "loss_max", "acc", "grad_norm", "lr", "images_per_s")
    EPOCH_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s",
                  "epoch_time_s")

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's module imports the tensorboard package
            raise ImportError("--tensorboard needs the 'tensorboard' package: "
                              "pip install 'resattn[tensorboard]' (or pip install tensorboard)") from e
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "step":
            for k in self.STEP_KEYS:
                if is_finite_number(record.get(k)):
                    self.writer.add_scalar(f"step/{k}", record[k], record["step"])
        elif kind == "epoch":
            ep = record["epoch"]
            for k in self.EPOCH_KEYS:
                if is_finite_number(record.get(k)):
                    self.writer.add_scalar(f"epoch/{k}", record[k], ep)
            for block, stats in (record.get("gates") or {}).items():
                for key, name in (("gamma/skip_attn", "gamma_s"), ("gamma/res_attn", "gamma_r"),
                                  ("gamma/attn", "gamma"), ("skip_gain", "skip_gain")):
                    if is_finite_number(stats.get(key)):
                        self.writer.add_scalar(f"gates/{block}/{name}", stats[key], ep)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def is_finite_number(v: Any) -> bool:
    """True for a finite int or float (not a bool, None, NaN or an infinity): the values that
    metrics files, statistics and stability metrics count."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
