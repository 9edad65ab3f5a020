"""Gate diagnostics: is the skip path still open, and how much does each path carry?

Per residual block and per recorded forward, with x the block input, skip(x) = x or
``downsample(x)``, F the residual branch, s the skip path's contribution and r the residual path's
(all norms Frobenius over the whole batch tensor):

    pattern  s                    r                 skip_gain
    none     skip(x)              F(x)              1
    branch   skip(x)              A(F(x))           1
    pre      skip(x)              F(A(x))           1
    post     skip(x)              F(x)              ||A(z)|| / ||z||,  z = skip(x) + F(x)
    dual     A_s(skip(x))         A_r(F(x))         ||A_s(skip(x))|| / ||skip(x)||

    residual_share    = ||r|| / (||s|| + ||r||)
    gate_energy/PATH  = ||A(z)|| / ||z|| for each gated path (attn, skip_attn, res_attn)
    gamma/PATH        = mean effective gamma of each near-identity path

In ``post`` the identity passes through the one gate on the sum, so the gate's gain is the skip's
gain (s and r are then taken before the gate, which scales both).

Why the default ``threshold=0.7`` for :meth:`GateMonitor.closing`: a near-identity skip
z * (1 + gamma * m(z)) with a mask m in [0, 1] and the default bound ``skip_gamma_max=0.25``
keeps its gain in [0.75, 1.25], so it can never fall below 0.7; a sigmoid ``gate`` on the skip
starts near 0.5 (masks about sigmoid(0)) and, stacked over L blocks, shrinks the signal by about
0.5^L. A gain under 0.7 therefore means a skip that is closing, not one being tuned.

Everything is computed in forward hooks (the blocks' forward is untouched); the hooks on the
blocks and their gated paths are registered only for the recorded forwards (every ``every``-th) by
a forward pre-hook on the model and removed by its forward hook (also when the forward raises), so
the other forwards run the fused gated paths without the extra pass a hook on a Modulation costs.
Values are computed under ``torch.no_grad()`` at the moment the tensor is produced (in-place
activations change tensors later), kept as detached tensors on the model's device and turned into Python floats only in
:meth:`GateMonitor.summary`, so a monitor can stay on during training on a GPU without a
synchronisation per step.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from ..layers.blocks import ResidualBlock

__all__ = ["GateMonitor", "DEFAULT_THRESHOLD"]

#: Skip gains under this are reported by :meth:`GateMonitor.closing` (see the module docstring).
DEFAULT_THRESHOLD = 0.7

_PATHS = ("attn", "skip_attn", "res_attn")


def _ratio(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    """num / den, or ``empty`` where den is 0 (a zero tensor: a zero-initialised branch, an all-zero
    input), so that 0/0 never turns an epoch's mean into NaN."""
    den = torch.as_tensor(den)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny),
                       torch.full_like(den, empty))


def _norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float32)


