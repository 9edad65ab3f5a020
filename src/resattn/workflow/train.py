"""One training run: model from a config, SGD/AdamW, warm-up + cosine, checkpoints, metrics.

A run writes into its own folder:

    metrics.jsonl    one JSON object per line: ``{"type": "step", ...}`` every ``log_every``
                     steps and ``{"type": "epoch", ...}`` per epoch (losses, accuracies, learning
                     rate, images/s, and the gate diagnostics of :class:`resattn.tools.monitor.GateMonitor`)
    checkpoint.pt    written atomically after every epoch (model, optimizer, scheduler, epoch);
                     ``resume=True`` continues from it
    result.json      the summary: status (``finished`` | ``diverged``), best/final test accuracy,
                     parameters, MFLOPs per image, train time, images/s

What runs with one ``seed`` share (so runs of different variants with one seed are *paired*):
the training subset and test subset (drawn by :func:`resattn.workflow.data.load_dataset`), the flipped
labels of ``label_noise`` (a generator seeded by ``seed``), the data order (the sampler's generator,
seeded by (seed, epoch)) and the augmentation draws (a generator seeded by (seed, epoch)). None of
these touch the global RNG, which is seeded with ``seed`` right before the model is built and
gives only the initial weights: layers that two variants have in common start equal up to the
first layer where they differ, the rest does not. Because order and augmentation are tied to
(seed, epoch), a run resumed at an epoch boundary sees the same batches as an uninterrupted one;
with ``deterministic=True`` on the CPU both reach the same final weights.

In-memory data sets (Fashion-MNIST, CIFAR, digits) live on the training device: a CUDA run copies
them there once, and cuts and augments its batches there (:func:`_augment`: one gather per batch;
the draws stay on a CPU generator, so pairing by seed does not depend on the device).

Step records (every ``log_every`` steps) hold, over the steps since the previous record: the mean
loss ``loss``, the largest single-step loss ``loss_max``, the train accuracy ``acc`` (%), the
largest gradient norm before clipping ``grad_norm``; and ``lr``, ``images_per_s``.
:mod:`resattn.workflow.stability` reads them. Records go to the metrics sinks of :mod:`resattn.workflow.sinks`
(``metrics.jsonl`` always, TensorBoard with ``tensorboard=True``).

Under ``torchrun --nproc_per_node=N`` the run uses DistributedDataParallel (gloo on CPU, NCCL on
CUDA) and a DistributedSampler; only rank 0 writes metrics and checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from .data import DataBundle, load_dataset
from ..utils.machine import device_name, machine_description
from ..models import create_model, is_model
from ..layers.modulation import Modulation, gamma_names
from ..utils.precision import DEFAULT_PRECISION, resolve_precision, validate_precision
from .sinks import finite_or_null as _finite_or_null
from ..tools.weights import CheckpointError, check_state_dict, read_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "RunResult", "train", "param_groups", "count_mflops", "attention_parameters"]

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """Everything that defines one run. ``model_kwargs`` go to :func:`resattn.create_model`
    (``pattern``, ``attn``, ``skip_modulation``, ...); ``num_classes``/``in_chans`` come from the
    data set unless given.

    ``precision``: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA and on CPUs with
    native bf16 units, see :mod:`resattn.utils.precision`); the run records the resolved value.
    ``bf16`` is the older spelling (configs, checkpoints and study files written before
    ``precision`` existed): ``bf16=True`` means ``precision='bf16'``, ``bf16=False``
    ``precision='fp32'``; construction turns it into ``precision`` (``bf16`` is then None and
    :meth:`to_dict` leaves it out).

    Raises (from :meth:`validate`):
        ValueError: a bad value, naming the field and the allowed values.
    """

    model: str = "cifar_resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    epochs: int = 2
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gamma_lr_scale: float = 1.0
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.0
    precision: str = DEFAULT_PRECISION
    bf16: Optional[bool] = None
    grad_clip: Optional[float] = None
    augment: bool = True
    label_noise: float = 0.0
    seed: int = 0
    deterministic: bool = False
    channels_last: bool = True
    compile: bool = False
    log_every: int = 20
    monitor: bool = True
    monitor_every: int = 10
    skip_gain_threshold: float = 0.7
    init_from: Optional[str] = None
    attn_only_epochs: int = 0
    device: str = "auto"
    num_workers: int = 2
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bf16, bool):  # the older spelling
            said = "bf16" if self.bf16 else "fp32"
            if self.precision not in (DEFAULT_PRECISION, said):
                raise ValueError(f"bf16={self.bf16} contradicts precision={self.precision!r}; "
                                 "set precision alone (auto, fp32 or bf16)")
            self.precision = said
            self.bf16 = None

    def validate(self) -> "TrainConfig":
        if not is_model(self.model):
            from ..models import list_models
            raise ValueError(f"model={self.model!r} is not registered; allowed: {', '.join(list_models())}")
        from .data import DATASETS
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not allowed; allowed: {', '.join(DATASETS)}")
        for name in ("train_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be an integer >= 1, or None for the whole split")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
        for name in ("epochs", "batch_size", "log_every", "monitor_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        for name in ("lr", "gamma_lr_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}={v!r} must be a finite number > 0")
        for name in ("weight_decay", "warmup_epochs", "momentum"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} must be a finite number >= 0")
        if self.tensorboard is True:
            import importlib.util
            if importlib.util.find_spec("tensorboard") is None:
                raise ValueError("tensorboard=True needs the 'tensorboard' package: "
                                 "pip install 'resattn[tensorboard]' (or pip install tensorboard)")
        if not (isinstance(self.label_noise, (int, float)) and 0.0 <= self.label_noise < 1.0):
            raise ValueError(f"label_noise={self.label_noise!r} must be a fraction in [0, 1)")
        validate_precision(self.precision)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip={self.grad_clip!r} must be > 0 or None")
        if not 0 <= self.attn_only_epochs < self.epochs + 1:
            raise ValueError(f"attn_only_epochs={self.attn_only_epochs!r} must be in 0..epochs")
        if not (self.device in ("auto", "cpu", "cuda") or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device={self.device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r}: CUDA is not available on this machine; "
                             "use device='cpu' or 'auto'")
        if self.bf16 is not None:
            raise ValueError(f"bf16={self.bf16!r} must be true or false (or left out: precision)")
        for name in ("deterministic", "augment", "channels_last", "monitor", "download",
                     "tensorboard", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every option but the ``bf16`` alias (``precision`` says it)."""
        d = asdict(self)
        if d.get("bf16") is None:
            del d["bf16"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; allowed: {', '.join(sorted(names))}")
        return cls(**d)


#: Options that may differ when a run is resumed (they do not change what is trained).
RESUMABLE_CHANGES = frozenset({"log_every", "monitor", "monitor_every", "skip_gain_threshold",
                               "device", "num_workers", "data_dir", "download",
                               "tensorboard", "compile"})


def config_changes(saved: dict[str, Any], config: "TrainConfig") -> dict[str, tuple[Any, Any]]:
    """Options of ``config`` that differ from a saved run's (``RESUMABLE_CHANGES`` aside). A
    saved config without ``precision`` (written before it existed) has ``bf16`` say it; ``auto``
    compares as what it resolves to on this machine (``fp32`` or ``bf16``)."""
    saved = _with_precision(saved, resolve=True)
    now = _with_precision(_plain(config.to_dict()), resolve=True)
    return {k: (saved.get(k), v) for k, v in now.items()
            if k not in RESUMABLE_CHANGES and saved.get(k) != v}


def _with_precision(d: dict[str, Any], *, resolve: bool = False) -> dict[str, Any]:
    """``d`` with ``precision`` (from ``bf16`` when missing) and without the ``bf16`` alias.
    ``resolve``: ``auto`` replaced by what it means on ``d``'s device here (``fp32`` or ``bf16``),
    so that a run asked for as ``auto`` and one asked for as what ``auto`` gives compare equal."""
    d = dict(d)
    if "precision" not in d:
        d["precision"] = "bf16" if d.get("bf16") else "fp32"
    d.pop("bf16", None)
    if resolve and d["precision"] == "auto":
        d["precision"] = resolve_precision("auto", _select_device(str(d.get("device") or "auto")))
    return d


@dataclass
class RunResult:
    """Summary of one run, as written to ``result.json``."""

    status: str
    epochs_done: int
    best_acc: float
    final_acc: float
    params: int
    mflops: float
    train_time_s: float
    images_per_s: float
    out_dir: str
    error: Optional[str] = None
    precision: str = "fp32"  # what ran: fp32 or bf16 (``auto`` resolved on the run's device)


# ----------------------------------------------------------------------------- helpers

def attention_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that belong to attention paths (attention modules and gamma)."""
    seen: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, Modulation):
            for p in m.parameters():
                seen[id(p)] = p
    return list(seen.values())


def param_groups(model: nn.Module, weight_decay: float, lr: float, gamma_lr_scale: float = 1.0
                 ) -> list[dict[str, Any]]:
    """Optimizer groups: weight decay on conv/linear weights only; none on norms, biases and
    gamma (all parameters with ndim <= 1, and every gamma: :func:`resattn.layers.modulation.gamma_names`,
    which is what ``ResNet.no_weight_decay`` returns); gamma at ``lr * gamma_lr_scale``.

    timm's ``param_groups_weight_decay`` draws the same line between decay and no decay, but it
    leaves out frozen parameters and empty groups and orders the groups otherwise; these groups
    stay as they were so that checkpoints' optimizer states still load."""
    gamma = gamma_names(model)
    decay, no_decay, gammas = [], [], []
    for name, p in model.named_parameters():
        if name in gamma:
            gammas.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"}]
    if gammas:
        groups.append({"params": gammas, "weight_decay": 0.0, "lr": lr * gamma_lr_scale,
                       "name": "gamma"})
    return groups


def count_mflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """MFLOPs for one image of shape (C, H, W), counted by ``torch.utils.flop_counter``
    (convolutions and matrix products, a multiply-add counted as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e6


def _lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up from 1/warmup to 1, then cosine decay to 0 at ``total_steps``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and horizontal flip, each image its own, on a batch
    (N, C, H, W) on any device, in one gather. The draws come from ``gen`` (a CPU generator):
    per image a shift (dy, dx) in [0, 2 pad] and a flip with probability 1/2, so the same
    generator state gives the same batch wherever ``x`` lives."""
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).to(x.device)
    flips = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = shifts[:, :1] + ar_h  # (N, H): padded row of each output row
    cols = shifts[:, 1:] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (N, W), flipped
    wp = w + 2 * pad
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


