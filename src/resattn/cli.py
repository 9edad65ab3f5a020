"""Command line: ``resattn train | compare | study | evidence | convert | inspect | export | bench``
(also ``python -m resattn``)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .precision import DEFAULT_PRECISION

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------- shared options

def _csv(type_):
    def parse(s: str) -> list:
        try:
            return [type_(v) for v in s.split(",") if v.strip() != ""]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma list of {type_.__name__}: {s!r}") from e
    return parse


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}")
    return v


def _chw(s: str) -> list[int]:
    v = _csv(int)(s)
    if len(v) != 3 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three integers >= 1), got {s!r}")
    return v


def _precision(s: str) -> str:
    from .precision import PRECISIONS
    if s not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(PRECISIONS)}, got {s!r}")
    return s


def _precisions(s: str) -> list[str]:
    return [_precision(v.strip()) for v in s.split(",") if v.strip()]


def _stages(s: str) -> Optional[list[int]]:
    return None if s in ("", "default") else _csv(int)(s)


_ATTENTION_ARGS = [
    ("--attn", str, "attention of patterns 1-3 (se, eca, cbam, coord, ..., or none)"),
    ("--modulation", str, "patterns 1-3: gate | near_identity"),
    ("--gamma-init", float, "patterns 1-3: initial gamma (near_identity)"),
    ("--gamma-max", float, "patterns 1-3: bound on |gamma|"),
    ("--skip-attn", str, "dual: attention on the skip path (none: no attention there)"),
    ("--res-attn", str, "dual: attention on the residual path (none: no attention there)"),
    ("--skip-modulation", str, "dual: gate | near_identity on the skip"),
    ("--res-modulation", str, "dual: gate | near_identity on the residual"),
    ("--skip-gamma-init", float, "dual: initial gamma_s"),
    ("--res-gamma-init", float, "dual: initial gamma_r"),
    ("--skip-gamma-max", float, "dual: bound on |gamma_s|"),
    ("--res-gamma-max", float, "dual: bound on |gamma_r|"),
    ("--gamma-shape", str, "scalar | channel"),
]


def _add_attention_args(p: argparse.ArgumentParser, *, with_attn: bool = True) -> None:
    g = p.add_argument_group("attention (defaults: see resattn.AttentionConfig)")
    g.add_argument("--pattern", default=None, help="none|branch|post|pre|dual (or 0-4)")
    for flag, type_, help_ in _ATTENTION_ARGS:
        if flag == "--attn" and not with_attn:
            continue
        g.add_argument(flag, type=type_, default=None, help=help_)
    g.add_argument("--stages", type=_stages, default=None,
                   help="comma list of 1-based stages that get the pattern (default: all for 1-3, "
                        "last two for dual)")
    g.add_argument("--norm-layer", default=None, help="batchnorm | groupnorm | layernorm")


def _attention_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    keys = ["pattern", "stages", "norm_layer"] + [f[0][2:].replace("-", "_") for f in _ATTENTION_ARGS]
    kw = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for k in ("attn", "skip_attn", "res_attn"):  # 'none': no attention on that path
        if kw.get(k) == "none":
            kw[k] = None
    return kw


_TRAIN_FLAGS = {  # flag -> (TrainConfig field, type, help)
    "--precision": ("precision", _precision,
                    "auto | fp32 | bf16 (autocast); auto: bf16 on CUDA and on CPUs with native "
                    f"bf16 units (amx_bf16/avx512_bf16), else fp32 (default: {DEFAULT_PRECISION})"),
    "--optimizer": ("optimizer", str, "sgd | adamw"),
    "--momentum": ("momentum", float, "SGD momentum (Nesterov)"),
    "--weight-decay": ("weight_decay", float, "weight decay on conv/linear weights"),
    "--gamma-lr-scale": ("gamma_lr_scale", float, "learning-rate factor for gamma"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warm-up length before the cosine"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing"),
    "--label-noise": ("label_noise", float,
                      "flip this fraction of training labels to another class (seeded; test set clean)"),
    "--grad-clip": ("grad_clip", float, "clip the gradient norm to this value"),
    "--log-every": ("log_every", int, "steps between step records in metrics.jsonl"),
    "--monitor-every": ("monitor_every", int, "record gate statistics every N forwards"),
    "--skip-gain-threshold": ("skip_gain_threshold", float,
                              "warn when a block's skip gain falls below this (default 0.7)"),
    "--test-subset": ("test_subset", int, "class-balanced subset of the test split"),
    "--device": ("device", str, "auto | cpu | cuda | cuda:N"),
    "--num-workers": ("num_workers", int, "DataLoader workers (image folders)"),
    "--attn-only-epochs": ("attn_only_epochs", int,
                           "fine-tuning: train only attention and gamma for N epochs, then all"),
    "--init-from": ("init_from", str, "start from these weights (checkpoint path or resnet name)"),
}
_TRAIN_SWITCHES = {  # flag -> (field, value, help)
    "--bf16": ("precision", "bf16", "same as --precision bf16"),
    "--deterministic": ("deterministic", True, "deterministic algorithms"),
    "--no-augment": ("augment", False, "no random crop / flip"),
    "--no-monitor": ("monitor", False, "no gate diagnostics"),
    "--no-channels-last": ("channels_last", False, "keep NCHW memory layout"),
    "--tensorboard": ("tensorboard", True,
                      "also write TensorBoard scalars (RUN/tensorboard/; needs the tensorboard package)"),
    "--compile": ("compile", True, "torch.compile the model for training"),
}


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    for flag, (dest, type_, help_) in _TRAIN_FLAGS.items():
        g.add_argument(flag, dest=dest, type=type_, default=None, help=help_)
    for flag, (dest, value, help_) in _TRAIN_SWITCHES.items():
        g.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=help_)


def _training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    dests = [d for d, *_ in _TRAIN_FLAGS.values()] + [d for d, *_ in _TRAIN_SWITCHES.values()]
    return {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="default fashion-mnist")
    g.add_argument("--data-dir", default=None, help="where the data set lies")
    g.add_argument("--download", action="store_const", const=True, default=None,
                   help="let torchvision download the data set (needs a network)")
    g.add_argument("--train-subset", type=int, default=None, help="class-balanced training subset")


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    """Where a grid's runs execute (``compare``; any command that runs a grid)."""
    from .executors import EXECUTORS
    g = p.add_argument_group("executor (where the runs execute; see resattn.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default="sequential",
                   help="sequential: one run after another here (default); ray: every run a Ray "
                        "task (pip install 'resattn[ray]')")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="ray: the cluster: auto (the one running here), HOST:PORT (its head) "
                        "or ray://HOST:PORT (Ray Client); default: RAY_ADDRESS, else start a "
                        "local Ray")
    g.add_argument("--cpus-per-run", type=float, default=None, metavar="N",
                   help="ray: CPUs per run (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="ray: GPUs per run, 0..1 (0.5: two runs share a GPU; default 1 when the "
                        "cluster has GPUs, else 0)")


def _executor_from_args(args: argparse.Namespace):
    """The executor the flags of :func:`_add_executor_args` ask for.

    Raises:
        ValueError: Ray options without ``--executor ray``, bad numbers, or Ray not installed
            (the message names the extra ``resattn[ray]``).
    """
    from .executors import make_executor
    try:
        return make_executor(args.executor, address=args.address, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run)
    except ImportError as e:
        raise ValueError(f"--executor {args.executor}: {e}") from e


# ----------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(model=args.model, model_kwargs=_attention_kwargs(args),
                      **{k: v for k, v in dict(dataset=args.dataset, data_dir=args.data_dir,
                                                 download=args.download, train_subset=args.train_subset,
                                                 epochs=args.epochs, batch_size=args.batch_size,
                                                 lr=args.lr, seed=args.seed).items() if v is not None},
                      **_training_kwargs(args))
    result = train(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in vars(result).items()}, indent=2))
    return 0 if result.status == "finished" else 3


