"""The decision rule of a study with constructed data: every outcome, validity gates, diverged runs,
zero spread, Holm, the one table of metric directions, and hypotheses true by construction."""
import pytest

from resattn.workflow.stability import HIGHER_IS_BETTER, higher_is_better
from resattn.workflow.stats import OUTCOMES, decide, holm, paired_tests
from resattn.workflow.study import cell_line, evaluate_study, load_study

STUDY = """
name: t
claim: a beats b.
hypothesis: {better: a, worse: b, metric: final_acc}
decision_rule: {test: paired, confidence: 0.95, delta: 0.5}
variants: {plain: {pattern: none}, a: {pattern: dual}, b: {pattern: dual, skip_modulation: gate}}
dataset: digits
validity:
  floors: {cpu: {plain: 80.0}}
budgets:
  smoke: {epochs: 1, train_subset: 100, seeds: [0, 1]}
  cpu: {epochs: 1, seeds: [0, 1, 2, 3, 4, 5]}
"""
SEEDS = range(6)


def _study(tmp_path, text=STUDY, **replace):
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_study(path)


def _row(variant, seed, acc, status="finished", **kw):
    return {"run_id": f"{variant}-s{seed}", "variant": variant, "seed": seed, "cell": {},
            "status": status, "final_acc": acc, "initial_train_loss": 2.3, "final_train_loss": 0.4,
            "loss_spikes": 0, **kw}


def _rows(b_acc, diffs, plain=90.0):
    """plain at ``plain``; b at ``b_acc``; a = b + diffs[seed]."""
    return ([_row("plain", s, plain) for s in SEEDS] + [_row("b", s, b_acc) for s in SEEDS]
            + [_row("a", s, b_acc + d) for s, d in zip(SEEDS, diffs)])


@pytest.mark.parametrize("diffs, outcome", [
    ([1.0, 1.2, 0.9, 1.1, 1.0, 1.3], "better"),
    ([-1.0, -1.2, -0.9, -1.1, -1.0, -1.3], "worse"),
    ([0.05, -0.05, 0.02, -0.02, 0.0, 0.01], "equivalent"),
    ([2.0, -2.0, 1.5, -1.0, 0.5, -0.7], "inconclusive"),
])
def test_each_outcome_from_constructed_pairs(tmp_path, diffs, outcome):
    ev = evaluate_study(_study(tmp_path), "cpu", _rows(88.0, diffs))
    h = ev["hypotheses"][0]
    assert ev["validity"]["valid"] and h["verdict"] == outcome and outcome in OUTCOMES
    cell = h["cells"][0]
    assert cell["n"] == 6 and cell["method"] == "t" and cell["lost_seeds"] == []
    assert cell["diff"] == pytest.approx(sum(diffs) / 6)


def test_a_baseline_below_its_floor_makes_the_study_invalid(tmp_path):
    ev = evaluate_study(_study(tmp_path), "cpu", _rows(88.0, [1.0, 1.2, 0.9, 1.1, 1.0, 1.3], plain=70.0))
    assert not ev["validity"]["valid"] and ev["hypotheses"][0]["verdict"] == "invalid"
    assert "`plain` at (all): mean final_acc 70.00% < floor 80% (n=6)" in ev["validity"]["reasons"]


def test_a_lost_pair_makes_the_cell_incomplete_not_silently_smaller(tmp_path):
    rows = _rows(88.0, [1.0, 1.2, 0.9, 1.1, 1.0, 1.3])
    rows[6 + 2] = _row("b", 2, None, status="failed")
    h = evaluate_study(_study(tmp_path), "cpu", rows)["hypotheses"][0]
    assert h["verdict"] == "incomplete" and h["cells"][0]["lost_seeds"] == [2] and h["cells"][0]["n"] == 5


def test_runs_not_run_yet_make_the_study_incomplete_not_invalid_nor_untrained(tmp_path):
    from resattn.workflow.study import validity_line, validity_word
    rows = _rows(88.0, [1.0] * 6)
    missing = {"status": "missing", "final_acc": None, "initial_train_loss": None,
               "final_train_loss": None}
    rows = [dict(r, **missing) if r["variant"] in ("plain", "b") else r for r in rows]
    ev = evaluate_study(_study(tmp_path), "cpu", rows)
    v = ev["validity"]
    assert v["valid"] and v["untrained"] == [] and v["missing"] == 12
    assert validity_word(v) == "incomplete" and ev["hypotheses"][0]["verdict"] == "incomplete"
    line = validity_line(v)
    assert line.startswith("**incomplete**") and "12 of 18 runs not run yet" in line
    assert "all 6 ended runs trained" in line


