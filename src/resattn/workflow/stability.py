"""Stability of a run, measured from its step log (``metrics.jsonl``), so finished runs qualify.

Every metric is defined here, once. Step records hold window statistics over the ``log_every``
steps since the previous record (see :mod:`resattn.workflow.train`): ``loss`` (mean), ``loss_max`` (largest
single-step loss), ``acc`` (train accuracy, %), ``grad_norm`` (largest gradient norm before
clipping). Epoch records hold ``train_loss`` and, with the gate monitor on, ``gates``: per block
``skip_gain`` (‖s‖/‖skip(x)‖ of :class:`resattn.tools.monitor.GateMonitor`) and the effective
``gamma/skip_attn`` (γ_s) and ``gamma/res_attn`` (γ_r), means over the epoch's sampled training
forwards; and ``gates_end``: the same statistics of the model at the end of the epoch (one eval
forward), which the end-of-epoch values below read when a record has them.

Metrics (keys of :func:`run_stability`):

    loss_spikes       number of step records whose ``loss_max`` exceeds ``SPIKE_K`` (= 3) times the
                      running median of the previous ``SPIKE_WINDOW`` (= 20) records' mean losses;
                      tested only once ``SPIKE_MIN_HISTORY`` (= 5) records precede it
    max_grad_norm     largest gradient norm of the run (L2 over all parameters, before clipping)
    final_train_loss  mean training loss of the last finished epoch
    steps_to_mark     global step of the first step record whose window train accuracy reaches
                      ``ACC_MARK`` (= 80 %); None when never reached
    min_skip_gain     lowest per-epoch skip gain of any block over the run, and its block
                      (``min_skip_gain_block``); 1.0 for plain blocks by definition
    final_gamma_s     mean effective γ_s over the blocks that have one, of the model after the last
                      epoch (``gates_end``)
    final_gamma_r     the same for γ_r
    gamma_s / gamma_r (trajectories, :func:`gamma_trajectory`) the per-epoch means, each at the
                      end of its epoch

    initial_train_loss  mean loss of the first step record (what "training loss fell" compares to)

:data:`HIGHER_IS_BETTER` is the one table of metric directions of the project (reports, studies,
statistics): it also holds the run-level metrics ``final_acc``, ``best_acc`` (higher is better)
and ``diverged`` (1 for a diverged run, 0 otherwise; lower is better). Lower is better for
``loss_spikes``, ``max_grad_norm``, ``final_train_loss``, ``initial_train_loss`` and
``steps_to_mark``; higher for ``min_skip_gain`` and the gammas.
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable, Optional

from .sinks import is_finite_number

__all__ = ["SPIKE_K", "SPIKE_WINDOW", "SPIKE_MIN_HISTORY", "ACC_MARK", "STABILITY_METRICS",
           "HIGHER_IS_BETTER", "higher_is_better", "ACCURACY_METRICS", "loss_spikes", "max_grad_norm", "final_train_loss", "steps_to_mark",
           "min_skip_gain", "gamma_trajectory", "run_stability"]

SPIKE_K = 3.0
SPIKE_WINDOW = 20
SPIKE_MIN_HISTORY = 5
ACC_MARK = 80.0

#: Metrics that are a test accuracy in percent (a diverged run scores chance on them in a study).
ACCURACY_METRICS = ("final_acc", "best_acc")
#: Stability metrics of :func:`run_stability` (computed from the step log).
STABILITY_METRICS = ("loss_spikes", "max_grad_norm", "final_train_loss", "initial_train_loss",
                     "steps_to_mark", "min_skip_gain", "final_gamma_s", "final_gamma_r")
#: THE table of metric directions: metric -> True when a higher value is better. Every report,
#: study and statistic reads it (through :func:`higher_is_better`); nothing else states a direction.
HIGHER_IS_BETTER: dict[str, bool] = {
    "final_acc": True, "best_acc": True, "diverged": False,
    "loss_spikes": False, "max_grad_norm": False, "final_train_loss": False,
    "initial_train_loss": False, "steps_to_mark": False, "min_skip_gain": True,
    "final_gamma_s": True, "final_gamma_r": True,
}


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric`` from :data:`HIGHER_IS_BETTER`.

    Raises:
        ValueError: an unknown metric, naming the known ones.
    """
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ValueError(f"metric={metric!r} is not a known metric; allowed: "
                         f"{', '.join(HIGHER_IS_BETTER)}") from None


