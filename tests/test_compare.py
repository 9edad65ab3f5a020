import csv
import re
import json
from pathlib import Path

import pytest

import resattn.workflow.compare as compare_mod
from resattn.cli import main
from resattn.workflow.compare import CompareConfig, expand_grid, run_compare

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _rows(out):
    with (Path(out) / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def digits_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    cfg = CompareConfig(dataset="digits", patterns=["none", "post", "dual", "dual-gate"], epochs=4,
                        seeds=[0], out=str(out), train_options={"log_every": 5, "augment": False})
    res = run_compare(cfg, command="resattn compare --dataset digits", progress=False, log=lambda s: None)
    return out, res, cfg


def test_compare_writes_csv_report_and_plots(digits_compare):
    out, res, _ = digits_compare
    rows = _rows(out)
    assert [r["run_id"] for r in rows] == ["none-lr0.1-s0", "post-se-lr0.1-s0", "dual-cbam-lr0.1-s0",
                                           "dual-gate-cbam-lr0.1-s0"]
    assert all(r["status"] == "finished" and r["diverged"] == "False" for r in rows)
    assert [int(r["params"]) for r in rows][0] == 269_434  # cifar_resnet20, 1 input channel
    assert all(float(r["mflops"]) > 4.9 and float(r["images_per_s"]) > 0 for r in rows)
    assert all(85.0 <= float(r["final_acc"]) <= 100.0 for r in rows), [r["final_acc"] for r in rows]
    report = (out / "report.md").read_text()
    assert "| variant | attn | runs | params | MFLOPs | final_acc mean ± std | Δ vs baseline [95% CI] | verdict |" in report
    assert "(n=1)" in report and "± 0.00" not in report
    assert "resattn compare --dataset digits" in report and "torch 2.14.1" in report
    assert "## Stability of the dual-path runs" in report and "within run-to-run noise" in report
    assert re.search(r"`dual-gate-cbam-lr0.1-s0`: finished; after epoch 4 the lowest skip gain is 0\.[0-6]", report)
    for name in ("accuracy", "loss", "gamma", "skip_gain"):
        assert (out / f"{name}.png").stat().st_size > 5000, name
        assert name in res["paths"]
    assert "dual-gate" in res["table"]


def test_gate_on_the_skip_shows_gain_below_one_from_the_first_epoch(digits_compare):
    out, _, _ = digits_compare
    first = lambda run: [json.loads(l) for l in (out / "runs" / run / "metrics.jsonl").read_text().splitlines()
                         if json.loads(l)["type"] == "epoch"][0]["gates"]
    gate = first("dual-gate-cbam-lr0.1-s0")
    near = first("dual-cbam-lr0.1-s0")
    dual_blocks = [b for b in gate if "gate_energy/skip_attn" in gate[b]]
    assert dual_blocks == [f"layer{s}.{i}" for s in (2, 3) for i in range(3)]
    assert all(gate[b]["skip_gain"] < 0.8 for b in dual_blocks)      # ECA sigmoid mask ~0.5
    assert all(0.75 <= near[b]["skip_gain"] <= 1.25 for b in dual_blocks)  # bounded near-identity
    closing = [json.loads(l) for l in (out / "runs" / "dual-gate-cbam-lr0.1-s0" / "metrics.jsonl").read_text().splitlines()
               if json.loads(l)["type"] == "epoch"][0]["closing"]
    assert [name for name, _ in closing] == [b for b in dual_blocks if gate[b]["skip_gain"] < 0.7]
    assert closing  # the warning fired


def test_rerun_skips_finished_runs(digits_compare):
    out, _, cfg = digits_compare
    logs = []
    res = run_compare(cfg, progress=False, log=logs.append)
    assert sum("skipped" in l for l in logs) == 4 and not any("training" in l for l in logs)
    assert [r["status"] for r in res["rows"]] == ["finished"] * 4


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    real_train = compare_mod.train

    def flaky(config, run_dir, **kw):
        if config.model_kwargs["pattern"] == "post":
            raise RuntimeError("boom")
        return real_train(config, run_dir, **kw)

    monkeypatch.setattr(compare_mod, "train", flaky)
    cfg = CompareConfig(dataset="digits", patterns=["post", "none"], epochs=1, seeds=[0],
                        out=str(tmp_path))
    res = run_compare(cfg, progress=False, log=lambda s: None)
    assert [r["status"] for r in res["rows"]] == ["failed", "finished"]
    assert "RuntimeError: boom" in (tmp_path / "report.md").read_text()
    monkeypatch.setattr(compare_mod, "train", real_train)
    res = run_compare(cfg, progress=False, log=lambda s: None)  # retried, the finished one kept
    assert [r["status"] for r in res["rows"]] == ["finished", "finished"]


def test_grid_expansion_and_errors():
    cfg = CompareConfig(patterns=["0", "branch", "dual"], attn=["se", "eca"], seeds=[0, 1], lrs=[0.1])
    specs = expand_grid(cfg.validate())
    assert [s.run_id for s in specs][:3] == ["none-lr0.1-s0", "none-lr0.1-s1", "branch-se-lr0.1-s0"]
    assert len(specs) == 2 + 2 * 2 + 2 * 2
    dual = [s for s in specs if s.variant == "dual"][0]
    assert dual.config.model_kwargs == {"pattern": "dual", "skip_attn": "eca", "res_attn": "se"}
    assert cfg.effective_train_subset() == 8000 and cfg.effective_test_subset() == 2000
    assert CompareConfig().seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="patterns=\\['diagonal'\\] not allowed; allowed: none, branch"):
        CompareConfig(patterns=["diagonal"]).validate()
    with pytest.raises(ValueError, match="attn='xse' is not allowed"):
        CompareConfig(attn=["xse"]).validate()
    with pytest.raises(ValueError, match="dataset='mnist' is not allowed"):
        CompareConfig(dataset="mnist").validate()



