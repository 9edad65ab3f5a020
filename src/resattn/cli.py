"""Command line: ``resattn train | compare | study | evidence | convert | inspect | export | bench
| advise``
(also ``python -m resattn``)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .utils.precision import DEFAULT_PRECISION

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
    from .utils.precision import PRECISIONS
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
    from .workflow.data import DATASETS
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="default fashion-mnist")
    g.add_argument("--data-dir", default=None, help="where the data set lies")
    g.add_argument("--download", action="store_const", const=True, default=None,
                   help="let torchvision download the data set (needs a network)")
    g.add_argument("--train-subset", type=int, default=None, help="class-balanced training subset")


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    """Where a grid's runs execute (``compare``; any command that runs a grid)."""
    from .workflow.executors import EXECUTORS
    g = p.add_argument_group("executor (where the runs execute; see resattn.workflow.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default="sequential",
                   help="sequential: one run after another here (default); processes: --workers "
                        "runs at a time on this machine (concurrent.futures); ray: every run a Ray "
                        "task (pip install 'resattn[ray]')")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes: runs at a time (default 2); with --device cuda they share the GPU")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="ray: the cluster: auto (the one running here), HOST:PORT (its head) "
                        "or ray://HOST:PORT (Ray Client); default: RAY_ADDRESS, else start a "
                        "local Ray. An address that does not answer within 10 s is an error")
    g.add_argument("--cpus-per-run", type=float, default=None, metavar="N",
                   help="ray: CPUs per run (default 1); processes: torch threads per run "
                        "(default CPU count / workers)")
    g.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="ray: GPUs per run, 0..1 (0.5: two runs share a GPU; default 1 when the "
                        "cluster has GPUs, else 0)")


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="torch threads per run (default: torch's choice for this machine, or the "
                        "CPUs a Ray task gets); on a shared CPU 1 is often several times faster")


def _apply_threads(args: argparse.Namespace) -> None:
    """``--threads`` for the runs of this process (Ray tasks get theirs from the executor)."""
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)


def _executor_from_args(args: argparse.Namespace):
    """The executor the flags of :func:`_add_executor_args` ask for.

    Raises:
        ValueError: Ray options without ``--executor ray``, bad numbers, or Ray not installed
            (the message names the extra ``resattn[ray]``).
    """
    from .workflow.executors import make_executor
    try:
        return make_executor(args.executor, address=args.address, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run, workers=args.workers,
                             threads=getattr(args, "threads", None))
    except ImportError as e:
        raise ValueError(f"--executor {args.executor}: {e}") from e


def _command_line(args: argparse.Namespace, drop: tuple[str, ...] = ()) -> str:
    """The command as it was typed (every flag: ``--executor`` and its options included), for
    reports: the arguments :func:`main` parsed, else this process's own; less the switches in
    ``drop``."""
    argv = getattr(args, "argv", None)
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["resattn", *(a for a in argv if a not in drop)])


# ----------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from .workflow.train import TrainConfig, train
    cfg = TrainConfig(model=args.model, model_kwargs=_attention_kwargs(args),
                      **{k: v for k, v in dict(dataset=args.dataset, data_dir=args.data_dir,
                                                 download=args.download, train_subset=args.train_subset,
                                                 epochs=args.epochs, batch_size=args.batch_size,
                                                 lr=args.lr, seed=args.seed).items() if v is not None},
                      **_training_kwargs(args))
    if args.resume and not (Path(args.out) / "checkpoint.pt").is_file():
        raise ValueError(f"--resume: {args.out} has no checkpoint.pt to continue from (leave "
                         "--resume out to start a new run there)")
    _apply_threads(args)
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

    from .workflow.compare import CompareConfig
    from .workflow.train import TrainConfig
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


def compare_config(args: argparse.Namespace):
    """The :class:`~resattn.workflow.compare.CompareConfig` of ``resattn compare`` arguments, with one
    precedence: flags > the ``--config`` YAML > defaults. ``--full`` and ``full: true`` each
    stand for ``quick: false, epochs: 15`` at their own level, below that level's explicit
    keys (``--full --epochs 3``: 3 epochs; a YAML with ``full: true`` and ``epochs: 3``: 3;
    a YAML with ``epochs: 3`` and the flag ``--full``: 15)."""
    from .workflow.compare import FULL, CompareConfig
    from .workflow.train import TrainConfig

    opts: dict[str, Any] = {}
    if args.config:
        opts.update(_load_yaml(args.config))
        if "lr" in opts:  # YAML may say lr: 0.1 or lr: [0.05, 0.1]; --lr (below) overrides it
            lr = opts.pop("lr")
            opts["lrs"] = lr if isinstance(lr, list) else [lr]
    if args.full:
        opts.update(FULL)
    cli = dict(dataset=args.dataset, data_dir=args.data_dir, download=args.download,
               model=args.model, patterns=args.patterns, attn=args.attn, skip_attn=args.skip_attn,
               seeds=args.seeds, lrs=args.lr, epochs=args.epochs, train_subset=args.train_subset,
               batch_size=args.batch_size, out=args.out, baseline=args.baseline)
    opts.update({k: v for k, v in cli.items() if v is not None})
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
    return CompareConfig(**opts, train_options=train_opts)


