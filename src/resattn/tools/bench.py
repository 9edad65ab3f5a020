"""``resattn bench``: the cost of each pattern beside the plain network and timm's peers, one run.

Every row is a model; all rows are measured in the same process, interleaved round by round (row 1,
row 2, ..., then again, each round starting one row later), and each figure is the median over the
rounds, so a machine that gets
slower or busier during the run moves every row alike. Reported per row:

    params, MFLOPs per image (``torch.utils.flop_counter``: convolutions and matrix products) and
    its ratio to plain (the limit a time ratio could reach if attention cost only its FLOPs),
    bytes autograd saves for backward in one training forward (distinct storages, parameters
    excluded) and the ratio to plain, training-step time (forward, loss, backward, SGD step) and
    eval time (forward under ``no_grad``), each with its ratio to plain.

Rows: each variant of ours (fused, the default; with ``--reference`` also the unfused form of
:func:`resattn.layers.modulation.fused`), the timm peers of ImageNet ResNets (``seresnetNN``; ``resnetNN``
with ``block_args=dict(attn_layer='eca'|'cbam')``), and with ``--compile`` the same rows under
``torch.compile`` (ratios against compiled plain). With several precisions (``dtype=('fp32',
'bf16')``: bf16 is autocast) every row is measured in each, all interleaved in one run, and each
row's ratios are to plain in the same precision and compile state. Results go to a CSV and a PNG.
On CUDA (``device='cuda'``) each timing ends with ``torch.cuda.synchronize()``.
"""
from __future__ import annotations

import csv
import statistics
import textwrap
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import create_model
from ..layers.modulation import fused
from ..utils.precision import autocast as precision_autocast
from ..utils.precision import resolve_precision

__all__ = ["DEFAULT_VARIANTS", "BenchRow", "parse_variant", "saved_bytes", "run_bench",
           "format_table"]

#: Our rows by default: plain, then the patterns (``name:ATTN`` for patterns 1-3,
#: ``dual:SKIP/RES`` for dual).
DEFAULT_VARIANTS: tuple[str, ...] = ("none", "branch:se", "post:se", "pre:se", "dual:eca/cbam",
                                     "dual-gate:eca/cbam", "dual:se/se", "dual:eca/eca")
_PATTERNS = ("none", "branch", "post", "pre", "dual", "dual-gate")
DTYPES = ("fp32", "bf16", "auto")


def parse_variant(spec: str) -> dict[str, Any]:
    """``'branch:se'`` -> create_model options; ``'dual:eca/cbam'`` (skip/residual); ``'none'``.

    Raises:
        ValueError: unknown pattern or a malformed spec (allowed patterns listed).
    """
    name, _, attn = spec.partition(":")
    if name not in _PATTERNS:
        raise ValueError(f"variant={spec!r}: pattern {name!r} is not allowed; allowed: "
                         f"{', '.join(_PATTERNS)} (as PATTERN:ATTN, or dual:SKIP/RES)")
    if name == "none":
        if attn:
            raise ValueError(f"variant={spec!r}: 'none' takes no attention")
        return {"pattern": "none"}
    if name.startswith("dual"):
        skip, _, res = (attn or "eca/cbam").partition("/")
        kw = {"pattern": "dual", "skip_attn": skip, "res_attn": res or "cbam"}
        if name == "dual-gate":
            kw["skip_modulation"] = "gate"
        return kw
    return {"pattern": name, "attn": attn or "se"}


@dataclass
class BenchRow:
    """One measured model. Times in seconds (medians), bytes for one forward."""

    name: str
    source: str  # 'resattn' or 'timm'
    mode: str  # 'fused', 'reference' or '-' (timm)
    compiled: bool
    params: int
    mflops: float
    saved_bytes: Optional[int] = None
    train_s: list[float] = field(default_factory=list)
    eval_s: list[float] = field(default_factory=list)
    precision: str = "fp32"  # resolved: 'fp32' or 'bf16' (autocast)


