"""Every plot shows what its title and axis say; tables name both paths of dual (issue 15)."""
import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from resattn.workflow.report import accuracy_plot, paired_delta_plot, summarise  # noqa: E402
from resattn.workflow.study import evaluate_study, load_study, _write_study_report  # noqa: E402

STUDY = """
name: t
claim: dual keeps the skip open.
hypothesis:
  - {better: post, worse: gate, metric: min_skip_gain}
  - {better: dual, worse: gate, metric: final_acc}
decision_rule: {test: paired, confidence: 0.95}
variants: {post: {pattern: post}, dual: {pattern: dual}, gate: {pattern: dual, skip_modulation: gate}}
dataset: digits
budgets:
  smoke: {epochs: 1, train_subset: 100, seeds: [0, 1]}
"""
# final accuracy and lowest skip gain per variant and seed: accuracy is high, skip gain near 1
ACC = {"post": (90.0, 91.0), "dual": (92.0, 93.5), "gate": (80.0, 88.0)}
GAIN = {"post": (0.40, 0.49), "dual": (1.0, 1.0), "gate": (0.30, 0.38)}


def _rows():
    rows = []
    for v in ACC:
        for seed in (0, 1):
            rows.append({"run_id": f"{v}-s{seed}", "variant": v, "attn": None, "seed": seed,
                         "lr": 0.1, "cell": {}, "status": "finished",
                         "pattern": "dual" if v != "post" else "post",
                         "skip_attn": "eca" if v != "post" else None,
                         "final_acc": ACC[v][seed], "best_acc": ACC[v][seed],
                         "min_skip_gain": GAIN[v][seed], "params": 1, "mflops": 1.0,
                         "images_per_s": 100.0, "train_time_s": 1.0})
    return rows


@pytest.fixture
def saved(monkeypatch):
    """The figures written, by file name."""
    figs = {}
    real = Figure.savefig

    def record(self, fname, *a, **k):
        figs[Path(fname).name] = self
        return real(self, fname, *a, **k)

    monkeypatch.setattr(Figure, "savefig", record)
    return figs


def test_study_plots_show_what_their_titles_say(tmp_path, saved):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    rows = _rows()
    ev = evaluate_study(study, "smoke", rows)
    (tmp_path / "runs").mkdir()
    _write_study_report(study, "smoke", tmp_path, rows, ev, "resattn study s.yaml", 1.0,
                        tmp_path / "cache")
    # accuracy.png: accuracies (80..93.5 %), not the hypothesis' skip gains (0.3..1.0)
    ax = saved["accuracy.png"].axes[0]
    from matplotlib.collections import PathCollection
    points = [y for c in ax.collections if isinstance(c, PathCollection)
              for y in c.get_offsets()[:, 1]]
    assert sorted(points) == sorted(a for v in ACC.values() for a in v)
    assert "accuracy" in ax.get_ylabel() and "accuracy" in ax.get_title().lower()
    low, high = ax.get_ylim()
    assert 0 <= low and high <= 102  # the CI of 'gate' (n=2, wide) is clipped to the % range
    assert any(t.get_text() == "n=2" for t in ax.texts)
    # hypothesis plots: the seed-paired Δ the verdict rests on, one per hypothesis, with threshold 0
    files = [tmp_path / "hypothesis1.png", tmp_path / "hypothesis2.png"]
    assert files[0].read_bytes() != files[1].read_bytes()
    for name, better, metric, values in (("hypothesis1.png", "post", "min_skip_gain", GAIN),
                                         ("hypothesis2.png", "dual", "final_acc", ACC)):
        ax = saved[name].axes[0]
        assert f"{better} − gate" in ax.get_ylabel() and metric in ax.get_ylabel()
        assert "paired" in ax.get_title()
        mean_diff = sum(values[better][s] - values["gate"][s] for s in (0, 1)) / 2
        ys = [line.get_ydata()[0] for line in ax.lines if len(line.get_ydata()) == 1]
        assert ys and ys[0] == pytest.approx(mean_diff)
        assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the threshold
    report = (tmp_path / "report.md").read_text()
    assert "![hypothesis1](hypothesis1.png)" in report


def test_accuracy_plot_refuses_another_metric_and_clips_its_ci(tmp_path, saved):
    rows = _rows()
    with pytest.raises(ValueError, match="not an accuracy"):
        accuracy_plot(tmp_path / "a.png", summarise(rows, baseline="post", metric="min_skip_gain"))
    summary = summarise(rows, baseline="post")
    accuracy_plot(tmp_path / "a.png", summary)
    ax = saved["a.png"].axes[0]
    # 'gate' (80, 88): n=2 CI of mean 84 ± 50.8 would run from 33% to 135%: clipped at 100
    for container in ax.containers:
        for seg in container.lines[2][0].get_segments():
            assert seg[:, 1].max() <= 100 and seg[:, 1].min() >= 0
    assert ax.get_ylim()[1] <= 102


def test_paired_delta_plot_without_pairs_draws_nothing(tmp_path):
    assert paired_delta_plot(tmp_path / "d.png", [], metric="final_acc", better="a",
                             worse="b") is None


def _table_rows(specs):
    from resattn.workflow.compare import _flat_result
    return [{"run_id": s.run_id, "variant": s.variant, "attn": s.attn, "seed": s.seed, "lr": s.lr,
             "cell": dict(s.cell), **_flat_result({"status": "finished", "final_acc": 90.0 + i,
                                                   "params": 1, "mflops": 1.0}, s)}
            for i, s in enumerate(specs)]


def _attn_column(table):
    lines = table.splitlines()[2:]
    return {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines}


def test_tables_show_both_paths_of_dual(tmp_path):
    from resattn.workflow.compare import CompareConfig, expand_grid
    from resattn.workflow.report import format_table
    cfg = CompareConfig(dataset="digits", patterns=["none", "branch", "dual", "dual-gate"], seeds=[0])
    table = format_table(summarise(_table_rows(expand_grid(cfg)), baseline="none"), markdown=True)
    assert _attn_column(table) == {"none": "-", "branch": "se", "dual": "eca / cbam",
                                   "dual-gate": "eca / cbam"}
    path = tmp_path / "s.yaml"  # a study names variants by their options, not an attn axis
    path.write_text(STUDY.replace("{pattern: post}", "{pattern: post, attn: eca}").replace(
        "gate: {pattern: dual, skip_modulation: gate}", "gate: {pattern: dual, skip_attn: se, "
        "res_attn: none, skip_modulation: gate}"))
    rows = _table_rows(load_study(path).specs("smoke"))
    table = format_table(summarise(rows, baseline="post"), markdown=True)
    assert _attn_column(table) == {"post": "eca", "dual": "eca / cbam", "gate": "se / none"}
