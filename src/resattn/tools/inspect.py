"""A table of a model's residual blocks: where the attention is, what kind, its gamma, its cost.

Works on models from ``create_model``, converted torchvision/timm models and models from
``load_model``; blocks not yet converted (torchvision/timm) are listed as pattern ``none``.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..layers.blocks import ResidualBlock
from .convert import find_residual_blocks
from ..layers.modulation import Modulation

__all__ = ["inspect_model", "format_table"]

_PATH_LABELS = {"attn": "attn", "skip_attn": "skip", "res_attn": "res"}


def _count(modules: list[nn.Module]) -> int:
    seen = {id(p): p.numel() for m in modules for p in m.parameters()}
    return sum(seen.values())


def inspect_model(model: nn.Module) -> list[dict[str, Any]]:
    """One row per residual block, in order.

    Row keys: ``name`` (``'layer3.0'``), ``stage`` (1-based), ``index`` (0-based in the stage),
    ``block`` (class, with ``torchvision.``/``timm.`` for blocks not converted), ``pattern``,
    ``attention`` (``'skip=eca(near_identity) res=cbam(near_identity)'``, ``'-'`` without),
    ``gamma`` (path -> mean effective gamma, near-identity paths only), ``backbone_params``
    (parameters outside the gated paths, a timm block's own ``se`` included),
    ``attention_params`` (attention modules and gammas).

    Raises:
        ValueError: ``model`` has no residual block.
    """
    infos = find_residual_blocks(model)
    if not infos:
        raise ValueError(f"model={type(model).__name__} has no residual block (torchvision/timm "
                         "BasicBlock or Bottleneck, or resattn ResidualBlock)")
    rows = []
    for info in infos:
        block = info.module
        if isinstance(block, ResidualBlock):
            paths: dict[str, Modulation] = block.gated_paths()
            pattern, kind = block.pattern, type(block).__name__
        else:
            paths, pattern = {}, "none"
            kind = f"{info.source}.{type(block).__name__}"
        attention_params = _count(list(paths.values()))
        backbone_params = _count([block]) - attention_params
        attention = " ".join(f"{_PATH_LABELS[p]}={m.attn_type}({m.mode})" for p, m in paths.items())
        gamma = {}
        for p, m in paths.items():
            g = m.effective_gamma()
            if g is not None:
                gamma[_PATH_LABELS[p]] = g.detach().float().mean().item()
        rows.append({
            "name": info.name, "stage": info.stage, "index": info.index, "block": kind,
            "pattern": pattern, "attention": attention or "-", "gamma": gamma,
            "backbone_params": backbone_params, "attention_params": attention_params,
        })
    return rows


def _gamma_text(gamma: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in gamma.items()) or "-"


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned plain-text table of :func:`inspect_model` rows, with a totals line."""
    header = ["block", "stage", "idx", "type", "pattern", "attention", "gamma", "backbone",
              "attention params"]
    body = [[r["name"], str(r["stage"]), str(r["index"]), r["block"], r["pattern"], r["attention"],
             _gamma_text(r["gamma"]), f"{r['backbone_params']:,}", f"{r['attention_params']:,}"]
            for r in rows]
    backbone = sum(r["backbone_params"] for r in rows)
    attention = sum(r["attention_params"] for r in rows)
    with_attn = sum(1 for r in rows if r["pattern"] != "none")
    totals = ["total", "", "", "", "", "", "", f"{backbone:,}", f"{attention:,}"]
    numeric = {1, 2, 7, 8}
    widths = [max(len(line[i]) for line in [header, *body, totals]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    note = f"  {len(rows)} blocks, {with_attn} with attention"
    if backbone:
        note += f", attention adds {100.0 * attention / backbone:.2f}% to the blocks' parameters"
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(totals) + note])