def _steps(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == "step"]


def _epochs(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == "epoch"]


def _num(v: Any) -> Optional[float]:
    return float(v) if is_finite_number(v) else None


def loss_spikes(records: Iterable[dict[str, Any]], *, k: float = SPIKE_K, window: int = SPIKE_WINDOW,
                min_history: int = SPIKE_MIN_HISTORY) -> int:
    """Step records whose largest step loss exceeds ``k`` x the running median of the previous
    ``window`` records' mean losses (records with fewer than ``min_history`` before are not tested;
    a record without ``loss_max``, from older runs, uses ``loss``)."""
    history: list[float] = []
    spikes = 0
    for r in _steps(records):
        loss = _num(r.get("loss"))
        peak = _num(r.get("loss_max"))
        peak = loss if peak is None else peak
        if peak is not None and len(history) >= min_history:
            if peak > k * statistics.median(history[-window:]):
                spikes += 1
        if loss is not None:
            history.append(loss)
    return spikes


def max_grad_norm(records: Iterable[dict[str, Any]]) -> Optional[float]:
    """Largest ``grad_norm`` of the step records (None when no record has one)."""
    vals = [v for v in (_num(r.get("grad_norm")) for r in _steps(records)) if v is not None]
    return max(vals) if vals else None


def initial_train_loss(records: Iterable[dict[str, Any]]) -> Optional[float]:
    """Mean loss of the first step record (None without step records)."""
    for r in _steps(records):
        loss = _num(r.get("loss"))
        if loss is not None:
            return loss
    return None


def final_train_loss(records: Iterable[dict[str, Any]]) -> Optional[float]:
    """``train_loss`` of the last epoch record (None before the first epoch ends)."""
    eps = _epochs(records)
    return _num(eps[-1].get("train_loss")) if eps else None


def steps_to_mark(records: Iterable[dict[str, Any]], mark: float = ACC_MARK) -> Optional[int]:
    """Global step of the first step record with window train accuracy >= ``mark`` (%)."""
    for r in _steps(records):
        acc = _num(r.get("acc"))
        if acc is not None and acc >= mark:
            return int(r["step"])
    return None


def min_skip_gain(records: Iterable[dict[str, Any]]) -> tuple[Optional[float], Optional[str]]:
    """(lowest skip gain over all blocks and epochs, its block), from the epochs' sampled
    training forwards and their end-of-epoch models; (None, None) without gates."""
    low: tuple[Optional[float], Optional[str]] = (None, None)
    for e in _epochs(records):
        for block, stats in [*(e.get("gates") or {}).items(), *(e.get("gates_end") or {}).items()]:
            g = _num(stats.get("skip_gain"))
            if g is not None and (low[0] is None or g < low[0]):
                low = (g, block)
    return low


def gamma_trajectory(records: Iterable[dict[str, Any]], path: str = "skip_attn") -> list[Optional[float]]:
    """Per epoch, the mean effective gamma over blocks of ``path`` (``skip_attn`` = γ_s,
    ``res_attn`` = γ_r, ``attn`` = patterns 1-3) at the end of the epoch (``gates_end``; the
    epoch's sampled mean for records without it); None for an epoch without such blocks."""
    out = []
    key = f"gamma/{path}"
    for e in _epochs(records):
        gates = e.get("gates_end") or e.get("gates") or {}
        vals = [v for v in (_num(s.get(key)) for s in gates.values()) if v is not None]
        out.append(statistics.fmean(vals) if vals else None)
    return out


def run_stability(records: list[dict[str, Any]]) -> dict[str, Any]:
    """All stability metrics of one run's records, flat (see the module docstring)."""
    low, block = min_skip_gain(records)
    gs, gr = gamma_trajectory(records, "skip_attn"), gamma_trajectory(records, "res_attn")
    return {
        "loss_spikes": loss_spikes(records) if _steps(records) else None,
        "max_grad_norm": max_grad_norm(records),
        "final_train_loss": final_train_loss(records),
        "initial_train_loss": initial_train_loss(records),
        "steps_to_mark": steps_to_mark(records),
        "min_skip_gain": low, "min_skip_gain_block": block,
        "final_gamma_s": gs[-1] if gs else None, "final_gamma_r": gr[-1] if gr else None,
        "gamma_s": gs if any(v is not None for v in gs) else None,
        "gamma_r": gr if any(v is not None for v in gr) else None,
    }