def saved_bytes(model: nn.Module, x: torch.Tensor, autocast: Any = nullcontext) -> int:
    """Bytes autograd saves for backward in one training forward of ``model`` on ``x``: distinct
    storages seen by ``torch.autograd.graph.saved_tensors_hooks``, the parameters' own excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        out = model(x)
    del out
    return sum(seen.values())


def _mflops(model: nn.Module, shape: Sequence[int], device: Any = "cpu") -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *shape, device=device))
    return counter.get_total_flops() / 1e6


def _timm_peers(model_name: str) -> list[tuple[str, str, dict[str, Any]]]:
    import timm

    if not model_name.startswith("resnet") or not timm.is_model(model_name):
        return []
    peers = [(f"timm {model_name}", model_name, {})]
    if timm.is_model(f"se{model_name}"):
        peers.append((f"timm se{model_name}", f"se{model_name}", {}))
    for a in ("eca", "cbam"):
        peers.append((f"timm {model_name}+{a}", model_name, {"block_args": {"attn_layer": a}}))
    return peers


def run_bench(model_name: str = "cifar_resnet20", variants: Sequence[str] = DEFAULT_VARIANTS, *,
              batch_size: int = 128, input_shape: tuple[int, int, int] = (1, 28, 28),
              steps: int = 3, rounds: int = 5, dtype: Union[str, Sequence[str]] = "fp32",
              channels_last: bool = True, compile: bool = False, reference: bool = True,
              peers: bool = True, num_classes: int = 10, device: str = "cpu",
              progress: bool = True) -> list[BenchRow]:
    """Measure every row (see the module docstring) and return them, plain first.

    Args:
        model_name: a resattn model (``cifar_resnet20``, ``resnet50``, ...).
        variants: specs for :func:`parse_variant`; ``'none'`` is added first when missing.
        batch_size, input_shape: the batch (N, C, H, W) = (batch_size, *input_shape).
        steps: training steps (and eval forwards) per row and round; rounds: interleaved rounds.
        dtype: ``'fp32'``, ``'bf16'`` (autocast) or ``'auto'`` (see :mod:`resattn.utils.precision`),
            or a sequence of them: every row in each (resolved; repeats dropped).
        channels_last: model and batch in channels_last memory format.
        compile: add the rows again under ``torch.compile`` (compiled once, before timing).
        reference: add the unfused form of each gated variant (``fused(model, False)``).
        peers: add timm's peers for ImageNet ResNets.
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    Raises:
        ValueError: a bad variant, dtype, or non-positive sizes.
    """
    dtypes = [dtype] if isinstance(dtype, str) else list(dtype)
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed: {', '.join(DTYPES)} "
                         "(or a list of them)")
    dev = torch.device(device)
    precisions = list(dict.fromkeys(resolve_precision(d, dev) for d in dtypes))
    for k, v in (("batch_size", batch_size), ("steps", steps), ("rounds", rounds)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{k}={v!r} must be an integer >= 1")
    variants = list(variants)
    if "none" not in variants:
        variants.insert(0, "none")
    specs = [(v, parse_variant(v)) for v in variants]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):  # caller's RNG kept
        torch.manual_seed(0)
        x = torch.randn(batch_size, *input_shape).to(dev).contiguous(memory_format=fmt)
        y = torch.randint(0, num_classes, (batch_size,)).to(dev)
        built = _models(model_name, specs, num_classes, input_shape[0], reference, peers)
        jobs = _jobs(built, precisions, compile, dev, fmt, x, y, input_shape)
        _time(jobs, rounds, steps, progress, f"bench {model_name}")
    return [row for row, _, _ in jobs]


def _models(model_name: str, specs: list[tuple[str, dict[str, Any]]], num_classes: int,
            in_chans: int, reference: bool, peers: bool) -> list[tuple[str, str, str, nn.Module]]:
    """(name, source, mode, model) per row: each variant fused, its unfused form beside it
    (``reference``; the same model), then timm's peers (``peers``)."""
    built: list[tuple[str, str, str, nn.Module]] = []
    for v, kw in specs:
        m = create_model(model_name, num_classes=num_classes, in_chans=in_chans, **kw)
        built.append((v, "resattn", "fused", m))
        if reference and kw["pattern"] != "none":
            built.append((v, "resattn", "reference", m))
    if peers:
        import timm
        for label, name, extra in _timm_peers(model_name):
            m = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_chans, **extra)
            built.append((label, "timm", "-", m))
    return built


def _jobs(built: list[tuple[str, str, str, nn.Module]], precisions: list[str], compile: bool,
          dev: torch.device, fmt: torch.memory_format, x: torch.Tensor, y: torch.Tensor,
          input_shape: Sequence[int]) -> list[tuple[BenchRow, Callable[[], None], Callable[[], None]]]:
    """Per precision and compile state, each model's row (params, MFLOPs, saved bytes) and its
    timed train step and eval forward."""
    jobs: list[tuple[BenchRow, Callable[[], None], Callable[[], None]]] = []
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for precision in precisions:
        autocast = lambda p=precision: precision_autocast(p, dev)  # noqa: E731
        for compiled in ([False, True] if compile else [False]):
            for name, source, mode, m in built:
                if compiled and mode == "reference":
                    continue  # inductor fuses both forms alike; the unfused form is an eager matter
                m = m.to(dev, memory_format=fmt)
                mode_ctx = ((lambda m=m: fused(m, False)) if mode == "reference"
                            else nullcontext)
                with mode_ctx():
                    row = BenchRow(name, source, mode, compiled,
                                   sum(p.numel() for p in m.parameters()),
                                   _mflops(m, input_shape, dev), precision=precision)
                    if not compiled:
                        row.saved_bytes = saved_bytes(m, x, autocast)
                run = torch.compile(m) if compiled else m
                opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
                train, evaluate = _step_fns(run, m, opt, x, y, autocast, mode_ctx, sync)
                jobs.append((row, train, evaluate))
    return jobs