def test_untrained_runs_are_counted_and_kept_in_the_statistics(tmp_path):
    rows = _rows(88.0, [1.0] * 6)
    rows[6] = _row("b", 0, 15.0)                                          # barely above chance
    rows[7] = _row("b", 1, 88.0, final_train_loss=2.25)                   # loss did not fall
    ev = evaluate_study(_study(tmp_path), "cpu", rows)
    reasons = {u["run_id"]: u["reason"] for u in ev["validity"]["untrained"]}
    assert set(reasons) == {"b-s0", "b-s1"}
    assert "final accuracy 15.0 < chance 10 + 20" in reasons["b-s0"]
    assert "training loss did not fall by 10%" in reasons["b-s1"]
    cell = ev["hypotheses"][0]["cells"][0]
    assert cell["n"] == 6 and cell["untrained"] == 2   # the untrained run's pair is not dropped


def test_diverged_counts_as_lower_is_better_and_needs_six_pairs_without_spread(tmp_path):
    hyp = "hypothesis: {better: a, worse: b, metric: diverged}"
    rows = ([_row("plain", s, 90.0) for s in SEEDS] + [_row("a", s, 88.0) for s in SEEDS]
            + [_row("b", s, None, status="diverged") for s in SEEDS])
    study = _study(tmp_path, **{"hypothesis: {better: a, worse: b, metric: final_acc}": hyp})
    ev = evaluate_study(study, "cpu", rows)
    cell = ev["hypotheses"][0]["cells"][0]
    # a - b = -1 in every pair: zero spread -> the exact permutation test, p = 2/64
    assert cell["diff"] == -1.0 and cell["method"] == "permutation"
    assert cell["p_diff"] == pytest.approx(2 / 64) and ev["hypotheses"][0]["verdict"] == "better"
    assert cell_line(cell) == "-1.00 (zero spread)"
    assert len(ev["validity"]["untrained"]) == 6       # diverged runs did not train
    # five pairs cannot reach p < 0.05 two-sided (2/32): no verdict
    study5 = _study(tmp_path, **{"hypothesis: {better: a, worse: b, metric: final_acc}": hyp,
                                 "seeds: [0, 1, 2, 3, 4, 5]": "seeds: [0, 1, 2, 3, 4]"})
    assert evaluate_study(study5, "cpu", rows)["hypotheses"][0]["verdict"] == "inconclusive"
    # accuracy of a diverged run: chance, not dropped
    acc = evaluate_study(_study(tmp_path), "cpu", rows)["hypotheses"][0]["cells"][0]
    assert acc["n"] == 6 and acc["diff"] == pytest.approx(88.0 - 10.0)


def test_zero_spread_never_gives_a_verdict_from_a_width_zero_ci():
    t = paired_tests([0.3, 0.3], delta=0.5)
    assert t.method == "permutation" and t.ci_low is None and t.p_diff == 0.5 and t.p_equiv == 0.25
    assert decide([t], higher_is_better=[True])[0]["outcome"] == "inconclusive"
    same = paired_tests([0.0] * 6, delta=0.5)      # six identical zero differences: equivalent
    assert same.p_equiv == pytest.approx(1 / 64)
    assert decide([same], higher_is_better=[True])[0]["outcome"] == "equivalent"


def test_holm_adjusts_across_the_family():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    a = paired_tests([1.0, 1.1, 0.2, 1.5, 0.1, 0.9])     # p ~ 0.01 alone
    alone = decide([a], higher_is_better=[True])[0]
    crowd = decide([a] * 6, higher_is_better=[True] * 6)[0]
    assert alone["outcome"] == "better" and crowd["outcome"] == "inconclusive"
    assert crowd["p_diff_adj"] == pytest.approx(min(1.0, 6 * a.p_diff))


def test_one_table_of_metric_directions():
    assert higher_is_better("final_acc") and not higher_is_better("diverged")
    assert not higher_is_better("loss_spikes") and higher_is_better("min_skip_gain")
    with pytest.raises(ValueError, match="metric='top5' is not a known metric"):
        higher_is_better("top5")
    from resattn import study
    assert study.METRICS is HIGHER_IS_BETTER
    # report.summarise reads the same table: fewer divergences is better
    from resattn.workflow.report import summarise
    rows = [{"run_id": f"{v}{s}", "variant": v, "attn": None, "seed": s, "cell": {}, "lr": 0.1,
             "status": st, "diverged": st == "diverged", "final_acc": 50.0, "best_acc": 50.0,
             "params": 1, "mflops": 1.0, "images_per_s": 1.0}
            for v, st in (("a", "finished"), ("b", "diverged")) for s in range(3)]
    for r in rows:
        r["diverged"] = 1.0 if r["diverged"] else 0.0
    out = {s["variant"]: s for s in summarise(rows, baseline="b", metric="diverged")}
    assert out["a"]["diff"] == -1.0


