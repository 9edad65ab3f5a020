"""A library call leaves the caller's process as it found it (issue 17): no matplotlib backend
switch and no open pyplot figures from a report, deterministic flags restored after a run, caches
that stay bounded."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from resattn import study as study_mod
from resattn.workflow.data import load_dataset
from resattn.workflow.train import TrainConfig, train

# Writes the compare plots (all four: accuracy, loss, gamma, skip gain), a study report and a bench
# plot under a caller who chose the "svg" backend and has pyplot open; prints what it finds after.
_REPORTS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    from resattn.tools.bench import BenchRow, plot
    from resattn.workflow.report import summarise, write_plots

    out = Path(sys.argv[1])
    rows = []
    for v, acc in (("plain", 90.0), ("dual", 92.0)):
        for seed in (0, 1):
            run_id = f"{v}-s{seed}"
            rows.append({"run_id": run_id, "variant": v, "attn": None, "seed": seed, "lr": 0.1,
                         "cell": {}, "status": "finished", "pattern": v if v == "dual" else None,
                         "final_acc": acc + seed, "best_acc": acc + seed, "params": 1,
                         "mflops": 1.0, "images_per_s": 1.0, "train_time_s": 1.0})
            gates = {"layer1.0": {"gamma/skip_attn": 0.1, "gamma/res_attn": 0.2,
                                  "gate_energy/skip_attn": 1.0, "skip_gain": 0.9}}
            recs = [{"type": "step", "step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
            recs += [{"type": "epoch", "epoch": e, "gates": gates} for e in (1, 2)]
            (out / "runs" / run_id).mkdir(parents=True)
            (out / "runs" / run_id / "metrics.jsonl").write_text(
                "".join(json.dumps(r) + "\\n" for r in recs))
    paths = write_plots(out, rows, summarise(rows, baseline="plain"))
    bench = [BenchRow("none", "resattn", "fused", False, 1, 1.0, train_s=[1.0], eval_s=[1.0]),
             BenchRow("dual", "resattn", "fused", False, 2, 2.0, train_s=[1.5], eval_s=[1.2])]
    plot(bench, out / "bench.png")
    print(json.dumps({"backend": matplotlib.get_backend(), "figures": plt.get_fignums(),
                      "plots": sorted(paths)}))
""")


def test_reports_leave_the_callers_matplotlib_alone(tmp_path):
    script = tmp_path / "reports.py"
    script.write_text(_REPORTS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["plots"] == ["accuracy", "gamma", "loss", "skip_gain"]  # every figure was drawn
    assert found["backend"] == "svg"  # not switched to Agg
    assert found["figures"] == []  # nothing left open in pyplot
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_library_modules_do_not_use_pyplot():
    import pathlib

    import resattn
    src = pathlib.Path(resattn.__file__).parent
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if "matplotlib.pyplot" in p.read_text() or "matplotlib.use(" in p.read_text()]
    assert offenders == []


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=128, test_subset=64)


def _flags():
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)


def test_deterministic_run_restores_the_callers_flags(tmp_path, digits):
    before = _flags()
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, augment=False, deterministic=True)
    seen = {}
    real = torch.optim.SGD.step

    def spy(self, *a, **k):  # the flags as the run sees them
        seen["flags"] = _flags()
        return real(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        r = train(cfg, tmp_path, bundle=digits, progress=False)
    finally:
        torch.optim.SGD.step = real
    assert r.status == "finished"
    assert seen["flags"] == (True, True, False)
    assert _flags() == before


def test_a_run_leaves_the_callers_random_state(tmp_path, digits):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, augment=False, seed=7)
    r1 = train(cfg, tmp_path / "a", bundle=digits, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # another caller state: the run is the same
    r2 = train(cfg, tmp_path / "b", bundle=digits, progress=False)
    assert r1.final_acc == r2.final_acc


def test_deterministic_flags_restored_after_an_error(tmp_path, digits, monkeypatch):
    torch.backends.cudnn.benchmark = True  # a caller who autotunes
    try:
        before = _flags()
        import resattn.workflow.train as train_mod

        def boom(*a, **k):
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("boom")

        monkeypatch.setattr(train_mod, "_train_epoch", boom)
        cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, augment=False,
                          deterministic=True)
        with pytest.raises(RuntimeError, match="boom"):
            train(cfg, tmp_path, bundle=digits, progress=False)
        assert _flags() == before
    finally:
        torch.backends.cudnn.benchmark = False


def test_model_check_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(study_mod, "_CHECKED_MODELS", type(study_mod._CHECKED_MODELS)())
    monkeypatch.setattr(study_mod, "_CHECKED_MODELS_MAX", 4)
    for i in range(10):
        study_mod._check_model("cifar_resnet20", {"skip_gamma_max": 1.0 + i})
    assert len(study_mod._CHECKED_MODELS) == 4
    with pytest.raises(ValueError, match="pattern"):
        study_mod._check_model("cifar_resnet20", {"pattern": "quad"})
    with pytest.raises(ValueError, match="pattern"):  # the cached answer, still an error
        study_mod._check_model("cifar_resnet20", {"pattern": "quad"})
    assert len(study_mod._CHECKED_MODELS) == 4


def test_bench_leaves_the_callers_random_state():
    from resattn.tools.bench import run_bench
    torch.manual_seed(5)
    state = torch.get_rng_state()
    run_bench("cifar_resnet20", ["dual"], batch_size=2, input_shape=(1, 8, 8), steps=1, rounds=1,
              reference=False, peers=False, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