def _time(jobs: list[tuple[BenchRow, Callable[[], None], Callable[[], None]]], rounds: int,
          steps: int, progress: bool, desc: str) -> None:
    """Warm every job up (and compile it), then time ``rounds`` interleaved rounds of ``steps``
    each into its row; each round starts one row later, so no row is always first."""
    bar = _progress(len(jobs) * (rounds + 1), progress, desc)
    for row, train, evaluate in jobs:  # warm-up (and compilation)
        train()
        train()
        evaluate()
        bar.update(1)
    for r in range(rounds):
        for row, train, evaluate in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            row.train_s.append(_timed(train, steps))
            row.eval_s.append(_timed(evaluate, steps))
            bar.update(1)
    bar.close()


def _step_fns(run: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor, autocast: Any, mode_ctx: Any, sync: Callable[[], None]
              ) -> tuple[Callable, Callable]:
    def train() -> None:
        model.train()
        with mode_ctx():
            with autocast():
                loss = F.cross_entropy(run(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        sync()

    def evaluate() -> None:
        model.eval()
        with mode_ctx(), torch.no_grad(), autocast():
            run(x)
        sync()
    return train, evaluate


def _timed(fn: Callable[[], None], steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


def _summary(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        base = next(b for b in rows if b.name == "none" and b.compiled == r.compiled
                    and b.precision == r.precision)
        eager_base = next(b for b in rows if b.name == "none" and not b.compiled
                          and b.precision == r.precision)
        t, e = statistics.median(r.train_s), statistics.median(r.eval_s)
        tb, eb = statistics.median(base.train_s), statistics.median(base.eval_s)
        out.append({
            "name": r.name, "source": r.source, "mode": r.mode, "precision": r.precision,
            "compiled": r.compiled, "params": r.params, "mflops": round(r.mflops, 2),
            "flop_ratio": round(r.mflops / base.mflops, 4),
            "saved_mb": None if r.saved_bytes is None else round(r.saved_bytes / 2**20, 2),
            "saved_ratio": (None if r.saved_bytes is None
                            else round(r.saved_bytes / eager_base.saved_bytes, 3)),
            "train_ms": round(1e3 * t, 2), "train_ratio": round(t / tb, 3),
            "eval_ms": round(1e3 * e, 2), "eval_ratio": round(e / eb, 3),
        })
    return out


def format_table(rows: Sequence[BenchRow], header: str = "") -> str:
    """A Markdown table of :func:`run_bench` rows (ratios to plain of the same precision and
    compile state)."""
    lines = [header] if header else []
    lines += ["| model | mode | precision | compiled | params | FLOP ratio | saved MB | "
              "saved ratio | train ms | train ratio | eval ms | eval ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in _summary(rows):
        saved = "-" if s["saved_mb"] is None else f"{s['saved_mb']:.1f}"
        sratio = "-" if s["saved_ratio"] is None else f"{s['saved_ratio']:.2f}"
        lines.append(
            f"| {s['name']} | {s['mode']} | {s['precision']} | {'yes' if s['compiled'] else 'no'} | "
            f"{s['params']:,} | "
            f"{s['flop_ratio']:.3f} | {saved} | {sratio} | {s['train_ms']:.1f} | "
            f"{s['train_ratio']:.2f} | {s['eval_ms']:.1f} | {s['eval_ratio']:.2f} |")
    return "\n".join(lines)


def write_csv(rows: Sequence[BenchRow], path: str | Path) -> Path:
    """One line per row with every field of the table (times in ms, medians)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = _summary(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    return path


def plot(rows: Sequence[BenchRow], path: str | Path, title: str = "") -> Path:
    """Bars of the train and eval time ratios per row, the FLOP ratio as a marker (the limit)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    summary = _summary(rows)
    labels = [f"{s['name']}" + (f" [{s['mode']}]" if s["mode"] == "reference" else "")
              + (" (compiled)" if s["compiled"] else "")
              + (f" {s['precision']}" if len({t["precision"] for t in summary}) > 1 else "")
              for s in summary]
    n = len(summary)
    fig = Figure(figsize=(8, 0.45 * n + 2.0))
    ax = fig.subplots()
    ypos = range(n)
    ax.barh([i - 0.2 for i in ypos], [s["train_ratio"] for s in summary], 0.4, label="train step")
    ax.barh([i + 0.2 for i in ypos], [s["eval_ratio"] for s in summary], 0.4, label="eval")
    ax.scatter([s["flop_ratio"] for s in summary], list(ypos), marker="|", s=200, color="k",
               label="FLOP ratio (limit)", zorder=3)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_yticks(list(ypos), labels)
    ax.invert_yaxis()
    lowest = min(min(s["train_ratio"], s["eval_ratio"]) for s in summary)
    ax.set_xlim(left=min(0.8, lowest - 0.05))
    ax.set_xlabel("time / plain (same precision and compile state)")
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.45 * n + 1.5)),
              ncol=3, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