def test_a_hypothesis_true_by_construction_is_refused(tmp_path):
    skip = "hypothesis: {better: a, worse: b, metric: min_skip_gain}"
    with pytest.raises(ValueError, match=r"true by construction: `a` keeps min_skip_gain >= 0.75 "
                                         r"by its options .*\[0.75, 1.25\]"):
        _study(tmp_path, **{"hypothesis: {better: a, worse: b, metric: final_acc}": skip})
    with pytest.raises(ValueError, match=r"`plain` keeps min_skip_gain >= 1 "):
        _study(tmp_path, **{"hypothesis: {better: a, worse: b, metric: final_acc}":
                            "hypothesis: {better: plain, worse: b, metric: min_skip_gain}"})
    # the gated skip has no bound: a hypothesis in its favour measures training
    _study(tmp_path, **{"hypothesis: {better: a, worse: b, metric: final_acc}":
                        "hypothesis: {better: b, worse: a, metric: min_skip_gain}"})


@pytest.mark.parametrize("edit, match", [
    (("validity:\n  floors: {cpu: {plain: 80.0}}\n", ""), r"validity\.floors has no floor for budget 'cpu'"),
    (("{cpu: {plain: 80.0}}", "{cpu: {plane: 80.0}}"), r"validity\.floors\.cpu\.plane: not a variant"),
    (("delta: 0.5}", "delta: 0}"), r"decision_rule\.delta=0 must be a number > 0"),
    (("floors: {cpu", "trained: {above_chance: -1}\n  floors: {cpu"), r"validity\.trained\.above_chance=-1"),
])
def test_validity_and_rule_are_validated(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        _study(tmp_path, **{edit[0]: edit[1]})


def test_shipped_studies_train_at_the_cpu_budget():
    """The re-registered cpu budgets: >= 900 optimizer steps, bf16, >= 5 seeds, a floor."""
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml")):
        st = load_study(path)
        specs = st.specs("cpu")
        assert len(st.budgets["cpu"]["seeds"]) >= 5 and st.floors["cpu"], path.name
        for s in specs:
            n = s.config.train_subset or 60000
            steps = -(-n // s.config.batch_size) * s.config.epochs
            assert steps >= 900 and s.config.precision == "bf16", (path.name, s.run_id, steps)
        assert any("2026-12-04" in str(c) for c in st.changes), path.name


def test_the_evidence_page_answers_the_rule_clause_by_clause(tmp_path):
    """The page opens with "When to choose pattern 4"; a clause with no finished non-smoke
    study says "not tested"; smoke verdicts never answer a clause."""
    import json

    from resattn.workflow.evidence import RULE_CLAUSES, build_evidence
    cell = {"cell": {}, "n": 5, "diff": 0.8, "std": 0.2, "ci_low": 0.55, "ci_high": 1.05,
            "method": "t", "p_diff_adj": 0.001, "p_equiv_adj": 0.9, "outcome": "better"}
    h = {"hypothesis": "`plain` vs `stage-1` on `final_acc`", "metric": "final_acc", "verdict": "better",
         "cells": [cell], "table": []}
    base = {"claim": "c", "rule": "r", "command": "resattn study x", "machine": "Linux, x86_64, 1 threads",
            "torch": "2.11", "wall_time_s": 10.0, "runs": 30, "finished": 30, "diverged": 0,
            "failed": 0, "plots": {}, "validity": {"valid": True}, "validity_line": "**valid**"}
    for name, budget in (("placement", "cpu"), ("ceiling", "smoke")):
        folder = tmp_path / f"{name}-{budget}"
        folder.mkdir()
        hyps = [dict(h, hypothesis=f"{name} #{i}") for i in (1, 2, 3)]
        (folder / "study.json").write_text(json.dumps(
            dict(base, name=name, budget=budget, smoke=budget == "smoke", hypotheses=hyps)))
    page = build_evidence([tmp_path / "placement-cpu", tmp_path / "ceiling-smoke"], tmp_path / "e.md")
    text = page.read_text()
    rule = text.split("## When to choose pattern 4")[1].split("## All verdicts")[0]
    assert text.index("## When to choose pattern 4") < text.index("## All verdicts")
    early = next(line for line in rule.splitlines() if line.startswith("| Keep early layers plain"))
    assert "placement #3" in early and "**better**" in early and "+0.80 [+0.55, +1.05]" in early
    ceiling = next(line for line in rule.splitlines() if "accuracy ceiling" in line)
    assert "**not tested**" in ceiling                     # only a smoke run of ceiling exists
    assert rule.count("**not tested**") == 3 and len(RULE_CLAUSES) == 6
    assert "ceiling — budget `smoke` (smoke: not evidence)" in text
