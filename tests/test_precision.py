"""Training precision: auto | fp32 | bf16, the older bf16 switch, and what a run records."""
import json
from pathlib import Path

import pytest
import torch

from resattn import precision as prec
from resattn.cli import build_parser, _training_kwargs
from resattn.utils.precision import resolve_precision
from resattn.workflow.train import TrainConfig, config_changes, train


def test_resolve_precision(monkeypatch):
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(ValueError, match=r"precision='fp16' is not allowed; allowed: auto, fp32, bf16"):
        resolve_precision("fp16")


def test_native_bf16_reads_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    expected = "amx_bf16" in flags.split() or "avx512_bf16" in flags.split()
    assert prec.cpu_has_native_bf16() == expected


def test_bf16_true_is_the_older_spelling_of_precision_bf16():
    cfg = TrainConfig(bf16=True)
    assert cfg.precision == "bf16" and cfg.bf16 is None
    assert "bf16" not in cfg.to_dict() and cfg.to_dict()["precision"] == "bf16"
    # a config written before precision existed (result.json, checkpoint, study file)
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "precision"}
    assert TrainConfig.from_dict({**old, "bf16": True}).precision == "bf16"
    assert TrainConfig.from_dict({**old, "bf16": False}).precision == "fp32"
    with pytest.raises(ValueError, match="bf16=True contradicts precision='fp32'"):
        TrainConfig(bf16=True, precision="fp32")
    with pytest.raises(ValueError, match="bf16=False contradicts precision='bf16'"):
        TrainConfig(bf16=False, precision="bf16")
    assert TrainConfig(bf16=False, precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="bf16='yes' must be true or false"):
        TrainConfig(bf16="yes").validate()
    with pytest.raises(ValueError, match="precision='half' is not allowed"):
        TrainConfig(precision="half").validate()


def test_bf16_false_in_an_old_config_stays_fp32_whatever_the_default(monkeypatch):
    """An old config's explicit bf16: false meant fp32; it keeps meaning that if the default
    precision becomes auto."""
    import resattn.workflow.train as t
    monkeypatch.setattr(t, "DEFAULT_PRECISION", "auto")
    assert TrainConfig(bf16=False, precision="auto").precision == "fp32"
    assert TrainConfig(bf16=True, precision="auto").precision == "bf16"


def test_old_saved_configs_resume_under_the_new_name():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "precision"}
    assert config_changes({**old, "bf16": True}, TrainConfig(precision="bf16")) == {}
    assert config_changes({**old, "bf16": False}, TrainConfig(precision="fp32")) == {}
    assert config_changes({**old, "bf16": False}, TrainConfig(precision="bf16")) == {
        "precision": ("fp32", "bf16")}
    here = resolve_precision("auto", "cpu")
    # auto compares as what it means on this machine: a run made with it agrees with that
    auto_cpu = TrainConfig(precision="auto", device="cpu")
    assert config_changes(TrainConfig(precision=here, device="cpu").to_dict(), auto_cpu) == {}
    other = "fp32" if here == "bf16" else "bf16"
    assert config_changes(TrainConfig(precision=other, device="cpu").to_dict(), auto_cpu) == {
        "precision": (other, here)}


def test_the_default_precision_is_auto_and_a_cache_key_sees_what_it_resolves_to():
    from resattn.workflow.cache import run_key
    assert prec.DEFAULT_PRECISION == "auto" and TrainConfig().precision == "auto"
    here = resolve_precision("auto", "cpu")
    other = "fp32" if here == "bf16" else "bf16"
    assert run_key(TrainConfig(device="cpu")) == run_key(TrainConfig(precision=here, device="cpu"))
    assert run_key(TrainConfig(device="cpu")) != run_key(TrainConfig(precision=other, device="cpu"))


@pytest.mark.parametrize("argv,expected", [
    (["--bf16"], "bf16"), (["--precision", "auto"], "auto"), (["--precision", "fp32"], "fp32"),
    ([], None)])
def test_cli_precision_and_its_alias(argv, expected):
    for command in (["train"], ["compare"]):
        args = build_parser().parse_args(command + argv)
        assert _training_kwargs(args).get("precision") == expected
    args = build_parser().parse_args(["study", "f.yaml"] + argv)
    assert args.precision == expected
    args = build_parser().parse_args(["bench"] + ([a.replace("--bf16", "--dtype") for a in argv]
                                                  + (["bf16"] if argv == ["--bf16"] else [])))
    assert args.dtype == [expected or prec.DEFAULT_PRECISION]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--precision", "fp16"])


def test_bench_takes_a_list_of_precisions():
    args = build_parser().parse_args(["bench", "--precision", "fp32,bf16"])
    assert args.dtype == ["fp32", "bf16"]


def test_run_records_the_resolved_precision(tmp_path, monkeypatch):
    from resattn.workflow.data import load_dataset
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    bundle = load_dataset("digits", train_subset=64, test_subset=32)
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=32, precision="auto", monitor=False,
                      device="cpu")
    r = train(cfg, tmp_path, bundle=bundle, progress=False)
    assert r.status == "finished" and r.precision == "bf16"
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["precision"] == "bf16" and saved["config"]["precision"] == "auto"
    assert "bf16" not in saved["config"]


def test_command_line_precision_wins_over_a_files_bf16(tmp_path):
    from resattn.workflow.study import load_study
    text = (Path(__file__).parent.parent / "studies").glob("*.yaml")
    path = next(iter(sorted(text)))
    import yaml
    data = yaml.safe_load(path.read_text())
    data.setdefault("fixed", {})["bf16"] = True
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    study = load_study(str(f))
    assert {s.config.precision for s in study.specs("smoke")} == {"bf16"}
    assert {s.config.precision for s in study.specs("smoke", extra={"precision": "fp32"})} == {"fp32"}


def test_reports_say_what_precision_ran():
    from resattn.workflow.compare import _saved_precision
    from resattn.workflow.report import machine_lines, precision_text
    assert precision_text([{"precision": "bf16"}] * 3 + [{"precision": None}]) == \
        "bf16 (all 3 runs with a result)"
    assert precision_text([{"precision": "bf16"}, {"precision": "fp32"}]) == "bf16: 1 runs, fp32: 1 runs"
    assert precision_text([{}]) == "unknown"
    assert "- precision: fp32 (all 1 runs with a result)" in machine_lines("cmd", 1.0, [{"precision": "fp32"}])
    # a result.json written before precision was recorded
    assert _saved_precision({"config": {"bf16": True}}) == "bf16"
    assert _saved_precision({"config": {"bf16": False}}) == "fp32"
    assert _saved_precision({"status": "failed"}) is None