def cmd_compare(args: argparse.Namespace) -> int:
    from .workflow.compare import run_compare
    cfg = compare_config(args)
    executor = _executor_from_args(args)
    _apply_threads(args)
    command = _command_line(args)
    res = run_compare(cfg, command=command, progress=not args.no_progress, executor=executor,
                      resume=not args.no_resume, cache_dir=args.cache)
    print()
    print(res["table"])
    print()
    print(f"wall time {res['wall_time_s']:.0f} s")
    for name, path in res["paths"].items():
        print(f"{name:>10}: {path}")
    _say_failures(res["rows"])
    bad = [r for r in res["rows"] if r["status"] == "failed"]
    return 4 if bad else 0


def _say_failures(rows: list[dict[str, Any]]) -> None:
    """One line per failed run on stderr; a defect in resattn is named as one."""
    for r in rows:
        if r.get("status") != "failed":
            continue
        log = f"; traceback in {r['log']}" if r.get("log") else ""
        what = ("a defect in resattn (please report it with the traceback)" if r.get("defect")
                else "failed")
        print(f"resattn: run {r['run_id']}: {what}: {r.get('error')}{log}", file=sys.stderr)


def cmd_study(args: argparse.Namespace) -> int:
    from .workflow.study import estimate_cpu_hours, load_study, run_studies, validity_word

    studies = [load_study(f) for f in args.files]
    if args.budget is None:
        for study in studies:
            print(f"{study.path}: choose a budget with --budget; this study defines:")
            for name, settings in study.budgets.items():
                opts = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "factors")
                print(f"  {name:<6} {len(study.specs(name)):>3} runs  {opts}")
        return 0 if args.dry_run else 2
    if args.dry_run:
        from .workflow.cache import run_key
        keys: set[str] = set()
        for st in studies:
            specs = st.specs(args.budget)
            mine = {run_key(s.config) for s in specs}
            keys |= mine
            print(f"{st.path}: valid; budget {args.budget}: {len(specs)} runs ({len(mine)} distinct), "
                  f"about {estimate_cpu_hours(specs):.1f} h on a 2-core CPU (estimate)")
        if len(studies) > 1:
            print(f"all: {len(keys)} distinct runs (shared runs trained once)")
        return 0
    if len(studies) > 1 and args.out is None:
        args.out = str(Path("runs") / "studies")
    if len(studies) > 1:  # --out is the root: one folder per study in it, the cache beside them
        outs = {st.name: str(Path(args.out) / f"{Path(st.path).stem}-{args.budget}") for st in studies}
    else:
        outs = {studies[0].name: args.out or str(Path("runs") / "studies" / f"{studies[0].name}-{args.budget}")}
    names = [st.name for st in studies]
    if len(set(names)) != len(names):
        raise ValueError(f"two study files have the same name: {names}")
    cache = args.cache or (str(Path(args.out) / "cache") if len(studies) > 1 else None)
    extra = {k: v for k, v in dict(device=args.device, tensorboard=args.tensorboard or None,
                                   compile=args.compile or None, data_dir=args.data_dir,
                                   num_workers=args.num_workers,
                                   precision=args.precision).items() if v is not None}
    # the command that trains these runs: a --report-only report records that in study.json
    command = _command_line(args, drop=("--report-only",))
    if args.report_only:
        from .workflow.executors import ReportOnlyExecutor
        executor = ReportOnlyExecutor()
    else:
        executor = _executor_from_args(args)
    res = run_studies(studies, args.budget, outs, command=command, progress=not args.no_progress,
                      extra=extra, executor=executor, resume=not args.no_resume,
                      cache_dir=cache)
    print()
    failed = False
    for st, r in zip(studies, res):
        print(f"{st.name}: {validity_word(r['validity'])}; report: {r['report']}")
        for i, h in enumerate(r["results"], 1):
            print(f"  hypothesis {i}: {h['verdict']}: {h['hypothesis']}")
        failed |= any(row["status"] == "failed" for row in r["rows"])
        _say_failures(r["rows"])
    print(f"wall time {res[0]['wall_time_s']:.0f} s")
    return 4 if failed else 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from .workflow.evidence import build_evidence
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

    from .tools.convert import convert, parity_check
    from .tools.weights import load_model, load_pretrained, save_checkpoint

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
    if not parity["passed"] and report.warnings:
        print("the options above change the function (see the warning); exit status 5 says "
              "parity failed, as for any conversion that does not preserve the function")
    return 0 if parity["passed"] else 5