def _plain(value: Any) -> Any:
    """A picklable, JSON-able copy: callables (user attention factories, placement rules) become
    their names; such a run's checkpoint restores weights but cannot rebuild the model alone."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    return value




def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Dist:
    """Rank/world from torchrun's environment; a no-op for single-process runs."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        self.owns_group = False
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        return self.all_sum([float(flag)], device)[0] > 0

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def _select_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return torch.device(name)


def _batches(bundle_split, sampler: Iterable[int], batch_size: int, in_memory: bool,
             num_workers: int, *, skip_single: bool = False
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``sampler``'s indices: slices of the in-memory tensors, or a DataLoader.
    ``skip_single``: drop a last batch of one image (BatchNorm cannot train on it)."""
    if in_memory:
        x, y = bundle_split.tensors
        idx = torch.tensor(list(iter(sampler)), dtype=torch.long).to(x.device)
        batches = ((x[j], y[j]) for j in (idx[i:i + batch_size] for i in range(0, len(idx), batch_size)))
    else:
        batches = iter(DataLoader(bundle_split, batch_size=batch_size, sampler=sampler,
                                  num_workers=num_workers, drop_last=False))
    for xb, yb in batches:
        if not (skip_single and len(yb) == 1):
            yield xb, yb


def _tensors(split) -> Optional[TensorDataset]:
    """The TensorDataset behind an in-memory split (or a Subset of one)."""
    if isinstance(split, TensorDataset):
        return split
    if isinstance(split, Subset) and isinstance(split.dataset, TensorDataset):
        idx = torch.as_tensor(split.indices)
        return TensorDataset(*(t[idx] for t in split.dataset.tensors))
    return None


@torch.no_grad()
def evaluate(model: nn.Module, split, *, batch_size: int, device: torch.device, in_memory: bool,
             bf16: bool = False, channels_last: bool = False, ddp: Optional[_Dist] = None,
             num_workers: int = 0, precision: Optional[str] = None) -> tuple[float, float]:
    """Test loss (mean cross-entropy) and top-1 accuracy in % on ``split`` (sharded over ranks).
    ``precision`` (``fp32``, ``bf16``, ``auto``; ``bf16=True`` is the older spelling of
    ``'bf16'``) sets the autocast."""
    from ..utils.precision import autocast
    precision = precision or ("bf16" if bf16 else "fp32")
    model.eval()
    world, rank = (ddp.world, ddp.rank) if ddp else (1, 0)
    indices = range(rank, len(split), world)  # each rank takes rank::world, no padding
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for x, y in _batches(split, indices, batch_size, in_memory, num_workers):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    loss_sum, correct, count = (ddp.all_sum([loss_sum, correct, count], device) if ddp
                                else (loss_sum, correct, count))
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


# ----------------------------------------------------------------------------- the run

@dataclass
class _Built:
    model: nn.Module
    arch: str
    model_kwargs: dict[str, Any]
    convert_kwargs: Optional[dict[str, Any]]


def build_model(config: TrainConfig, bundle: DataBundle) -> _Built:
    """The model of a run and what rebuilds it (saved in checkpoints).

    ``init_from`` may be a resattn checkpoint (from ``resattn convert`` or ``resattn train``: the
    model is rebuilt from it, converted ones included), or a ``state_dict`` path / ``resnet*``
    name loaded into ``config.model`` (:func:`resattn.tools.weights.load_pretrained`). A classifier
    whose size differs from the data set's classes is replaced by a new one (fine-tuning).
    """
    from ..models._pretrained import _resolve_source
    from ..tools.weights import CHECKPOINT_FORMAT, clean_state_dict, load_model, load_pretrained
    kwargs = dict(config.model_kwargs)
    kwargs.setdefault("num_classes", bundle.num_classes)
    kwargs.setdefault("in_chans", bundle.in_chans)
    if kwargs.get("stages") is not None and not callable(kwargs["stages"]):
        kwargs["stages"] = list(kwargs["stages"])
    source = config.init_from
    ckpt = read_checkpoint(source) if source and Path(source).is_file() else None
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        if config.model_kwargs:
            raise ValueError(f"init_from={source!r} rebuilds the checkpoint's own model "
                             f"({ckpt['arch']}); model options {sorted(config.model_kwargs)} "
                             "cannot apply to it (convert it first, or drop them)")
        model, meta = load_model(source)
        arch, model_kwargs, convert_kwargs = meta["arch"], dict(meta["model_kwargs"]), meta["convert_kwargs"]
        stem = getattr(model, "conv1", None)
        if isinstance(stem, nn.Conv2d) and stem.in_channels != bundle.in_chans:
            raise ValueError(f"init_from={source!r}: the model takes {stem.in_channels} input "
                             f"channels, the data set {bundle.name!r} has "
                             f"{bundle.in_chans}")
        head = _classifier(model)
        if head.out_features != bundle.num_classes:
            model.fc = nn.Linear(head.in_features, bundle.num_classes)
            model_kwargs["num_classes"] = bundle.num_classes
        return _Built(model, arch, model_kwargs, convert_kwargs)
    model = create_model(config.model, **kwargs)
    if source:
        state = dict(clean_state_dict(ckpt) if ckpt is not None else _resolve_source(source))
        own = model.state_dict()
        for k in ("fc.weight", "fc.bias"):  # a new head for the data set's classes
            if k in state and k in own and state[k].shape != own[k].shape:
                state[k] = own[k]
        load_pretrained(model, state)
    return _Built(model, config.model, kwargs, None)


def _classifier(model: nn.Module) -> nn.Linear:
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"init_from: cannot find the classifier (an nn.Linear named 'fc') of "
                         f"{type(model).__name__} to fit the data set's classes")
    return head


def _keep_metrics_until(path: Path, epochs_done: int) -> None:
    """Drop metric lines written after the last checkpoint (a killed run's partial epoch)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if rec.get("epoch", 0) <= epochs_done:
            keep.append(line)
    _atomic_write_text(path, "".join(s + "\n" for s in keep))


def train(config: TrainConfig, out_dir: str | os.PathLike, *, bundle: Optional[DataBundle] = None,
          resume: bool = True, progress: bool = True,
          stop_after_epochs: Optional[int] = None) -> RunResult:
    """Train one model; see the module docstring for what is written to ``out_dir``.

    Args:
        config: the run's :class:`TrainConfig`.
        out_dir: the run's folder (created).
        bundle: data already loaded (``compare`` loads once for all runs); loaded from ``config``
            when None.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        progress: show a tqdm progress bar per epoch when stderr is a terminal (rank 0 only).
            Whatever it says, each finished epoch prints one line to stderr (train loss, test
            accuracy, images/s, lowest skip gain), so a log that is not a terminal gets one line
            per epoch and no bar frames.
        stop_after_epochs: stop (as if killed) after this many epochs of this call; for tests.

    Returns:
        :class:`RunResult`. A non-finite loss ends the run with ``status='diverged'`` and keeps
        all metrics and the last good checkpoint.

    Raises:
        ValueError: bad config; :class:`resattn.workflow.data.DataNotFoundError`: data missing;
        ImportError: ``tensorboard=True`` without the tensorboard package.
    """
    config.validate()
    out = Path(out_dir)
    device = _select_device(config.device)
    ddp = _Dist(device)
    try:
        with _deterministic(config.deterministic), _own_rng(device):
            return _train(config, out, device, ddp, bundle, resume, progress, stop_after_epochs)
    finally:
        ddp.close()


def _own_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """The run seeds the global RNG (initial weights; dropout and drop-path draw from it too);
    the caller's RNG state comes back when the run ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms (and no cuDNN autotuning) for the run when ``enabled``; the
    process-wide settings the caller had come back when the run ends, also on an error."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


@dataclass
class _Run:
    """What one run holds while it trains; each concern below reads and updates it."""

    config: TrainConfig
    out: Path
    device: torch.device
    ddp: _Dist
    built: _Built
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: DistributedSampler
    train_split: Any
    test_split: Any
    in_memory: bool
    steps_per_epoch: int
    attn_params: set[int]
    sinks: list[Any]
    monitor: Any = None
    start_epoch: int = 0
    best_acc: float = 0.0
    train_time: float = 0.0
    seen_images: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    n_params: int = 0
    mflops: float = 0.0
    precision: str = "fp32"  # resolved: fp32 or bf16

    @property
    def model(self) -> nn.Module:
        return self.built.model

    def log(self, rec: dict[str, Any]) -> None:
        """Hand a record to every metrics sink (rank 0 only)."""
        if self.ddp.main:
            for sink in self.sinks:
                sink.write(rec)


def _train(config: TrainConfig, out: Path, device: torch.device, ddp: _Dist,
           bundle: Optional[DataBundle], resume: bool, progress: bool,
           stop_after_epochs: Optional[int]) -> RunResult:
    run = _prepare(config, out, device, ddp, bundle, resume, progress)
    status = "finished"
    try:
        for epoch in range(run.start_epoch, config.epochs):
            if stop_after_epochs is not None and epoch - run.start_epoch >= stop_after_epochs:
                status = "interrupted"
                break
            stats = _train_epoch(run, epoch, progress)
            if stats.diverged:
                status = "diverged"
                run.log({"type": "diverged", "epoch": epoch + 1, "step": stats.last_step})
                break
            rec = _end_epoch(run, epoch, stats)
            if rec is None:
                status = "diverged"
                break  # the last checkpoint (of a finite epoch) stays
            _save(run, epoch)
    finally:
        if run.monitor is not None:
            run.monitor.detach()
        for sink in run.sinks:
            sink.close()
    return _finish(run, status)


# ------------------------------------------------------------------ setup and resume

def _prepare(config: TrainConfig, out: Path, device: torch.device, ddp: _Dist,
             bundle: Optional[DataBundle], resume: bool, progress: bool) -> _Run:
    """Data, model (initialised from ``seed``), optimizer, schedule, sinks; resumed state."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; the run needs a folder")
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = load_dataset(config.dataset, config.data_dir, download=config.download,
                              train_subset=config.train_subset, test_subset=config.test_subset)
    in_memory = bundle.in_memory
    train_split = _tensors(bundle.train) if in_memory else bundle.train
    test_split = _tensors(bundle.test) if in_memory else bundle.test
    if config.label_noise > 0:
        train_split = _noisy(train_split, config, bundle.num_classes)
    if in_memory and device.type != "cpu":  # batches are cut and augmented where they train
        train_split, test_split = (TensorDataset(*(t.to(device) for t in split.tensors))
                                   for split in (train_split, test_split))

    torch.manual_seed(config.seed)  # the initial weights: the only draws from the global RNG
    built = build_model(config, bundle)
    model = built.model
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)

    opt_cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.AdamW
    opt_kw = dict(momentum=config.momentum, nesterov=config.momentum > 0) if config.optimizer == "sgd" else {}
    optimizer = opt_cls(param_groups(model, config.weight_decay, config.lr, config.gamma_lr_scale),
                        lr=config.lr, **opt_kw)
    sampler = DistributedSampler(train_split, num_replicas=ddp.world, rank=ddp.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, steps_per_epoch * config.epochs))

    net: nn.Module = model
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.attn_only_epochs > 0)
    if config.compile:  # torch.compile of the training forward (the model's weights are shared)
        net = torch.compile(net)
    sinks: list[Any] = []
    if ddp.main:
        from .sinks import JsonlSink
        sinks.append(JsonlSink(out / "metrics.jsonl"))
        if config.tensorboard:
            from .sinks import TensorBoardSink
            sinks.append(TensorBoardSink(out / "tensorboard"))
    run = _Run(config=config, out=out, device=device, ddp=ddp, built=built, net=net,
               optimizer=optimizer, scheduler=scheduler, sampler=sampler,
               train_split=train_split, test_split=test_split, in_memory=in_memory,
               steps_per_epoch=steps_per_epoch,
               attn_params={id(p) for p in attention_parameters(model)}, sinks=sinks)
    run.precision = resolve_precision(config.precision, device)
    run.n_params = sum(p.numel() for p in model.parameters())
    run.mflops = count_mflops(model, (bundle.in_chans, *bundle.image_size))
    _restore(run, resume, progress)
    if config.monitor:
        from ..tools.monitor import GateMonitor
        run.monitor = GateMonitor(model, every=config.monitor_every, threshold=config.skip_gain_threshold)
        run.monitor.attach()
    return run