@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=[0, 0]), r"seeds=\[0, 0\] repeats 0; each value must appear once"),
    (dict(patterns=["none", "0", "dual"]), r"patterns=\['none', 'none', 'dual'\] repeats none"),
    (dict(lrs=[0.1, 0.1]), r"lr=\[0.1, 0.1\] repeats 0.1"),
    (dict(attn=["se", "se"]), r"attn=\['se', 'se'\] repeats se"),
])
def test_repeated_grid_values_are_refused(kwargs, match):
    # found by QA: --seeds 0,0 ran one run, listed it twice and reported n=2, std 0
    with pytest.raises(ValueError, match=match):
        CompareConfig(dataset="digits", **kwargs).validate()


def test_cli_compare_with_yaml_and_python_m(tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("dataset: digits\npatterns: [none]\nepochs: 1\nseeds: [0, 1]\nlr: 0.05\n")
    assert main(["compare", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "none" in printed and "report:" in printed and "results.csv" in printed
    rows = _rows(tmp_path / "o")
    assert [r["run_id"] for r in rows] == ["none-lr0.05-s0", "none-lr0.05-s1"]


def test_cli_bad_input_is_a_clear_error(capsys):
    assert main(["compare", "--patterns", "none,wrong", "--dataset", "digits"]) == 2
    assert "patterns=['wrong'] not allowed" in capsys.readouterr().err


def test_cli_missing_data_says_where_it_looked(tmp_path, capsys):
    code = main(["compare", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"),
                 "--patterns", "none", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err and "--download" in err


@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_default_path_on_real_fashion_mnist_reaches_the_floor(tmp_path):
    # The default compare's path on a smaller budget (6k images, 2 epochs); measured 76.3% here.
    cfg = CompareConfig(patterns=["none"], seeds=[0], train_subset=6000, test_subset=2000, out=str(tmp_path))
    res = run_compare(cfg, progress=False, log=lambda s: None)
    row = res["rows"][0]
    assert row["status"] == "finished"
    assert row["final_acc"] >= 72.0


def test_report_command_parses_back_to_the_same_grid():
    import shlex

    from resattn.cli import build_parser
    cfg = CompareConfig(dataset="digits", patterns=["none", "dual"], attn=["se"], seeds=[0, 1],
                        lrs=[0.05], epochs=3, train_options={"log_every": 5, "augment": False})
    args = build_parser().parse_args(shlex.split(cfg.to_command())[1:])
    assert (args.dataset, args.patterns, args.attn, args.seeds, args.lr, args.epochs) == (
        "digits", ["none", "dual"], ["se"], [0, 1], [0.05], 3)
    assert args.log_every == 5 and args.augment is False


def test_rerun_with_other_options_is_refused_not_reused(digits_compare):
    out, _, cfg = digits_compare
    import dataclasses
    changed = dataclasses.replace(cfg, epochs=5)
    with pytest.raises(ValueError, match=r"holds runs made with other options.*none-lr0.1-s0 \(epochs: 4 -> 5\)"):
        run_compare(changed, progress=False, log=lambda s: None)


def test_yaml_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    for text, match in [("epochz: 3\n", "unknown option 'epochz'"),
                        ("bad: : :\n", "cannot read it as YAML"),
                        ("seeds: [a]\n", "seeds=\\['a'\\] must be a list of int"),
                        ("- 1\n", "expected a mapping")]:
        bad.write_text(text)
        assert main(["compare", "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and re.search(match, err), err
    assert main(["compare", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_three_seeds_give_paired_cis_in_csv_report_and_plot(tmp_path):
    cfg = CompareConfig(dataset="digits", patterns=["none", "branch"], epochs=1, seeds=[0, 1, 2],
                        out=str(tmp_path), train_options={"log_every": 2, "monitor": False})
    res = run_compare(cfg, progress=False, log=lambda s: None)
    rows = _rows(tmp_path)
    acc = {(r["variant"], int(r["seed"])): float(r["final_acc"]) for r in rows}
    diffs = [acc[("branch", s)] - acc[("none", s)] for s in range(3)]
    import statistics
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = 4.302652729911275 * sd / 3 ** 0.5  # t_{0.975, 2}
    branch = [r for r in rows if r["variant"] == "branch"][0]
    assert int(branch["group_n"]) == 3
    assert float(branch["group_diff"]) == pytest.approx(mean, abs=1e-9)
    assert float(branch["group_ci_low"]) == pytest.approx(mean - half, abs=1e-6)
    assert float(branch["group_ci_high"]) == pytest.approx(mean + half, abs=1e-6)
    expected = "better" if mean - half > 0 else "worse" if mean + half < 0 else "indistinguishable"
    assert branch["group_verdict"] == expected
    assert all(r["loss_spikes"] != "" and float(r["max_grad_norm"]) > 0 for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]" in report and "(n=3)" in report
    assert (tmp_path / "accuracy.png").stat().st_size > 5000