_YAML_LISTS = {"patterns": str, "attn": str, "seeds": int, "lr": float, "lrs": float}


def _load_yaml(path: str) -> dict[str, Any]:
    """Compare options from a YAML mapping (keys as the flags, ``-`` or ``_``); list options
    accept a list, a scalar or a comma string.

    Raises:
        ValueError: unreadable file, not YAML, not a mapping, an unknown key, or a bad value;
            the message names the file and the key.
    """
    import yaml

    from .compare import CompareConfig
    from .train import TrainConfig
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--config {path}: cannot read it as YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of compare options, got "
                         f"{type(data).__name__}")
    allowed = ({f for f in CompareConfig.__dataclass_fields__ if f != "lrs"} | {"lr", "full"} |
               (set(TrainConfig.__dataclass_fields__) - {"model_kwargs", "seed", "model", "dataset"}))
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = str(key).replace("-", "_")
        if k not in allowed:
            raise ValueError(f"--config {path}: unknown option {key!r}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        if k in _YAML_LISTS and value is not None:
            items = value.split(",") if isinstance(value, str) else value
            items = items if isinstance(items, list) else [items]
            try:
                value = [_YAML_LISTS[k](str(v).strip() if _YAML_LISTS[k] is str else v) for v in items]
            except (TypeError, ValueError) as e:
                raise ValueError(f"--config {path}: {key}={value!r} must be a list of "
                                 f"{_YAML_LISTS[k].__name__}") from e
        elif k in ("train_options",) and not isinstance(value, dict):
            raise ValueError(f"--config {path}: train_options must be a mapping")
        out[k] = value
    if out.pop("full", False):
        out = {**{"quick": False, "epochs": 15}, **out}
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import FULL, CompareConfig, run_compare
    from .train import TrainConfig

    opts: dict[str, Any] = {}
    if args.config:
        opts.update(_load_yaml(args.config))
    if args.full:
        opts.update(FULL)
    cli = dict(dataset=args.dataset, data_dir=args.data_dir, download=args.download,
               model=args.model, patterns=args.patterns, attn=args.attn, skip_attn=args.skip_attn,
               seeds=args.seeds, lrs=args.lr, epochs=args.epochs, train_subset=args.train_subset,
               batch_size=args.batch_size, out=args.out, baseline=args.baseline)
    opts.update({k: v for k, v in cli.items() if v is not None})
    if "lr" in opts:  # YAML may say lr: 0.1 or lr: [0.05, 0.1]
        lr = opts.pop("lr")
        opts["lrs"] = lr if isinstance(lr, list) else [lr]
    train_fields = set(TrainConfig.__dataclass_fields__)
    train_opts = {k: opts.pop(k) for k in list(opts) if k in train_fields and k not in CompareConfig.__dataclass_fields__}
    for k, v in (opts.pop("train_options", None) or {}).items():
        if k in ("model", "model_kwargs", "dataset", "lr", "seed", "epochs", "batch_size"):
            raise ValueError(f"train_options may not set {k!r}; it is a compare option")
        train_opts[k] = v
    cli_train = _training_kwargs(args)
    if "precision" in cli_train:  # the command line's word over a YAML bf16
        train_opts.pop("bf16", None)
    train_opts.update(cli_train)
    if "test_subset" in train_opts:
        opts["test_subset"] = train_opts.pop("test_subset")
    cfg = CompareConfig(**opts, train_options=train_opts)
    executor = _executor_from_args(args)
    command = " ".join(shlex.quote(a) for a in ["resattn", *sys.argv[1:]]) if sys.argv[1:] else None
    res = run_compare(cfg, command=command, progress=not args.no_progress, executor=executor)
    print()
    print(res["table"])
    print()
    print(f"wall time {res['wall_time_s']:.0f} s")
    for name, path in res["paths"].items():
        print(f"{name:>10}: {path}")
    bad = [r for r in res["rows"] if r["status"] == "failed"]
    return 4 if bad else 0


def cmd_study(args: argparse.Namespace) -> int:
    from .study import load_study, run_study

    study = load_study(args.file)
    if args.dry_run:
        specs = study.specs(args.budget)
        print(f"{study.path}: valid; budget {args.budget}: {len(specs)} runs")
        return 0
    out = args.out or str(Path("runs") / "studies" / f"{study.name}-{args.budget}")
    extra = {k: v for k, v in dict(device=args.device, tensorboard=args.tensorboard or None,
                                   compile=args.compile or None, num_workers=args.num_workers,
                                   precision=args.precision).items() if v is not None}
    command = " ".join(shlex.quote(a) for a in ["resattn", "study", args.file, "--budget", args.budget,
                                                 "--out", out] + (["--tensorboard"] if args.tensorboard else [])
                       + (["--device", args.device] if args.device else [])
                       + (["--precision", args.precision] if args.precision else [])
                       + (["--compile"] if args.compile else []))
    res = run_study(study, args.budget, out, command=command, progress=not args.no_progress,
                    extra=extra, executor=_executor_from_args(args))
    print()
    for i, r in enumerate(res["results"], 1):
        print(f"hypothesis {i}: {r['verdict']}: {r['hypothesis']}")
    print(f"wall time {res['wall_time_s']:.0f} s\n    report: {res['report']}")
    return 4 if any(r["status"] == "failed" for r in res["rows"]) else 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from .evidence import build_evidence
    path = build_evidence(args.runs, args.out)
    print(f"evidence page: {path}")
    return 0


def _convert_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw = _attention_kwargs(args)
    kw.pop("norm_layer", None)
    return kw


def cmd_convert(args: argparse.Namespace) -> int:
    import copy

    import torch

    from .convert import convert, parity_check
    from .weights import load_model, load_pretrained, save_checkpoint

    model, meta = load_model(args.source)
    if args.weights:
        print(load_pretrained(model, args.weights))
    reference = copy.deepcopy(model).eval()
    kwargs = _convert_kwargs(args)
    report = convert(model, **kwargs)
    print(report)
    stem = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    in_chans = args.in_chans or (stem.in_channels if stem is not None else 3)
    x = torch.randn(args.batch, in_chans, args.size, args.size,
                    generator=torch.Generator().manual_seed(0))
    parity = parity_check(reference, model, x)
    print(f"parity on a random {tuple(x.shape)} batch (eval): max |logit diff| "
          f"{parity['max_abs_diff']:.3g}, top-1 agreement {100 * parity['top1_agreement']:.1f}%"
          f" -> {'PASS' if parity['passed'] else 'FAIL'}")
    if args.out:
        save_checkpoint(model, args.out, arch=meta["arch"], model_kwargs=meta.get("model_kwargs") or {},
                        convert_kwargs=kwargs)
        print(f"converted checkpoint: {args.out}")
    # a conversion that cannot preserve the function has said so (report.warnings)
    return 0 if parity["passed"] or report.warnings else 5


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import format_table, inspect_model
    from .weights import load_model

    model, _ = load_model(args.source)
    print(format_table(inspect_model(model)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export
    report = export(args.checkpoint, args.out, args.format, batch=args.batch,
                    image_size=args.size, onnx_exporter=args.onnx_exporter, opset=args.opset)
    print(report)
    return 0 if report.passed else 6


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import DEFAULT_VARIANTS, format_table, plot, run_bench, write_csv

    if args.threads:
        torch.set_num_threads(args.threads)
    from .report import device_label
    rows = run_bench(args.model, args.variants or DEFAULT_VARIANTS, batch_size=args.batch_size,
                     input_shape=tuple(args.input), steps=args.steps, rounds=args.rounds,
                     dtype=args.dtype, channels_last=not args.no_channels_last,
                     compile=args.compile, reference=not args.no_reference,
                     peers=not args.no_peers, device=args.device, progress=not args.no_progress)
    precisions = ", ".join(dict.fromkeys(r.precision for r in rows))
    header = (f"{args.model}, batch {args.batch_size}, input {'x'.join(map(str, args.input))}, "
              f"{precisions}, {'NCHW' if args.no_channels_last else 'channels_last'}, "
              f"{device_label(args.device)}, median of {args.rounds} interleaved rounds x "
              f"{args.steps} steps")
    print(format_table(rows, header))
    out = Path(args.out)
    print(f"csv: {write_csv(rows, out / 'bench.csv')}")
    print(f"plot: {plot(rows, out / 'bench.png', header)}")
    return 0


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resattn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model")
    t.add_argument("--model", default="cifar_resnet20")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", default="runs/train", help="run folder (metrics, checkpoint, result)")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (the default when one exists)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("--no-progress", action="store_true")
    _add_data_args(t)
    _add_attention_args(t)
    _add_training_args(t)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="train a grid of patterns and write a report (the main job)")
    c.add_argument("--config", default=None, help="YAML file with compare options (flags override)")
    c.add_argument("--full", action="store_true",
                   help="whole splits and 15 epochs (default: class-balanced 8k train / 2k test "
                        "subsets of Fashion-MNIST/CIFAR, 2 epochs, 3 seeds: under 10 minutes on 2 cores)")
    c.add_argument("--model", default=None, help="default cifar_resnet20")
    c.add_argument("--patterns", type=_csv(str), default=None,
                   help="comma list of none,branch,post,pre,dual,dual-gate (default all)")
    c.add_argument("--attn", type=_csv(str), default=None,
                   help="comma list of attention types (patterns 1-3; the residual path of dual)")
    c.add_argument("--skip-attn", default=None, help="attention on the skip of dual (default eca)")
    c.add_argument("--seeds", type=_csv(int), default=None, help="comma list (default 0,1,2)")
    c.add_argument("--lr", type=_csv(float), default=None, help="comma list (default 0.1)")
    c.add_argument("--epochs", type=_positive_int, default=None,
                   help="default 2 (15 with --full)")
    c.add_argument("--batch-size", type=_positive_int, default=None, help="default 128")
    c.add_argument("--out", default=None, help="output folder (default runs/compare)")
    c.add_argument("--baseline", default=None,
                   help="variant the others are paired against (default none, else the first)")
    c.add_argument("--no-progress", action="store_true")
    _add_data_args(c)
    _add_training_args(c)
    _add_executor_args(c)
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("study", help="run a pre-registered study file and write its report and verdict")
    s.add_argument("file", help="study YAML (see studies/ and resattn.study)")
    s.add_argument("--budget", choices=("smoke", "cpu", "full"), default="smoke",
                   help="smoke: a test-sized run; cpu: 2 cores, < 30 min; full: a GPU (default smoke)")
    s.add_argument("--out", default=None, help="output folder (default runs/studies/NAME-BUDGET)")
    s.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    s.add_argument("--precision", type=_precision, default=None,
                   help="auto | fp32 | bf16 for every run (default: the study file's, else "
                        f"{DEFAULT_PRECISION})")
    s.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                   help="same as --precision bf16")
    s.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (image folders)")
    s.add_argument("--tensorboard", action="store_true", help="TensorBoard scalars per run")
    s.add_argument("--compile", action="store_true", help="torch.compile each run's model")
    s.add_argument("--dry-run", action="store_true", help="validate and count the runs; train nothing")
    s.add_argument("--no-progress", action="store_true")
    _add_executor_args(s)
    s.set_defaults(func=cmd_study)

    e = sub.add_parser("evidence", help="build the evidence page from finished study folders")
    e.add_argument("runs", nargs="+", help="study output folders (each with study.json)")
    e.add_argument("--out", default="docs/evidence.md", help="the page (plots go to its folder/evidence/)")
    e.set_defaults(func=cmd_evidence)

    v = sub.add_parser("convert", help="retrofit attention into a (pretrained) ResNet, checking parity")
    v.add_argument("source", help="resattn name, torchvision:NAME, timm:NAME, or checkpoint path")
    v.add_argument("--weights", default=None, help="state_dict/checkpoint path (or resnet name) to load first")
    v.add_argument("--out", default=None, help="converted checkpoint path")
    v.add_argument("--size", type=_positive_int, default=224, help="image size of the parity batch")
    v.add_argument("--batch", type=_positive_int, default=8, help="batch size of the parity batch")
    v.add_argument("--in-chans", type=_positive_int, default=None,
                   help="channels of the parity batch (default: the model's)")
    _add_attention_args(v)
    v.set_defaults(func=cmd_convert)

    i = sub.add_parser("inspect", help="per-block table: pattern, attention, gamma, parameters")
    i.add_argument("source", help="resattn name, torchvision:NAME, timm:NAME, or checkpoint path")
    i.set_defaults(func=cmd_inspect)

    e = sub.add_parser("export", help="write ONNX / TorchScript / ExportedProgram (dynamic batch, "
                                      "height, width) and check it against PyTorch at three sizes")
    e.add_argument("checkpoint", help="resattn checkpoint path (or an architecture spec)")
    e.add_argument("--format", choices=["onnx", "torchscript", "exported-program"], default="onnx")
    e.add_argument("--out", default=None,
                   help="output file (default: the checkpoint's path with .onnx/.pt/.pt2)")
    e.add_argument("--size", type=_csv(int), default=None,
                   help="H or H,W of the example input (default: the model's pretrained_cfg)")
    e.add_argument("--batch", type=int, default=2, help="example batch size (>= 2)")
    e.add_argument("--onnx-exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="auto: torch's dynamo exporter, the legacy one if it fails")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter's default)")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="time, saved-for-backward bytes and FLOPs of each pattern vs "
                                     "plain and timm's peers, in one interleaved run (CSV + PNG)")
    b.add_argument("--model", default="cifar_resnet20")
    b.add_argument("--variants", "--patterns", type=_csv(str), default=None,
                   help="comma list of PATTERN[:ATTN] or dual[-gate]:SKIP/RES (default: none, "
                        "branch:se, post:se, pre:se, dual:eca/cbam, dual-gate:eca/cbam, dual:se/se, "
                        "dual:eca/eca)")
    b.add_argument("--batch-size", type=_positive_int, default=128)
    b.add_argument("--input", type=_chw, default=[1, 28, 28], help="C,H,W (default 1,28,28)")
    b.add_argument("--steps", type=_positive_int, default=3, help="steps per row and round")
    b.add_argument("--rounds", type=_positive_int, default=5, help="interleaved rounds (median)")
    b.add_argument("--dtype", "--precision", dest="dtype", type=_precisions,
                   default=[DEFAULT_PRECISION],
                   help="comma list of fp32, bf16 (autocast), auto; with several, every row in "
                        f"each, interleaved in one run (default {DEFAULT_PRECISION})")
    b.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    b.add_argument("--compile", action="store_true", help="add every row under torch.compile")
    b.add_argument("--no-reference", action="store_true",
                   help="leave out the unfused (reference) form of each variant")
    b.add_argument("--no-peers", action="store_true", help="leave out timm's peers")
    b.add_argument("--no-channels-last", action="store_true")
    b.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default torch's; 1 is steadier on a shared machine)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--out", default="runs/bench", help="folder for bench.csv and bench.png")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad options, missing data or files (DataNotFoundError)
        print(f"resattn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resattn {args.command}: interrupted; finished epochs are checkpointed, run the "
              "same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
