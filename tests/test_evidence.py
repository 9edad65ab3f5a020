"""Statistics, stability metrics, label noise, the study validator, a smoke study, the evidence page."""
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from resattn.cli import main
from resattn.workflow.data import flip_labels, load_dataset
from resattn.workflow.stability import loss_spikes, max_grad_norm, min_skip_gain, run_stability, steps_to_mark
from resattn.workflow.stats import OUTCOMES, format_mean, paired_difference, summarise_values, t_quantile
from resattn.workflow.study import load_study

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- statistics

def test_t_quantiles_match_the_tables():
    assert t_quantile(0.95, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.95, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.99, 10) == pytest.approx(3.169273, abs=1e-6)
    with pytest.raises(ValueError, match="df=0 must be >= 1"):
        t_quantile(0.95, 0)


def test_paired_difference_by_hand():
    a = {0: 85.0, 1: 86.0, 2: 87.5, 7: 99.0}   # seed 7 has no partner
    b = {0: 84.0, 1: 84.5, 2: 86.0}
    p = paired_difference(a, b)
    d = [1.0, 1.5, 1.5]
    half = 4.302653 * statistics.stdev(d) / math.sqrt(3)
    assert p.n == 3 and p.mean_diff == pytest.approx(4 / 3)
    assert p.std_diff == pytest.approx(0.288675, abs=1e-6)
    assert (p.ci_low, p.ci_high) == (pytest.approx(4 / 3 - half, abs=1e-5), pytest.approx(4 / 3 + half, abs=1e-5))
    assert p.ci_low > 0 and p.verdict == "better"
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference(a, b, higher_is_better=False).verdict == "worse"
    noisy = paired_difference({0: 1.0, 1: 3.0, 2: 0.0}, {0: 1.0, 1: 1.0, 2: 1.0})
    assert noisy.verdict == "indistinguishable" and noisy.ci_low < 0 < noisy.ci_high


def test_one_seed_has_no_spread():
    p = paired_difference({0: 2.0}, {0: 1.0})
    assert p.n == 1 and p.mean_diff == 1.0 and p.ci_low is None and p.verdict == "n<2"
    s = summarise_values([84.05])
    assert format_mean(s) == "84.05 (n=1)"
    assert format_mean(summarise_values([1.0, 2.0, 3.0])) == "2.00 ± 1.00 (n=3)"


# ----------------------------------------------------------------------------- stability

def _log():
    steps = [{"type": "step", "step": i, "loss": 1.0, "loss_max": 1.0, "acc": 50.0 + 5 * i,
              "grad_norm": 0.5} for i in range(1, 11)]
    steps[7].update(loss_max=3.5, grad_norm=9.0)    # 3.5 > 3 x median 1.0: a spike
    steps[8].update(loss_max=2.9)                   # under 3x: not a spike
    epochs = [{"type": "epoch", "epoch": 1, "train_loss": 0.9,
               "gates": {"layer2.0": {"skip_gain": 0.8, "gamma/skip_attn": -0.1, "gamma/res_attn": 0.2},
                         "layer3.0": {"skip_gain": 0.95, "gamma/skip_attn": -0.2, "gamma/res_attn": 0.4}}},
              {"type": "epoch", "epoch": 2, "train_loss": 0.7,
               "gates": {"layer2.0": {"skip_gain": 0.9, "gamma/skip_attn": -0.25},
                         "layer3.0": {"skip_gain": 0.6, "gamma/skip_attn": -0.15}}}]
    return steps + epochs


def test_stability_metrics_on_a_synthetic_log():
    log = _log()
    assert loss_spikes(log) == 1
    assert loss_spikes(log, k=2.5) == 2
    assert max_grad_norm(log) == 9.0
    assert steps_to_mark(log) == 6  # acc 80 at step 6
    assert min_skip_gain(log) == (0.6, "layer3.0")
    s = run_stability(log)
    assert s["final_train_loss"] == 0.7
    assert s["gamma_s"] == [pytest.approx(-0.15), pytest.approx(-0.2)]
    assert s["gamma_r"] == [pytest.approx(0.3), None] and s["final_gamma_r"] is None
    assert run_stability([])["loss_spikes"] is None


# ----------------------------------------------------------------------------- data, CLI

def test_label_noise_flips_an_exact_fraction_to_other_classes():
    y = torch.arange(1000) % 10
    noisy = flip_labels(y, 0.2, 10, seed=3)
    changed = noisy != y
    assert int(changed.sum()) == 200 and noisy.min() >= 0 and noisy.max() <= 9
    assert torch.equal(noisy, flip_labels(y, 0.2, 10, seed=3))
    assert not torch.equal(noisy, flip_labels(y, 0.2, 10, seed=4))
    assert torch.equal(flip_labels(y, 0.0, 10), y)
    with pytest.raises(ValueError, match="label_noise=1.0 must be a fraction"):
        flip_labels(y, 1.0, 10)


