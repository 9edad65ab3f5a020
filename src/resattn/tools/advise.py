"""Where should attention go? Rank candidate placements in a given network before training.

With near-identity modulation a gate is exactly inert at gamma = 0 (A(z) = z + 0 * z * m(z) = z),
so a model can carry every candidate placement at once and still compute what it computed. The
advisor inserts one such gate per (block, path, attention type), scores each cheaply on a few
batches, and can open the best placements for training (gamma still 0).

Gate positions in a block (x: input, F: residual branch, act: output activation):

    pre     y = act(skip(x) + F(A(x)))            pattern 3
    branch  y = act(skip(x) + A(F(x)))            pattern 1; also dual's residual gate A_r
    skip    y = act(A(skip(x)) + F(x))            dual's skip gate A_s (bounded, as pattern 4)
    post    y = act(A(skip(x) + F(x)))            pattern 2

Dual's residual gate A_r(F(x)) sits where ``branch`` does, so one gate scores both; a dual
placement is a ``skip`` gate plus a ``branch`` gate in the same block.

Scores (``method``):

``probe`` (default): the gates alone are trained for a few steps (backbone frozen: only gate
    parameters get updates) from ``inits`` mask initialisations on ``batches`` batches, and each
    gate is credited with the loss decrease its own parameter updates bought, to first order:
    score_i = sum over steps of -g_i . delta_i (the path-integral attribution of Zenke et al.,
    "Continual Learning Through Synaptic Intelligence", 2017). After the first step gamma != 0, so
    the mask's own parameters learn too: the score sees a trained mask, not a random one.
``grad``: |mean over batches of dL/dgamma| at gamma = 0, averaged over mask initialisations. At
    gamma = 0 the mask's parameters get no gradient, so this sees random masks only.

Both are in loss units per step (probe) or loss per unit gamma (grad); both are 0 for a gate
whose output the loss ignores. Batch-norm buffers of the model are restored afterwards; the
caller's random state is not touched (the scoring runs under ``torch.random.fork_rng``).
"""
from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import attn_name
from ..layers.blocks import AttentionConfig, ResidualBlock, attention_paths
from .convert import _adopted_modules, convert, find_residual_blocks
from ..layers.modulation import Modulation

__all__ = ["GATE_PATHS", "METHODS", "Candidate", "CandidateSet", "CandidateBlock",
           "insert_candidates", "advise", "Advice", "Placement", "select_placements",
           "apply_placements", "dataset_batches", "save_applied", "load_applied"]

#: Gate positions, in the order of the block's computation.
GATE_PATHS: tuple[str, ...] = ("pre", "branch", "skip", "post")
METHODS: tuple[str, ...] = ("probe", "grad")
_PATH_ALIASES = {"res": ("branch",), "residual": ("branch",), "dual": ("skip", "branch")}
#: Gate sets one block can hold as one pattern.
_COMPATIBLE = ({"pre"}, {"branch"}, {"post"}, {"skip"}, {"skip", "branch"})