class _BlockProbe:
    """Hooks of one block, in place only during a recorded forward (:meth:`install` /
    :meth:`remove`); norms of the current forward in ``self.norms``."""

    def __init__(self, monitor: "GateMonitor", name: str, block: ResidualBlock) -> None:
        self.monitor = monitor
        self.name = name
        self.block = block
        self.pattern = block.pattern
        self.paths = block.gated_paths()
        self.norms: dict[str, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = []
        p = self.pattern
        self.skip_gated = p == "dual" and "skip_attn" in self.paths
        self.res_gate = {"branch": "attn", "dual": "res_attn"}.get(p)
        if self.res_gate not in self.paths:
            self.res_gate = None
        #: the monitored model is this block: its own pre/post hooks are called by the monitor's
        #: model-level hooks (a hook registered during a forward's pre-hooks would miss it)
        self.is_root = block is monitor.model

    def install(self) -> None:
        """Register the hooks for one forward."""
        hook = self.handles.append
        block = self.block
        if not self.skip_gated:  # ||skip(x)||: block input, or the shortcut's output
            if block.downsample is None:
                if not self.is_root:
                    hook(block.register_forward_pre_hook(self._on_input))
            else:
                hook(block.downsample.register_forward_hook(self._on_shortcut))
        if self.res_gate is None:  # r = F's output (F(x), or F(A(x)) in pre)
            hook(block.branch_output().register_forward_hook(self._on_branch))
        for path, mod in self.paths.items():
            hook(mod.register_forward_hook(self._gate_hook(path)))
        if not self.is_root:
            hook(block.register_forward_hook(self._on_output))

    def _on_input(self, module: nn.Module, args: tuple) -> None:
        if not self.skip_gated and self.block.downsample is None:
            with torch.no_grad():
                self.norms["skip_in"] = _norm(args[0])

    def _on_shortcut(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        with torch.no_grad():
            self.norms["skip_in"] = _norm(out)

    def _on_branch(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        with torch.no_grad():
            self.norms["branch"] = _norm(out)

    def _gate_hook(self, path: str) -> Callable[..., None]:
        def on_gate(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            with torch.no_grad():
                self.norms[f"{path}.in"] = _norm(args[0])
                self.norms[f"{path}.out"] = _norm(out)
        return on_gate

    def _on_output(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        n = self.norms
        with torch.no_grad():
            metrics: dict[str, Any] = {}
            skip_in = n["skip_attn.in"] if self.skip_gated else n["skip_in"]
            s = n["skip_attn.out"] if self.skip_gated else skip_in
            r = n[f"{self.res_gate}.out"] if self.res_gate else n["branch"]
            if self.skip_gated:
                metrics["skip_gain"] = _ratio(s, skip_in, 1.0)
            elif self.pattern == "post" and "attn" in self.paths:
                metrics["skip_gain"] = _ratio(n["attn.out"], n["attn.in"], 1.0)
            else:
                metrics["skip_gain"] = 1.0
            metrics["residual_share"] = _ratio(r, s + r, 0.0)
            for path, mod in self.paths.items():
                metrics[f"gate_energy/{path}"] = _ratio(n[f"{path}.out"], n[f"{path}.in"], 1.0)
                gamma = mod.effective_gamma()
                if gamma is not None:
                    metrics[f"gamma/{path}"] = gamma.detach().float().mean()
        n.clear()
        self.monitor._add(self.name, metrics)

    def remove(self) -> None:
        """Remove the hooks and drop the norms of an unfinished forward."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.norms.clear()


class GateMonitor:
    """Per-block skip gain, residual share, gate energy and gamma, from forward hooks.

    Args:
        model: any model holding resattn :class:`~resattn.layers.blocks.ResidualBlock`s (created or
            converted models).
        every: record every ``every``-th forward of ``model`` (1: all); train and eval alike.
        threshold: skip gains under it are "closing" (see the module docstring for 0.7).

    Use as a context manager (``with GateMonitor(model) as mon: ...``) or call :meth:`attach` and
    :meth:`detach`. :meth:`summary` gives means since the last reset; each summary taken with
    ``reset=True`` is appended to :attr:`history`.

    Raises:
        ValueError: ``model`` has no resattn residual block (convert foreign models first),
            ``every`` < 1, or ``threshold`` not in (0, 1].
    """

    def __init__(self, model: nn.Module, *, every: int = 1,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be an integer >= 1")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r} must be in (0, 1]")
        self.model = model
        self.blocks = self._find_blocks()
        self.every = every
        self.threshold = threshold
        self.history: list[dict[str, dict[str, float]]] = []
        self._probes: list[_BlockProbe] = []
        self._root: Optional[RemovableHandle] = None
        self._root_end: Optional[RemovableHandle] = None
        self._forwards = 0
        self._recording = False
        #: forwards recorded since the last reset
        self.num_recorded = 0
        self._sums: dict[str, dict[str, Any]] = defaultdict(dict)
        self._counts: dict[str, dict[str, int]] = defaultdict(dict)

    # -- hooks ---------------------------------------------------------------------------------
    def _find_blocks(self) -> list[tuple[str, ResidualBlock]]:
        blocks = [(n, m) for n, m in self.model.named_modules() if isinstance(m, ResidualBlock)]
        if not blocks:
            raise ValueError(f"model={type(self.model).__name__} has no resattn ResidualBlock "
                             "to monitor; convert torchvision/timm models first "
                             "(resattn.tools.convert.convert(model, pattern))")
        return blocks

    @property
    def attached(self) -> bool:
        """True while the hooks are in place."""
        return self._root is not None

    def attach(self) -> "GateMonitor":
        """Register the hooks (no-op when attached); blocks and their patterns are read now.
        Returns self."""
        if self.attached:
            return self
        self.blocks = self._find_blocks()  # the model may have been converted since
        self._probes = [_BlockProbe(self, name, block) for name, block in self.blocks]
        self._root = self.model.register_forward_pre_hook(self._on_model_forward)
        # always_call: runs even when the forward raises, so no block hook outlives it
        self._root_end = self.model.register_forward_hook(self._on_model_end, always_call=True)
        return self

    def detach(self) -> None:
        """Remove every hook; the recorded values stay."""
        self._remove_block_hooks()
        self._probes = []
        for handle in (self._root, self._root_end):
            if handle is not None:
                handle.remove()
        self._root = self._root_end = None

    def __enter__(self) -> "GateMonitor":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def _remove_block_hooks(self) -> None:
        for probe in self._probes:
            probe.remove()
        self._recording = False

    def _on_model_forward(self, module: nn.Module, args: tuple) -> None:
        # Block and path hooks exist only during a recorded forward: a hook on a Modulation
        # makes its fused path compute A(z) once more for the hook (see Modulation.terms).
        self._remove_block_hooks()  # left by a forward that raised before the model-level end
        recording = self._forwards % self.every == 0
        self._forwards += 1
        if not recording:
            return
        self.num_recorded += 1
        self._recording = True
        for probe in self._probes:
            probe.install()
            if probe.is_root:
                probe._on_input(module, args)

    def _on_model_end(self, module: nn.Module, args: tuple, out: Any) -> None:
        # called with out=None when the forward raised (always_call): record nothing then
        if self._recording and out is not None:
            for probe in self._probes:
                if probe.is_root:
                    probe._on_output(module, args, out)
        self._remove_block_hooks()

    def _add(self, block: str, metrics: dict[str, Any]) -> None:
        sums, counts = self._sums[block], self._counts[block]
        for key, value in metrics.items():
            if key in sums:
                sums[key] = sums[key] + value
            else:
                sums[key] = value
            counts[key] = counts.get(key, 0) + 1

    # -- results -------------------------------------------------------------------------------
    def summary(self, reset: bool = True) -> dict[str, dict[str, float]]:
        """Means since the last reset: ``{block_name: {metric: value}}`` (blocks in model order;
        empty when nothing was recorded). One device synchronisation for all values.

        With ``reset`` the accumulators are cleared and the summary is appended to
        :attr:`history`."""
        entries = [(b, k, v) for b, _ in self.blocks for k, v in self._sums.get(b, {}).items()]
        tensors = [v.float() for _, _, v in entries if isinstance(v, torch.Tensor)]
        if tensors:
            device = tensors[0].device
            values = iter(torch.stack([t.to(device) for t in tensors]).tolist())
        out: dict[str, dict[str, float]] = {}
        for block, key, v in entries:
            total = next(values) if isinstance(v, torch.Tensor) else float(v)
            out.setdefault(block, {})[key] = total / self._counts[block][key]
        if reset:
            self._sums.clear()
            self._counts.clear()
            self.num_recorded = 0
            if out:
                self.history.append(out)
        return out

    def closing(self, summary: Optional[dict[str, dict[str, float]]] = None
                ) -> list[tuple[str, float]]:
        """``(block_name, skip_gain)`` for every block whose skip gain is under ``threshold``.

        Args:
            summary: a :meth:`summary` result; by default the values recorded since the last
                reset (not resetting them), or the last entry of :attr:`history` when there are
                none.
        """
        if summary is None:
            summary = self.summary(reset=False) or (self.history[-1] if self.history else {})
        return [(name, m["skip_gain"]) for name, m in summary.items()
                if m.get("skip_gain", 1.0) < self.threshold]

    def __repr__(self) -> str:
        return (f"GateMonitor({len(self.blocks)} blocks, every={self.every}, "
                f"threshold={self.threshold}, attached={self.attached})")