def test_train_cli_accepts_no_attention_on_a_path_and_label_noise(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--train-subset", "300",
                 "--pattern", "dual", "--res-attn", "none", "--skip-attn", "eca",
                 "--label-noise", "0.3", "--no-progress", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["model_kwargs"]["res_attn"] is None and result["config"]["label_noise"] == 0.3
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert not any("res_attn" in k for k in ckpt["state_dict"])  # no module on the residual path
    assert any("skip_attn" in k for k in ckpt["state_dict"])


def test_same_seed_runs_of_different_variants_see_the_same_batches(tmp_path, monkeypatch):
    import resattn.workflow.train as train_mod
    seen: dict[str, list] = {}
    real = train_mod._epoch_batches

    def spy(run, epoch):
        for x, y in real(run, epoch):
            seen.setdefault(run.out.name, []).append((x.sum().item(), y.tolist()))
            yield x, y

    monkeypatch.setattr(train_mod, "_epoch_batches", spy)
    digits = load_dataset("digits", train_subset=200)
    for name, kw in (("plain", {"pattern": "none"}), ("dual", {"pattern": "dual"})):
        train_mod.train(train_mod.TrainConfig(dataset="digits", epochs=2, batch_size=50, seed=5,
                                              model_kwargs=kw, monitor=False),
                        tmp_path / name, bundle=digits, progress=False)
    assert len(seen["plain"]) == 8 and seen["plain"] == seen["dual"]


def test_tensorboard_sink_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from resattn.workflow.train import TrainConfig, train
    digits = load_dataset("digits", train_subset=200)
    train(TrainConfig(dataset="digits", epochs=1, batch_size=50, log_every=1, tensorboard=True,
                      model_kwargs={"pattern": "dual"}), tmp_path, bundle=digits, progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"step/loss", "step/grad_norm", "step/lr", "epoch/test_acc", "gates/layer2.0/gamma_s",
            "gates/layer3.2/skip_gain"} <= set(tags)
    assert len(acc.Scalars("step/loss")) == 4


# ----------------------------------------------------------------------------- studies

GOOD = """
name: t
claim: the dual skip beats the gated one.
hypothesis: {better: a, worse: b, metric: final_acc}
decision_rule: {test: paired, confidence: 0.95}
variants: {a: {pattern: dual}, b: {pattern: dual, skip_modulation: gate}}
factors: {lr: [0.05, 0.1]}
dataset: digits
budgets:
  smoke: {epochs: 1, train_subset: 100, seeds: [0, 1]}
"""


@pytest.mark.parametrize("edit, match", [
    (("factors: {lr: [0.05, 0.1]}", "factors: {lrr: [0.05, 0.1]}"), r"factors\.lrr: unknown option 'lrr'"),
    (("metric: final_acc", "metric: top5"), r"hypothesis\.metric='top5' is not a known metric"),
    (("decision_rule: {test: paired, confidence: 0.95}\n", ""), r"no 'decision_rule'"),
    (("skip_modulation: gate", "skip_modulatio: gate"), r"variants\.b\.skip_modulatio: unknown option"),
    (("worse: b", "worse: c"), r"hypothesis\.worse='c' is not a variant"),
    (("claim: the dual skip beats the gated one.\n", ""), r"no 'claim'"),
    (("smoke: {epochs: 1", "smoke: {epoch: 1"), r"budgets\.smoke\.epoch: unknown key"),
    (("test: paired", "test: vibes"), r"decision_rule\.test='vibes' is not allowed"),
    (("smoke: {epochs: 1", "smoke: {epochs: 0"), r"epochs=0 must be an integer >= 1"),
    # found by QA: these passed validation (or raised KeyError/TypeError) before
    (("seeds: [0, 1]", "seeds: []"), r"budgets\.smoke\.seeds=\[\] must be a non-empty list of integers"),
    (("seeds: [0, 1]", "seeds: 3"), r"budgets\.smoke\.seeds=3 must be a non-empty list of integers"),
    (("seeds: [0, 1]", "seeds: [1, 1]"), r"budgets\.smoke\.seeds=\[1, 1\] repeats a seed"),
    (("worse: b", "worse: a"), r"hypothesis: better and worse are both 'a'"),
    (("dataset: digits", "dataset: mnist"), r"dataset='mnist' is not allowed; allowed: fashion-mnist, digits"),
    (("train_subset: 100", "train_subset: -5"), r"train_subset=-5 must be an integer >= 1"),
    (("{pattern: dual}", "{pattern: quad}"), r"variant 'a' .*pattern='quad' is not allowed"),
    (("{pattern: dual}", "{pattern: dual, res_attn: foo}"), r"res_attn='foo' is not a supported attention type"),
    (("{pattern: dual}", "{pattern: dual, skip_gamma_max: big}"),
     r"skip_gamma_max='big' must be a finite number > 0, or None"),
    (("metric: final_acc}", "metric: final_acc, where: {model: cifar_resnet20}}"),
     r"where\.model: 'model' is not a factor of this study; factors: lr"),
])
def test_study_validator_names_the_key(tmp_path, edit, match):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(ValueError, match=match):
        load_study(path)


def test_study_grid_pairs_and_precedence(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    specs = load_study(path).specs("smoke")
    assert [s.run_id for s in specs] == ["a-lr0.05-s0", "a-lr0.05-s1", "a-lr0.1-s0", "a-lr0.1-s1",
                                         "b-lr0.05-s0", "b-lr0.05-s1", "b-lr0.1-s0", "b-lr0.1-s1"]
    assert specs[4].config.model_kwargs == {"pattern": "dual", "skip_modulation": "gate"}
    assert (specs[2].config.lr, specs[2].config.train_subset, specs[2].cell) == (0.1, 100, {"lr": "0.1"})


def test_study_budget_not_in_the_file_is_a_clear_cli_error(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    assert load_study(path).budgets.keys() == {"smoke"}
    with pytest.raises(ValueError, match=r"budget='cpu' is not defined in this study; defined: smoke"):
        load_study(path).specs("cpu")
    assert main(["study", str(path), "--budget", "cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "budget='cpu' is not defined in this study; defined: smoke" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_studies_validate_with_three_seeds_on_cpu(path):
    study = load_study(path)
    assert set(study.budgets) == {"smoke", "cpu", "full"}
    assert len(study.budgets["cpu"]["seeds"]) >= 3 and len(study.budgets["full"]["seeds"]) >= 5
    assert study.budgets["full"]["epochs"] >= 15 and "train_subset" not in study.budgets["full"]


@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed (make data)")
def test_smoke_study_end_to_end_and_the_evidence_page(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["study", str(ROOT / "studies" / "03-gamma-order.yaml"), "--budget", "smoke",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "study.json").read_text())
    assert doc["runs"] == 8 and doc["finished"] == 8 and doc["budget"] == "smoke" and doc["smoke"]
    assert doc["validity"]["runs"] == 8 and "validity_line" in doc
    h = doc["hypotheses"][0]
    assert h["verdict"] in OUTCOMES
    cell = h["cells"][0]
    # the verdict follows from the cells' outcomes by the registered rule (one outcome: that one)
    outcomes = {c["outcome"] for c in h["cells"]}
    assert outcomes <= set(OUTCOMES)
    if len(outcomes) == 1:
        assert h["verdict"] == cell["outcome"]
    # n = 2 pairs: an exact permutation test cannot reach p < 0.05, so nothing is decided
    assert cell["method"] == "permutation" and cell["outcome"] == "inconclusive"
    import csv
    with (out / "results.csv").open() as f:
        res = {(r["variant"], int(r["seed"])): float(r["final_acc"]) for r in csv.DictReader(f)}
    diffs = [res[("skip-small", s)] - res[("reversed", s)] for s in (0, 1)]
    assert cell["n"] == 2 and cell["diff"] == pytest.approx(statistics.fmean(diffs))
    report = (out / "report.md").read_text()
    assert doc["claim"] in report and "Decision rule" in report and "resattn study" in report
    page = tmp_path / "docs" / "evidence.md"
    assert main(["evidence", str(out), "--out", str(page)]) == 0
    text = page.read_text()
    assert "gamma-order" in text and h["verdict"] in text and doc["command"] in text
    # a smoke run's verdict is marked as a plumbing check wherever it appears
    assert "(smoke: not evidence)" in text
    marked = text.count(f"**{h['verdict']}** (smoke budget: a plumbing check, not evidence)")
    assert marked >= 2 and marked == text.count(f"**{h['verdict']}**")
    # every run has a cache key and its folder names it
    keys = {json.loads((out / "runs" / r / "cache.json").read_text())["cache_key"]
            for r in ("skip-small-s0", "reversed-s1")}
    assert all((tmp_path / "cache" / k / "result.json").is_file() for k in keys)
    assert (tmp_path / "docs" / "evidence" / "gamma-order-smoke-accuracy.png").stat().st_size > 5000
    assert main(["evidence", str(tmp_path / "nothing")]) == 2


def test_tensorboard_missing_is_a_clear_error(monkeypatch):
    import importlib.util

    from resattn.workflow.train import TrainConfig
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r"tensorboard=True needs the 'tensorboard' package: pip install 'resattn\[tensorboard\]'"):
        TrainConfig(tensorboard=True).validate()