def resolve_paths(paths: Union[str, Iterable[str]]) -> tuple[str, ...]:
    """Names (or a comma list) -> gate positions; ``dual`` = skip + branch, ``res`` = branch."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p.strip()]
    out: list[str] = []
    for p in paths:
        key = p.strip().lower()
        names = _PATH_ALIASES.get(key, (key,))
        for n in names:
            if n not in GATE_PATHS:
                raise ValueError(f"paths: {p!r} is not allowed; allowed: "
                                 f"{', '.join(GATE_PATHS + tuple(_PATH_ALIASES))}")
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError("paths must name at least one of " + ", ".join(GATE_PATHS))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# candidate gates
# --------------------------------------------------------------------------------------------

def _gate(path: str, attn: str, channels: int) -> Modulation:
    """One inert gate with the options its pattern uses (dual skip: bounded by 0.25)."""
    if path == "skip":
        cfg = AttentionConfig(pattern="dual", skip_attn=attn, res_attn=None)
        return cfg.modulation_for("skip", channels)
    cfg = AttentionConfig(pattern="branch", attn=attn, modulation="near_identity")
    return cfg.modulation_for("attn", channels)


def _chain(gates: nn.ModuleDict, z: torch.Tensor) -> torch.Tensor:
    for gate in gates.values():
        z = gate(z)
    return z


class CandidateBlock(nn.Module):
    """A plain residual block carrying inert candidate gates on every position:

        y = act(post(skip_gates(skip(x)) + branch_gates(F(pre_gates(x)))))

    ``block`` is a plain resattn block (a foreign block is adopted around its own modules, as
    :func:`resattn.tools.convert.convert` does); each ``*_gates`` maps attention type -> Modulation.
    """

    def __init__(self, block: ResidualBlock, gates: dict[str, dict[str, Modulation]]) -> None:
        super().__init__()
        self.block = block
        for path in GATE_PATHS:
            setattr(self, f"{path}_gates", nn.ModuleDict(gates.get(path, {})))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        s = _chain(self.skip_gates, b.skip(x))
        r = _chain(self.branch_gates, b.residual(_chain(self.pre_gates, x)))
        return b.relu(_chain(self.post_gates, s + b.drop_path(r)))


@dataclass
class Candidate:
    """One candidate gate: block name, 1-based stage, index in stage, path, attention type."""

    block: str
    stage: int
    index: int
    path: str
    attn: str
    gate: Modulation = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.block}:{self.path}:{self.attn}"


def _channels(block: nn.Module) -> tuple[int, int]:
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return block.conv1.in_channels, last.out_channels


class CandidateSet:
    """Candidate gates inserted in a model; :meth:`remove` puts the original blocks back (the
    same module objects, hence the original module tree and ``state_dict`` keys)."""

    def __init__(self, model: nn.Module, originals: list[tuple[str, nn.Module]],
                 candidates: list[Candidate]) -> None:
        self.model = model
        self.originals = originals
        self.candidates = candidates
        self.inserted = True

    def gate_parameters(self) -> list[list[nn.Parameter]]:
        return [list(c.gate.parameters()) for c in self.candidates]

    def reset(self, seed: int) -> None:
        """Fresh mask parameters (PyTorch's default init, seeded) and gamma = 0 on every gate."""
        cuda = sorted({p.device.index or 0 for c in self.candidates for p in c.gate.parameters()
                       if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for c in self.candidates:
                for m in c.gate.attn.modules():
                    if m is not c.gate.attn and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
                with torch.no_grad():
                    c.gate.gamma.zero_()

    def remove(self) -> nn.Module:
        """Put the original blocks back; returns the model."""
        if self.inserted:
            for name, original in self.originals:
                parent, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent) if parent else self.model, child, original)
            self.inserted = False
        return self.model

    def __enter__(self) -> "CandidateSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def insert_candidates(model: nn.Module, *, paths: Iterable[str] = GATE_PATHS,
                      types: Sequence[str] = ("se",),
                      stages: Optional[Iterable[int]] = None) -> CandidateSet:
    """Wrap every plain residual block of ``model`` (in the chosen stages) with inert gates, one
    per path and attention type; the model computes exactly what it did (gamma = 0).

    Raises:
        ValueError: no supported residual block; a resattn block that already has attention
            (advise a plain model); an unknown path or attention type.
    """
    paths = resolve_paths(paths)
    types = [attn_name(t) if not isinstance(t, str) else t.lower() for t in types]
    if not types:
        raise ValueError("types must name at least one attention type")
    infos = find_residual_blocks(model)
    if not infos:
        raise ValueError(f"model={type(model).__name__} has no residual block to advise on "
                         "(torchvision, timm or resattn ResNet blocks)")
    chosen = None if stages is None else set(stages)
    plan = []
    for info in infos:
        if chosen is not None and info.stage not in chosen:
            continue
        if info.source == "resattn":
            if info.module.pattern != "none":
                raise ValueError(f"block {info.name!r} already has attention (pattern="
                                 f"{info.module.pattern!r}); advise a plain model")
            block = info.module
        else:
            cls, modules = _adopted_modules(info.module, info.source)
            block = cls.from_modules(modules, stride=getattr(info.module, "stride", 1),
                                     config=AttentionConfig(),
                                     paths=attention_paths(AttentionConfig(), 1, 1))
            block.training = info.module.training
        c_in, c_out = _channels(info.module)
        ref = next(iter(info.module.parameters()))
        gates: dict[str, dict[str, Modulation]] = {}
        cands = []
        for path in paths:
            gates[path] = {}
            for t in types:
                g = _gate(path, t, c_in if path == "pre" else c_out)
                g.to(device=ref.device, dtype=ref.dtype).train(info.module.training)
                gates[path][t] = g
                cands.append(Candidate(info.name, info.stage, info.index, path, t, g))
        plan.append((info, CandidateBlock(block, gates), cands))
    if not plan:
        raise ValueError(f"stages={sorted(chosen or [])} selects no residual block")
    originals, candidates = [], []
    for info, wrapper, cands in plan:
        wrapper.train(info.module.training)
        parent, _, child = info.name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, wrapper)
        originals.append((info.name, info.module))
        candidates += cands
    return CandidateSet(model, originals, candidates)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def _gate_flops(cands: list[Candidate], shapes: dict[int, tuple[int, ...]]) -> list[int]:
    from torch.utils.flop_counter import FlopCounterMode
    out = []
    for c in cands:
        shape = shapes.get(id(c.gate))
        if shape is None:
            out.append(0)
            continue
        ref = next(c.gate.parameters())
        z = torch.zeros((1,) + tuple(shape), device=ref.device, dtype=ref.dtype)
        mode = c.gate.attn.training
        c.gate.attn.eval()
        counter = FlopCounterMode(display=False)
        with counter:
            c.gate.attn(z)
        c.gate.attn.train(mode)
        out.append(int(counter.get_total_flops()))
    return out