def cmd_inspect(args: argparse.Namespace) -> int:
    from .tools.inspect import format_table, inspect_model
    from .tools.weights import load_model

    model, _ = load_model(args.source)
    print(format_table(inspect_model(model)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .tools.export import export
    report = export(args.checkpoint, args.out, args.format, batch=args.batch,
                    image_size=args.size, onnx_exporter=args.onnx_exporter, opset=args.opset)
    print(report)
    return 0 if report.passed else 6


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .tools.bench import DEFAULT_VARIANTS, format_table, plot, run_bench, write_csv

    if args.threads:
        torch.set_num_threads(args.threads)
    from .workflow.report import device_label
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


def cmd_advise(args: argparse.Namespace) -> int:
    from .tools.advise import advise, dataset_batches, save_applied
    from .workflow.data import load_dataset
    from .tools.weights import load_model, parse_arch

    bundle = load_dataset(args.dataset or "fashion-mnist", args.data_dir, download=bool(args.download),
                          train_subset=args.train_subset, seed=args.seed)
    if Path(args.source).is_file():
        model, _ = load_model(args.source)
    else:
        kwargs: dict[str, Any] = {"num_classes": bundle.num_classes}
        if parse_arch(args.source)[0] != "torchvision":
            kwargs["in_chans"] = bundle.in_chans
        model, _ = load_model(args.source, **kwargs)
    import torch
    stem = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    data = dataset_batches(bundle.train, batch_size=args.batch_size, batches=args.batches,
                           seed=args.seed, in_chans=stem.in_channels if stem is not None else None)
    result = advise(model, data, types=args.types, paths=args.paths, stages=args.stages,
                    method=args.method, batches=args.batches, inits=args.inits, lr=args.probe_lr,
                    seed=args.seed, bf16=args.bf16, device=args.device)
    meta = result.meta
    print(f"{len(result.rows)} candidate gates, method {meta['method']}, {meta['inits']} mask "
          f"initialisations x {meta['batches']} batches of {meta['batch_size']}: "
          f"{meta['seconds']:.1f} s on {meta['device']}")
    print(result.to_markdown(limit=args.show))
    if args.out:
        for kind, path in result.save(args.out).items():
            print(f"{kind}: {path}")
    if args.apply:
        result.apply(model, args.apply)
        print("opened (gamma = 0): " + "; ".join(
            f"{p['block']} {p['pattern']} " + ",".join(f"{k}={v}" for k, v in p.items()
                                                        if k not in ("block", "pattern"))
            for p in model.resattn_advice))
        if args.out:
            print(f"model: {save_applied(model, Path(args.out) / 'applied.pt')} "
                  "(resattn.tools.advise.load_applied rebuilds it)")
    return 0


# ----------------------------------------------------------------------------- parser

def _add_train_command(sub: Any) -> None:
    """The ``resattn train`` subcommand."""
    from .workflow.train import TrainConfig
    d = TrainConfig()
    t = sub.add_parser("train", help="train one model")
    t.add_argument("--model", default=d.model,
                   help="resattn model name (see resattn.list_models()) (default: %(default)s)")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"epochs (default: {d.epochs})")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help=f"training batch size (default: {d.batch_size})")
    t.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of the warm-up + cosine schedule (default: {d.lr:g})")
    t.add_argument("--seed", type=int, default=None,
                   help=f"seed of initialisation, batch order and augmentation (default: {d.seed})")
    t.add_argument("--out", default="runs/train",
                   help="run folder (metrics, checkpoint, result) (default: %(default)s)")
    resume = t.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="require OUT/checkpoint.pt and continue from it (an error when there "
                             "is none; without this flag a checkpoint is still continued from)")
    resume.add_argument("--no-resume", action="store_true",
                        help="start over even if a checkpoint exists")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one line per epoch is printed either way)")
    _add_threads_arg(t)
    _add_data_args(t)
    _add_attention_args(t)
    _add_training_args(t)
    t.set_defaults(func=cmd_train)