def _noisy(split, config: TrainConfig, num_classes: int):
    """The training split with ``config.label_noise`` of its labels flipped (in-memory data)."""
    if not isinstance(split, TensorDataset):
        raise ValueError(f"label_noise={config.label_noise!r} needs an in-memory data set "
                         "(fashion-mnist, cifar10, cifar100, digits), not an image folder")
    from .data import flip_labels
    x, y = split.tensors
    return TensorDataset(x, flip_labels(y, config.label_noise, num_classes, seed=config.seed))


_RESUME_KEYS = ("state_dict", "optimizer", "scheduler", "epoch", "best_acc", "train_time_s",
                "images_seen")


def _resume_checkpoint(path: Path, out: Path) -> dict[str, Any]:
    """The run's checkpoint, or a :class:`CheckpointError` that names the run and the way out."""
    hint = (f"Start this run over with --no-resume (resume=False; it then writes a new "
            f"checkpoint), or delete {out}")
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"run {out} cannot resume: {e}. {hint}", e.kind) from e
    missing = [k for k in _RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"run {out} cannot resume: {str(path)!r} is not a training "
                              f"checkpoint (it lacks {', '.join(missing)}). {hint}",
                              "not-a-checkpoint")
    return ckpt


def _restore(run: _Run, resume: bool, progress: bool) -> None:
    """Continue from ``checkpoint.pt`` (same options only), or start a fresh metrics file."""
    ckpt_path, metrics_path = run.out / "checkpoint.pt", run.out / "metrics.jsonl"
    ckpt = _resume_checkpoint(ckpt_path, run.out) if resume and ckpt_path.exists() else None
    if ckpt is None:
        if run.ddp.main and metrics_path.exists():
            metrics_path.unlink()
        return
    changes = config_changes(ckpt.get("config", {}), run.config)
    if changes:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changes.items()))
        raise ValueError(f"{run.out} holds a run with other options ({diff}); resume it with the "
                         "same options, start over with resume=False (--no-resume), or use "
                         "another output folder")
    check_state_dict(run.model, ckpt["state_dict"], ckpt_path, run.built.arch)
    run.model.load_state_dict(ckpt["state_dict"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.start_epoch, run.best_acc = ckpt["epoch"], ckpt["best_acc"]
    run.train_time, run.seen_images = ckpt["train_time_s"], ckpt["images_seen"]
    run.history = ckpt.get("history", [])
    if run.ddp.main and progress:
        print(f"resuming {run.out} from epoch {run.start_epoch} of {run.config.epochs}", file=sys.stderr)
    if run.ddp.main:
        _keep_metrics_until(metrics_path, run.start_epoch)


# ------------------------------------------------------------------ one epoch of training

@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: int = 0
    time_s: float = 0.0
    diverged: bool = False
    last_step: int = 0
    frozen: bool = False


@dataclass
class _Window:
    """Step statistics since the last step record."""

    loss: float = 0.0
    loss_max: float = -math.inf
    correct: float = 0.0
    count: int = 0
    steps: int = 0
    grad_norm: float = 0.0

    def add(self, loss: float, correct: float, n: int, grad_norm: float) -> None:
        self.loss += loss
        self.loss_max = max(self.loss_max, loss)
        self.correct += correct
        self.count += n
        self.steps += 1
        self.grad_norm = max(self.grad_norm, grad_norm)

    def record(self) -> dict[str, float]:
        return {"loss": self.loss / self.steps, "loss_max": self.loss_max,
                "acc": 100.0 * self.correct / max(self.count, 1), "grad_norm": self.grad_norm}


def _epoch_batches(run: _Run, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's training batches, augmented. Order (the sampler, seeded by (seed, epoch)) and
    augmentation draws (a generator seeded by (seed, epoch)) never touch the global RNG, so runs of
    different models with one seed see the same batches."""
    config = run.config
    run.sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    for x, y in _batches(run.train_split, run.sampler, config.batch_size, run.in_memory,
                         config.num_workers, skip_single=True):
        if config.augment and run.in_memory:
            x = _augment(x, gen, pad=max(1, x.shape[-1] // 8))
        yield x, y


def _step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> Optional[tuple[float, float, float]]:
    """One optimizer step: (loss, correct predictions, gradient norm before clipping), or None
    when the loss is not finite on any rank (nothing is updated then)."""
    config, device = run.config, run.device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16"):
        logits = run.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    if run.ddp.any(not torch.isfinite(loss).item(), device):
        return None
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in run.model.parameters() if p.grad is not None]
    if config.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    run.optimizer.step()
    run.scheduler.step()
    return loss.item(), (logits.argmax(1) == y).sum().item(), float(grad_norm)


def _train_epoch(run: _Run, epoch: int, progress: bool) -> _EpochStats:
    """Train one epoch, writing a step record every ``log_every`` steps."""
    config = run.config
    stats = _EpochStats(frozen=epoch < config.attn_only_epochs)
    for p in run.model.parameters():
        p.requires_grad_(not stats.frozen or id(p) in run.attn_params)
    run.net.train()
    bar = None
    if progress and run.ddp.main and sys.stderr.isatty():  # frames of a bar only on a terminal
        from tqdm.auto import tqdm
        bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   leave=False, dynamic_ncols=True)
    window = _Window()
    t0 = time.perf_counter()
    try:
        for step, (x, y) in enumerate(_epoch_batches(run, epoch)):
            stats.last_step = epoch * run.steps_per_epoch + step + 1
            out = _step(run, x, y)
            if out is None:
                stats.diverged = True
                break
            loss, correct, grad_norm = out
            stats.loss_sum += loss * y.numel()
            stats.correct += correct
            stats.count += y.numel()
            window.add(loss, correct, y.numel(), grad_norm)
            ips = stats.count * run.ddp.world / max(time.perf_counter() - t0, 1e-9)
            lr = run.optimizer.param_groups[0]["lr"]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats.loss_sum / stats.count:.3f}",
                                acc=f"{100 * stats.correct / stats.count:.1f}", lr=f"{lr:.3g}",
                                img_s=f"{ips:.0f}")
            if stats.last_step % config.log_every == 0:
                run.log({"type": "step", "epoch": epoch + 1, "step": stats.last_step,
                         **window.record(), "lr": lr, "images_per_s": ips})
                window = _Window()
    finally:
        if bar is not None:
            bar.close()
    stats.time_s = time.perf_counter() - t0
    return stats


# ------------------------------------------------------------------ evaluation and checkpoints

def _end_epoch(run: _Run, epoch: int, stats: _EpochStats) -> Optional[dict[str, Any]]:
    """Evaluate, check the weights, write the epoch record; None when the epoch diverged."""
    config, ddp, device, model = run.config, run.ddp, run.device, run.model
    train_loss, train_correct, train_count = ddp.all_sum([stats.loss_sum, stats.correct, stats.count], device)
    run.train_time += stats.time_s
    run.seen_images += int(train_count)
    if run.monitor is not None:
        run.monitor.detach()  # gate statistics describe training forwards only
    test_loss, test_acc = evaluate(model, run.test_split, batch_size=2 * config.batch_size,
                                   device=device, in_memory=run.in_memory, precision=run.precision,
                                   channels_last=config.channels_last,
                                   ddp=ddp if ddp.enabled else None, num_workers=config.num_workers)
    bad_state = [k for k, v in model.state_dict().items()
                 if v.is_floating_point() and not torch.isfinite(v).all()]
    if not math.isfinite(test_loss) or bad_state:
        run.log({"type": "diverged", "epoch": epoch + 1, "test_loss": test_loss,
                 "non_finite": bad_state[:20]})
        return None
    run.best_acc = max(run.best_acc, test_acc)
    rec = {"type": "epoch", "epoch": epoch + 1,
           "train_loss": train_loss / max(train_count, 1),
           "train_acc": 100.0 * train_correct / max(train_count, 1),
           "test_loss": test_loss, "test_acc": test_acc,
           "lr": run.optimizer.param_groups[0]["lr"], "epoch_time_s": stats.time_s,
           "images_per_s": train_count / max(stats.time_s, 1e-9), "attn_only": stats.frozen}
    if run.monitor is not None:
        rec["gates"] = run.monitor.summary(reset=True)
        rec["gates_end"] = _end_gates(run)
        run.monitor.attach()
        rec["closing"] = [[name, gain] for name, gain in run.monitor.closing(rec["gates"])]
        if rec["closing"] and ddp.main:
            blocks = ", ".join(f"{n} {g:.2f}" for n, g in rec["closing"])
            print(f"resattn: warning: epoch {epoch + 1}: skip gain below "
                  f"{config.skip_gain_threshold} (the identity path is closing) in "
                  f"{blocks}", file=sys.stderr)
    run.log(rec)
    run.history.append({k: v for k, v in rec.items() if k != "type"})
    if ddp.main:
        print(_epoch_line(rec, config.epochs), file=sys.stderr, flush=True)
    return rec


def _epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """``epoch 2/4: train loss 0.512, test acc 91.30%, 812 img/s, skip gain min 0.98 (layer2.0)``."""
    line = (f"epoch {rec['epoch']}/{epochs}: train loss {rec['train_loss']:.4f}, test acc "
            f"{rec['test_acc']:.2f}%, {rec['images_per_s']:.0f} img/s")
    gains = [(v["skip_gain"], b) for b, v in (rec.get("gates_end") or {}).items()
             if isinstance(v.get("skip_gain"), (int, float))]
    if gains:
        low, block = min(gains)
        line += f", skip gain min {low:.3f} ({block})"
    return line


@torch.no_grad()
def _end_gates(run: _Run) -> dict[str, dict[str, float]]:
    """Gate statistics of the model as it is at the end of the epoch: one forward (eval mode)
    of the first test images. ``gates`` holds the means over the epoch's sampled training
    forwards (every ``monitor_every``-th, the first included), which in a short run are mostly
    the initial values; this is what the run ended with."""
    from ..tools.monitor import GateMonitor
    config, model = run.config, run.model
    n = min(len(run.test_split), config.batch_size)
    x, _ = next(_batches(run.test_split, range(n), n, run.in_memory, config.num_workers))
    x = x.to(run.device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with GateMonitor(model, every=1, threshold=config.skip_gain_threshold) as probe, \
                torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16"):
            model(x)
        return probe.summary(reset=True)
    finally:
        model.train(was_training)


def _save(run: _Run, epoch: int) -> None:
    """The resumable checkpoint after a finished epoch, written atomically by rank 0."""
    if run.ddp.main:
        save_checkpoint(run.model, run.out / "checkpoint.pt", arch=run.built.arch,
                        model_kwargs=_plain(run.built.model_kwargs),
                        convert_kwargs=run.built.convert_kwargs,
                        optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                        epoch=epoch + 1, best_acc=run.best_acc, train_time_s=run.train_time,
                        images_seen=run.seen_images, history=run.history,
                        config=_plain(run.config.to_dict()))
    if run.ddp.enabled:
        dist.barrier()


def _finish(run: _Run, status: str) -> RunResult:
    """The run's summary, written to ``result.json`` unless interrupted."""
    history = run.history
    result = RunResult(
        status=status, epochs_done=len(history), best_acc=run.best_acc,
        final_acc=history[-1]["test_acc"] if history else 0.0, params=run.n_params,
        mflops=run.mflops, train_time_s=run.train_time,
        images_per_s=run.seen_images / max(run.train_time, 1e-9), out_dir=str(run.out),
        precision=run.precision)
    if run.ddp.main and status != "interrupted":
        _atomic_write_text(run.out / "result.json", json.dumps(_finite_or_null(
            {**asdict(result), "config": _plain(run.config.to_dict()), "arch": run.built.arch,
             "model_kwargs": _plain(run.built.model_kwargs),
             "torch": torch.__version__, "machine": machine_description(),
             "device": device_name(next(run.model.parameters()).device)}), indent=2, default=str))
    return result