def _take_batches(loader: Iterable, n: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for x, y in loader:
        batches.append((x.to(device), y.to(device)))
        if len(batches) == n:
            break
    if not batches:
        raise ValueError("loader yielded no batch")
    return batches


@dataclass
class Advice:
    """Scores of the candidate gates, best first.

    ``rows``: one dict per gate: ``rank``, ``block``, ``stage``, ``index``, ``path``, ``attn``,
    ``score`` (mean over mask initialisations), ``init_std`` (its spread over initialisations),
    ``batch_std`` (spread of the per-batch contributions, scaled to the total),
    ``params`` (parameters the gate adds), ``flops`` (its forward FLOPs per image, from
    ``torch.utils.flop_counter``: convolutions and matmuls; elementwise products not counted).
    """

    rows: list[dict[str, Any]]
    method: str
    meta: dict[str, Any]

    def top(self, k: int) -> list[dict[str, Any]]:
        return self.rows[:k]

    def placements(self, k: int) -> list["Placement"]:
        return select_placements(self.rows, k)

    def apply(self, model: nn.Module, k: int) -> nn.Module:
        """Open the top-``k`` compatible placements in ``model`` (gamma = 0); see
        :func:`apply_placements`. Returns the model (changed in place)."""
        return apply_placements(model, self.placements(k))

    def to_csv(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        keys = list(self.rows[0])
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        return path

    def to_markdown(self, limit: Optional[int] = None) -> str:
        unit = "loss decrease" if self.method == "probe" else "|dL/dgamma|"
        lines = [f"| rank | block | path | attn | score ({unit}) | ± inits | ± batches | params | "
                 "FLOPs/img |", "|---:|---|---|---|---:|---:|---:|---:|---:|"]
        for r in self.rows[:limit]:
            lines.append(f"| {r['rank']} | {r['block']} | {r['path']} | {r['attn']} | "
                         f"{r['score']:.4g} | {r['init_std']:.2g} | {r['batch_std']:.2g} | "
                         f"{r['params']:,} | {r['flops']:,} |")
        return "\n".join(lines)

    def figure(self):
        """A matplotlib ``Figure`` (no pyplot): score per block and path, one panel per type,
        error bars = spread over mask initialisations."""
        from matplotlib.figure import Figure
        types = list(dict.fromkeys(r["attn"] for r in self.rows))
        blocks = list(dict.fromkeys(r["block"] for r in sorted(
            self.rows, key=lambda r: (r["stage"], r["index"]))))
        paths = [p for p in GATE_PATHS if any(r["path"] == p for r in self.rows)]
        fig = Figure(figsize=(max(6.0, 0.6 * len(blocks) * len(paths) / 2), 2.6 * len(types)))
        axes = fig.subplots(len(types), 1, squeeze=False)[:, 0]
        index = {(r["block"], r["path"], r["attn"]): r for r in self.rows}
        width = 0.8 / len(paths)
        for ax, t in zip(axes, types):
            for j, p in enumerate(paths):
                xs, ys, es = [], [], []
                for i, b in enumerate(blocks):
                    r = index.get((b, p, t))
                    if r is not None:
                        xs.append(i + (j - (len(paths) - 1) / 2) * width)
                        ys.append(r["score"])
                        es.append(r["init_std"])
                ax.bar(xs, ys, width, yerr=es, label=p, capsize=2)
            ax.set_xticks(range(len(blocks)), blocks, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"advisor score ({self.method}) per block and path, attn={t}",
                         fontsize=9)
            ax.axhline(0, color="black", linewidth=0.5)
            ax.legend(fontsize=7, ncol=len(paths))
        fig.tight_layout()
        return fig

    def save(self, out: Union[str, Path]) -> dict[str, Path]:
        """Write ``advice.csv``, ``advice.md``, ``advice.json`` and ``advice.png`` into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.to_csv(out / "advice.csv")}
        paths["md"] = out / "advice.md"
        paths["md"].write_text(self.to_markdown() + "\n")
        paths["json"] = out / "advice.json"
        paths["json"].write_text(json.dumps({"method": self.method, "meta": self.meta,
                                             "rows": self.rows}, indent=1))
        paths["png"] = out / "advice.png"
        self.figure().savefig(paths["png"], dpi=110)
        return paths


def advise(model: nn.Module, loader: Iterable, *, types: Sequence[str] = ("se",),
           paths: Iterable[str] = GATE_PATHS, stages: Optional[Iterable[int]] = None,
           method: str = "probe", batches: int = 4, inits: int = 2, lr: float = 0.05,
           seed: int = 0, loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
           bf16: bool = False, device: Optional[Union[str, torch.device]] = None) -> Advice:
    """Score every candidate placement of attention in ``model`` on a few batches of ``loader``.

    Args:
        model: a torchvision/timm ResNet or a plain resattn model (random or trained weights).
        loader: iterable of ``(x, y)`` batches; the first ``batches`` are used, the same ones for
            every mask initialisation.
        types: attention types to place (names of :data:`resattn.ATTN_NAMES`).
        paths: gate positions (:data:`GATE_PATHS`; ``dual`` = skip + branch).
        stages: 1-based stages whose blocks get candidates (default: all).
        method: ``'probe'`` or ``'grad'`` (module docstring).
        batches, inits: batches per initialisation and mask initialisations.
        lr: Adam step size of the probe (gate parameters only).
        seed: seeds the mask initialisations; the result is a function of (model, batches, seed).
        loss_fn: ``(logits, y) -> loss``; default cross-entropy.
        bf16: autocast to bfloat16 (CUDA or CPU) as a bf16 training run would.
        device: where to compute (default: the model's device).

    Returns:
        :class:`Advice` with one row per gate, best first. The model is returned to its original
        modules, buffers and train/eval mode.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; allowed: {', '.join(METHODS)}")
    for name, v in (("batches", batches), ("inits", inits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be an integer >= 1")
    loss_fn = loss_fn or F.cross_entropy
    ref = next(model.parameters())
    device = torch.device(device) if device is not None else ref.device
    data = _take_batches(loader, batches, device)
    was_training, home = model.training, ref.device
    names = {n for n, _ in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in names}
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        cset = insert_candidates(model, paths=paths, types=types, stages=stages)
    try:
        model.to(device).train()
        contrib, shapes = _contributions(model, cset, data, method=method, inits=inits, lr=lr,
                                         seed=seed, loss_fn=loss_fn, bf16=bf16, device=device)
        score, init_std, batch_std = _scores(contrib, method)
        flops = _gate_flops(cset.candidates, shapes)
        params = [sum(p.numel() for p in g) for g in cset.gate_parameters()]
        seconds = time.perf_counter() - t0
    finally:
        cset.remove()
        model.to(home)
        with torch.no_grad():
            state = model.state_dict()
            for k, v in buffers.items():
                state[k].copy_(v)
        model.train(was_training)
    rows = []
    for k, c in enumerate(cset.candidates):
        rows.append({"block": c.block, "stage": c.stage, "index": c.index, "path": c.path,
                     "attn": c.attn, "score": float(score[k]), "init_std": float(init_std[k]),
                     "batch_std": float(batch_std[k]), "params": params[k], "flops": flops[k]})
    order = sorted(range(len(rows)), key=lambda k: (-rows[k]["score"], k))
    rows = [dict(rank=i + 1, **rows[k]) for i, k in enumerate(order)]
    meta = {"method": method, "types": list(dict.fromkeys(c.attn for c in cset.candidates)),
            "paths": list(resolve_paths(paths)), "batches": len(data), "inits": inits,
            "batch_size": int(data[0][0].shape[0]), "lr": lr, "seed": seed, "bf16": bf16,
            "device": str(device), "seconds": seconds, "candidates": len(rows)}
    return Advice(rows, method, meta)


def _contributions(model: nn.Module, cset: "CandidateSet", data: list, *, method: str, inits: int,
                   lr: float, seed: int, loss_fn: Callable, bf16: bool, device: torch.device
                   ) -> tuple[torch.Tensor, dict[int, tuple[int, ...]]]:
    """Each gate's contribution on each batch of each mask initialisation, (inits, batches,
    gates) in float64: ``grad``: the loss gradient of its gamma; ``probe``: the first-order loss
    decrease its own Adam update bought, -g . delta. Also the input shape (C, H, W) each gate saw."""
    shapes: dict[int, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(id(module), tuple(args[0].shape[1:]))

    hooks = [c.gate.register_forward_pre_hook(record) for c in cset.candidates]
    groups = cset.gate_parameters()
    flat = [p for g in groups for p in g]
    flat_index = {id(p): i for i, p in enumerate(flat)}
    group_index = [[flat_index[id(p)] for p in g] for g in groups]
    contrib = torch.zeros(inits, len(data), len(cset.candidates), dtype=torch.float64)
    try:
        for r in range(inits):
            cset.reset(seed * 1000 + r)
            opt = torch.optim.Adam(flat, lr=lr) if method == "probe" else None
            for b, (x, y) in enumerate(data):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(model(x), y)
                grads = torch.autograd.grad(loss.float(), flat, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads)]
                if method == "grad":
                    step = [grads[flat_index[id(c.gate.gamma)]].sum() for c in cset.candidates]
                else:
                    before = [p.detach().clone() for p in flat]
                    for p, g in zip(flat, grads):
                        p.grad = g
                    opt.step()
                    terms = [-(g.double() * (p.detach() - p0).double()).sum()
                             for p, g, p0 in zip(flat, grads, before)]
                    step = [sum(terms[i] for i in idx) for idx in group_index]
                contrib[r, b] = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device)
                                             for v in step]).cpu()
            for h in hooks:  # the shapes are known after the first initialisation
                h.remove()
            hooks = []
    finally:
        for h in hooks:
            h.remove()
    return contrib, shapes


def _scores(contrib: torch.Tensor, method: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(score, spread over initialisations, spread over batches) per gate from
    :func:`_contributions`: ``grad``: |mean over batches| per initialisation; ``probe``: the
    summed loss decrease per initialisation; both averaged over initialisations."""
    inits, n_batches, n = contrib.shape
    zeros = torch.zeros(n, dtype=torch.float64)
    if method == "grad":
        per_init = contrib.mean(1).abs()
        batch_std = contrib.std(1, unbiased=True).mean(0) if n_batches > 1 else zeros
    else:
        per_init = contrib.sum(1)
        batch_std = (contrib.std(1, unbiased=True).mean(0) * math.sqrt(n_batches)
                     if n_batches > 1 else zeros)
    init_std = per_init.std(0, unbiased=True) if inits > 1 else zeros
    return per_init.mean(0), init_std, batch_std


# --------------------------------------------------------------------------------------------
# applying the advice
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """A block's chosen pattern: ``pattern`` in branch/post/pre/dual with its attention types
    (``attn`` for 1-3; ``skip_attn``/``res_attn`` for dual, either may be None)."""

    block: str
    pattern: str
    attn: Optional[str] = None
    skip_attn: Optional[str] = None
    res_attn: Optional[str] = None

    def config(self) -> AttentionConfig:
        if self.pattern == "dual":
            return AttentionConfig(pattern="dual", skip_attn=self.skip_attn, res_attn=self.res_attn)
        return AttentionConfig(pattern=self.pattern, attn=self.attn, modulation="near_identity")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def select_placements(rows: Sequence[dict[str, Any]], k: int) -> list[Placement]:
    """The first ``k`` gates of ``rows`` (best first) that one pattern per block can hold: a
    gate is skipped when its block already has an incompatible one (branch + post, say) or one
    on the same path. ``skip`` + ``branch`` make a dual placement. Gates with score <= 0 are
    never opened."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r} must be an integer >= 0")
    chosen: dict[str, dict[str, str]] = {}
    taken = 0
    for r in rows:
        if taken == k:
            break
        if r["score"] <= 0:
            break
        have = chosen.setdefault(r["block"], {})
        want = set(have) | {r["path"]}
        if r["path"] in have or want not in _COMPATIBLE:
            continue
        have[r["path"]] = r["attn"]
        taken += 1
    out = []
    for block, gates in chosen.items():
        if not gates:
            continue
        if "skip" in gates:
            out.append(Placement(block, "dual", skip_attn=gates["skip"],
                                 res_attn=gates.get("branch")))
        else:
            (path, attn), = gates.items()
            out.append(Placement(block, path, attn=attn))
    return out


def apply_placements(model: nn.Module, placements: Iterable[Union[Placement, dict[str, Any]]]
                     ) -> nn.Module:
    """Open ``placements`` in ``model``, in place: foreign blocks become plain resattn blocks
    around their own modules (:func:`resattn.tools.convert.convert` with pattern ``none``), then each
    chosen block gets its pattern with near-identity gates at gamma = 0 (the model still
    computes what it did). Returns the model.

    Raises:
        ValueError: a block name not in the model, or a block that already has attention.
    """
    placements = [p if isinstance(p, Placement) else Placement(**p) for p in placements]
    infos = {i.name: i for i in find_residual_blocks(model)}
    for p in placements:
        if p.block not in infos:
            raise ValueError(f"placement block {p.block!r} is not a residual block of the model; "
                             f"blocks: {', '.join(infos)}")
        if infos[p.block].source == "resattn" and infos[p.block].module.pattern != "none":
            raise ValueError(f"block {p.block!r} already has attention")
    if any(i.source != "resattn" for i in infos.values()):
        convert(model, "none")
    for p in placements:
        block = model.get_submodule(p.block)
        cfg = p.config()
        c_in, c_out = _channels(block)
        paths = attention_paths(cfg, c_in, c_out)
        ref = next(block.parameters())
        for m in paths.values():
            m.to(device=ref.device, dtype=ref.dtype).train(block.training)
        block.set_attention(cfg, paths)
    model.resattn_advice = [p.to_dict() for p in placements]
    return model


# --------------------------------------------------------------------------------------------
# data and files
# --------------------------------------------------------------------------------------------

def dataset_batches(dataset: Any, *, batch_size: int = 128, batches: int = 4, seed: int = 0,
                    in_chans: Optional[int] = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` batches of ``batch_size`` drawn without replacement from ``dataset`` (a
    dataset of ``(x, y)`` items) with a seeded generator. ``in_chans``: repeat a one-channel
    image to that many channels (a grey data set into an RGB network)."""
    n = len(dataset)
    take = min(n, batch_size * batches)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:take].tolist()
    out = []
    for start in range(0, take, batch_size):
        items = [dataset[i] for i in order[start:start + batch_size]]
        x = torch.stack([torch.as_tensor(i[0]) for i in items])
        y = torch.as_tensor([int(i[1]) for i in items])
        if in_chans is not None and x.shape[1] == 1 and in_chans != 1:
            x = x.expand(-1, in_chans, -1, -1).contiguous()
        out.append((x, y))
    return out


ADVICE_FORMAT = "resattn-advice/1"


def save_applied(model: nn.Module, path: Union[str, Path]) -> Path:
    """Save a model returned by :meth:`Advice.apply` / :func:`apply_placements`: its
    architecture (as recorded by :func:`resattn.load_model`), its placements and its weights.
    :func:`load_applied` rebuilds it."""
    if not hasattr(model, "resattn_advice"):
        raise ValueError("save_applied needs a model returned by apply_placements")
    arch = getattr(model, "resattn_arch", None)
    if arch is None:
        raise ValueError("save_applied needs a model built by resattn.load_model (it records "
                         "the architecture)")
    from .weights import clean_state_dict
    path = Path(path)
    torch.save({"format": ADVICE_FORMAT, "arch": arch,
                "model_kwargs": dict(getattr(model, "resattn_model_kwargs", {}) or {}),
                "placements": list(model.resattn_advice),
                "state_dict": clean_state_dict(model.state_dict())}, path)
    return path


def load_applied(path: Union[str, Path], map_location: Any = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_applied` (architecture, placements, weights)."""
    from .weights import load_model
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != ADVICE_FORMAT:
        raise ValueError(f"{str(path)!r} is not a {ADVICE_FORMAT} file")
    model, _ = load_model(ckpt["arch"], **ckpt["model_kwargs"])
    apply_placements(model, ckpt["placements"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model