def _add_compare_command(sub: Any) -> None:
    """The ``resattn compare`` subcommand."""
    c = sub.add_parser("compare", help="train a grid of patterns and write a report (the main job)")
    c.add_argument("--config", default=None,
                   help="YAML file with compare options; flags override it, it overrides the "
                        "defaults (see resattn.cli.compare_config)")
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
    c.add_argument("--no-resume", action="store_true",
                   help="unfinished runs start over instead of continuing from their checkpoint "
                        "(finished runs are still reused)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_arg(c)
    c.add_argument("--cache", default=None, metavar="DIR",
                   help="train through the run cache DIR (resattn.workflow.cache; shared with studies, "
                        "e.g. runs/studies/cache): identical runs are trained once")
    _add_data_args(c)
    _add_training_args(c)
    _add_executor_args(c)
    c.set_defaults(func=cmd_compare)


def _add_study_command(sub: Any) -> None:
    """The ``resattn study`` subcommand."""
    s = sub.add_parser("study", help="run a pre-registered study file and write its report and verdict")
    s.add_argument("files", nargs="+", metavar="FILE",
                   help="study YAML (see studies/ and resattn.workflow.study); several files run as one grid "
                        "(shared runs trained once), each study in OUT/<file stem>-<budget>")
    s.add_argument("--budget", choices=("smoke", "cpu", "full"), default=None,
                   help="smoke: a plumbing check; cpu: 2 cores; full: a GPU. Without "
                        "it, the files' budgets are listed and nothing runs")
    s.add_argument("--out", default=None,
                   help="one file: its output folder (default runs/studies/NAME-BUDGET); several: "
                        "the root that holds their folders and the run cache (default runs/studies)")
    s.add_argument("--cache", default=None,
                   help="the run cache (resattn.workflow.cache; default: beside the output folder(s), "
                        "<parent>/cache or OUT/cache)")
    s.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    s.add_argument("--precision", type=_precision, default=None,
                   help="auto | fp32 | bf16 for every run (default: the study file's, else "
                        f"{DEFAULT_PRECISION})")
    s.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                   help="same as --precision bf16")
    s.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (image folders)")
    s.add_argument("--data-dir", default=None,
                   help="where the data set lies (default: the data set's usual places; not part "
                        "of a run's cache key)")
    s.add_argument("--tensorboard", action="store_true", help="TensorBoard scalars per run")
    s.add_argument("--compile", action="store_true", help="torch.compile each run's model")
    s.add_argument("--dry-run", action="store_true", help="validate and count the runs; train nothing")
    s.add_argument("--no-resume", action="store_true",
                   help="unfinished runs start over instead of continuing from their checkpoint "
                        "(finished runs are still reused)")
    s.add_argument("--report-only", action="store_true",
                   help="train nothing: write the reports from the runs the cache holds (the "
                        "others count as missing: their cells are incomplete)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_arg(s)
    _add_executor_args(s)
    s.set_defaults(func=cmd_study)


def _add_evidence_command(sub: Any) -> None:
    """The ``resattn evidence`` subcommand."""
    e = sub.add_parser("evidence", help="build the evidence page from finished study folders")
    e.add_argument("runs", nargs="+", help="study output folders (each with study.json)")
    e.add_argument("--out", default="docs/evidence.md", help="the page (plots go to its folder/evidence/)")
    e.set_defaults(func=cmd_evidence)


def _add_convert_command(sub: Any) -> None:
    """The ``resattn convert`` subcommand."""
    v = sub.add_parser("convert", help="retrofit attention into a (pretrained) ResNet, checking parity")
    v.add_argument("source", help="resattn name, torchvision:NAME, timm:NAME (resattn_* names "
                                  "without it), a checkpoint path or a run folder")
    v.add_argument("--weights", default=None, help="state_dict/checkpoint path (or resnet name) to load first")
    v.add_argument("--out", default=None, help="converted checkpoint path")
    v.add_argument("--size", type=_positive_int, default=224, help="image size of the parity batch")
    v.add_argument("--batch", type=_positive_int, default=8, help="batch size of the parity batch")
    v.add_argument("--in-chans", type=_positive_int, default=None,
                   help="channels of the parity batch (default: the model's)")
    _add_attention_args(v)
    v.set_defaults(func=cmd_convert)


def _add_inspect_command(sub: Any) -> None:
    """The ``resattn inspect`` subcommand."""
    i = sub.add_parser("inspect", help="per-block table: pattern, attention, gamma, parameters")
    i.add_argument("source", help="resattn name, torchvision:NAME, timm:NAME (resattn_* names "
                                  "without it), a checkpoint path or a run folder")
    i.set_defaults(func=cmd_inspect)


def _add_export_command(sub: Any) -> None:
    """The ``resattn export`` subcommand."""
    e = sub.add_parser("export", help="write ONNX / TorchScript / ExportedProgram (dynamic batch, "
                                      "height, width) and check it against PyTorch at three sizes")
    e.add_argument("checkpoint", help="resattn checkpoint path (or an architecture spec)")
    e.add_argument("--format", choices=["onnx", "torchscript", "exported-program"], default="onnx",
                   help="onnx (checked in onnxruntime), torchscript (torch.jit) or "
                        "exported-program (torch.export, .pt2) (default: %(default)s)")
    e.add_argument("--out", default=None,
                   help="output file, never the checkpoint itself (default: the checkpoint's path "
                        "with .onnx, .torchscript.pt or .pt2)")
    e.add_argument("--size", type=_csv(int), default=None,
                   help="H or H,W of the example input (default: the model's pretrained_cfg)")
    e.add_argument("--batch", type=int, default=2, help="example batch size (>= 2)")
    e.add_argument("--onnx-exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="auto: torch's dynamo exporter, the legacy one if it fails")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter's default)")
    e.set_defaults(func=cmd_export)


def _add_bench_command(sub: Any) -> None:
    """The ``resattn bench`` subcommand."""
    b = sub.add_parser("bench", help="time, saved-for-backward bytes and FLOPs of each pattern vs "
                                     "plain and timm's peers, in one interleaved run (CSV + PNG)")
    b.add_argument("--model", default="cifar_resnet20", help="resattn model (default: %(default)s)")
    b.add_argument("--variants", "--patterns", type=_csv(str), default=None,
                   help="comma list of PATTERN[:ATTN] or dual[-gate]:SKIP/RES (default: none, "
                        "branch:se, post:se, pre:se, dual:eca/cbam, dual-gate:eca/cbam, dual:se/se, "
                        "dual:eca/eca)")
    b.add_argument("--batch-size", type=_positive_int, default=128,
                   help="batch size of each timed step (default: %(default)s)")
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
    b.add_argument("--no-channels-last", action="store_true",
                   help="keep NCHW memory layout (default: channels_last)")
    b.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default torch's; 1 is steadier on a shared machine)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--out", default="runs/bench", help="folder for bench.csv and bench.png")
    b.set_defaults(func=cmd_bench)


def _add_advise_command(sub: Any) -> None:
    """The ``resattn advise`` subcommand."""
    a = sub.add_parser("advise", help="rank where attention would help in a model (inert "
                       "candidate gates scored on a few batches); optionally open the top K")
    a.add_argument("source", help="resattn name, torchvision:NAME, timm:NAME, or checkpoint path")
    a.add_argument("--types", type=_csv(str), default=["se"],
                   help="attention types of the candidates (comma list, default se)")
    a.add_argument("--paths", type=_csv(str), default=["pre", "branch", "skip", "post"],
                   help="gate positions: pre, branch (= dual residual), skip (dual skip), post; "
                        "dual = skip,branch (default all four)")
    a.add_argument("--stages", type=_stages, default=None, help="1-based stages (default all)")
    a.add_argument("--method", choices=["probe", "grad"], default="probe",
                   help="probe: train the gates alone a few steps (default); grad: |dL/dgamma| at 0")
    a.add_argument("--batches", type=_positive_int, default=4, help="batches per initialisation")
    a.add_argument("--inits", type=_positive_int, default=2, help="mask initialisations")
    a.add_argument("--batch-size", type=_positive_int, default=128, help="images per batch")
    a.add_argument("--probe-lr", type=float, default=0.05, help="Adam step of the probe")
    a.add_argument("--seed", type=int, default=0, help="seed of batches and mask initialisations")
    a.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    a.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the model's)")
    a.add_argument("--apply", type=int, default=0, metavar="K",
                   help="open the top K compatible placements (gamma = 0) and save the model")
    a.add_argument("--show", type=int, default=20, help="rows printed (all go to the files)")
    a.add_argument("--out", default=None, help="folder for advice.csv/.md/.json/.png, applied.pt")
    _add_data_args(a)
    a.set_defaults(func=cmd_advise)


def build_parser() -> argparse.ArgumentParser:
    """The ``resattn`` parser: one subcommand per ``_add_<command>_command``."""
    p = argparse.ArgumentParser(prog="resattn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train_command, _add_compare_command, _add_study_command,
                _add_evidence_command, _add_convert_command, _add_inspect_command,
                _add_export_command, _add_bench_command, _add_advise_command):
        add(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, for reports (_command_line)
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
