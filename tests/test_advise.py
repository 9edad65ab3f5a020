"""The advisor: inert candidates, exact removal, determinism, a case with a known answer, apply."""
import copy

import matplotlib
import pytest
import torch
import torch.nn as nn
import torchvision

from resattn import create_model
from resattn.tools.advise import (GATE_PATHS, Advice, Placement, advise, apply_placements,
                            dataset_batches, insert_candidates, load_applied, resolve_paths,
                            save_applied, select_placements)
from resattn.layers.blocks import BasicBlock
from resattn.cli import main
from resattn.tools.weights import load_model

TYPES = ("se", "eca", "cbam")


def small_resnet():
    torch.manual_seed(0)
    return create_model("cifar_resnet20", in_chans=1, num_classes=4)


def batches(n=2, size=8, c=1, hw=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, c, hw, hw, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


@torch.no_grad()
def trained_like(model):
    """Random norm affines and running statistics, so every path carries signal."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_candidates_are_inert_and_removal_restores_the_model(mode):
    model = trained_like(small_resnet())
    getattr(model, mode)()
    x = batches(1)[0][0]
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    model.load_state_dict(state)
    cset = insert_candidates(model, paths=GATE_PATHS, types=TYPES)
    n_blocks = sum(1 for _ in cset.originals)
    assert len(cset.candidates) == n_blocks * len(GATE_PATHS) * len(TYPES)
    with torch.no_grad():
        out = model(x)
    assert (out - ref).abs().max().item() <= 1e-6
    model.load_state_dict(state, strict=False)  # undo train-mode BN updates of the pass
    cset.remove()
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(model.get_submodule(k) is m for k, m in modules.items() if k)
    assert list(model.state_dict()) == list(state)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_torchvision_retrofit_is_a_valid_input(source):
    torch.manual_seed(0)
    if source == "torchvision":
        model = torchvision.models.resnet18(num_classes=4)
    else:
        import timm
        model = timm.create_model("resnet18", pretrained=False, num_classes=4)
    model = trained_like(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    keys = list(model.state_dict())
    data = [(x, torch.tensor([0, 1]))]
    result = advise(model, data, types=("se", "eca"), batches=1, inits=1)
    assert list(model.state_dict()) == keys  # removed again
    assert all(type(m).__module__.startswith(source) for m in model.modules()
               if type(m).__name__ == "BasicBlock")
    apply_placements(model, result.placements(3))
    model.eval()
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() <= 1e-6
    opened = [b for b in model.modules() if getattr(b, "pattern", "none") != "none"]
    assert 1 <= len(opened) <= 3
    assert set(keys) <= set(model.state_dict())
    for b in opened:
        for m in b.gated_paths().values():
            assert m.effective_gamma().abs().max().item() == 0.0


@pytest.mark.parametrize("method", ["probe", "grad"])
def test_scores_are_deterministic_for_a_seed(method):
    model = trained_like(small_resnet())
    data = batches(2)
    rng = torch.get_rng_state()
    a = advise(model, data, method=method, batches=2, inits=2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is untouched
    b = advise(copy.deepcopy(model), data, method=method, batches=2, inits=2, seed=3)
    assert [(r["block"], r["path"], r["attn"], r["score"]) for r in a.rows] == \
        [(r["block"], r["path"], r["attn"], r["score"]) for r in b.rows]
    c = advise(model, data, method=method, batches=2, inits=2, seed=4)
    assert [r["score"] for r in a.rows] != [r["score"] for r in c.rows]


def test_model_state_and_mode_are_restored():
    model = trained_like(small_resnet()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    advise(model, batches(2), batches=2, inits=1)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


class TwoTowers(nn.Module):
    """Two towers of residual blocks on one stem; the head reads tower ``a`` only, tower ``b`` is
    computed and multiplied by zero: the loss ignores every block of ``b``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.a = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.b = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        ignored = self.b(x)
        return self.fc(self.a(x).mean((2, 3))) + 0.0 * ignored.mean()


@pytest.mark.parametrize("method", ["probe", "grad"])
def test_a_block_the_loss_ignores_scores_zero_and_ranks_last(method):
    torch.manual_seed(0)
    model = trained_like(TwoTowers())
    result = advise(model, batches(2), types=("se", "cbam"), method=method, batches=2, inits=2)
    ignored = [r for r in result.rows if r["block"].startswith("b.")]
    used = [r for r in result.rows if r["block"].startswith("a.")]
    assert len(ignored) == len(used) == 2 * len(GATE_PATHS) * 2
    assert all(r["score"] == 0.0 for r in ignored)
    assert all(r["score"] > 0.0 for r in used)
    assert min(r["rank"] for r in ignored) > max(r["rank"] for r in used)
    assert all(p.block.startswith("a.") for p in result.placements(100))


def _row(block, path, attn="se", score=1.0):
    return {"block": block, "path": path, "attn": attn, "score": score}


def test_select_placements_keeps_one_pattern_per_block():
    rows = [_row("l.0", "post", score=5), _row("l.0", "branch", score=4),
            _row("l.1", "skip", "eca", 3), _row("l.1", "branch", "cbam", 2),
            _row("l.1", "branch", "se", 1.5), _row("l.2", "pre", score=1), _row("l.3", "pre", score=0)]
    got = select_placements(rows, 10)
    assert got == [Placement("l.0", "post", attn="se"),
                   Placement("l.1", "dual", skip_attn="eca", res_attn="cbam"),
                   Placement("l.2", "pre", attn="se")]
    assert select_placements(rows, 1) == [Placement("l.0", "post", attn="se")]
    assert select_placements(rows, 0) == []


def test_paths_and_errors():
    assert resolve_paths("dual,pre") == ("skip", "branch", "pre")
    assert resolve_paths(["res"]) == ("branch",)
    with pytest.raises(ValueError, match="paths"):
        resolve_paths("middle")
    model = small_resnet()
    with pytest.raises(ValueError, match="method"):
        advise(model, batches(1), method="oracle")
    with pytest.raises(ValueError, match="stages"):
        insert_candidates(model, stages=[9])
    dual = create_model("cifar_resnet20", in_chans=1, num_classes=4, pattern="dual")
    with pytest.raises(ValueError, match="already has attention"):
        insert_candidates(dual)


def test_outputs_table_plot_and_saved_model(tmp_path):
    backend = matplotlib.get_backend()
    model, _ = load_model("cifar_resnet20", in_chans=1, num_classes=4)
    result = advise(model, batches(2), types=("se",), paths="branch,skip", stages=[3],
                    batches=2, inits=2)
    assert isinstance(result, Advice) and len(result.rows) == 3 * 2
    row = result.rows[0]
    assert row["rank"] == 1 and row["params"] > 0 and row["flops"] > 0
    assert row["init_std"] >= 0 and row["batch_std"] >= 0
    files = result.save(tmp_path)
    assert all(p.is_file() for p in files.values())
    assert files["csv"].read_text().splitlines()[0].startswith("rank,block,stage")
    assert "| 1 |" in files["md"].read_text()
    assert matplotlib.get_backend() == backend
    result.apply(model, 2)
    path = save_applied(model, tmp_path / "applied.pt")
    again = load_applied(path)
    x = batches(1)[0][0]
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_dataset_batches_are_seeded():
    data = torch.utils.data.TensorDataset(torch.randn(50, 1, 4, 4), torch.arange(50) % 3)
    a = dataset_batches(data, batch_size=8, batches=3, seed=1, in_chans=3)
    b = dataset_batches(data, batch_size=8, batches=3, seed=1, in_chans=3)
    assert len(a) == 3 and a[0][0].shape == (8, 3, 4, 4)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_cli_advise(tmp_path, capsys):
    rc = main(["advise", "cifar_resnet20", "--dataset", "digits", "--types", "se",
               "--paths", "branch,post", "--stages", "3", "--batches", "2", "--inits", "1",
               "--batch-size", "16", "--apply", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| rank | block |" in out and "opened (gamma = 0): layer3." in out
    for name in ("advice.csv", "advice.md", "advice.json", "advice.png", "applied.pt"):
        assert (tmp_path / name).is_file()


def test_per_block_placement_is_plain_data():
    model = create_model("cifar_resnet20", in_chans=1, num_classes=4, pattern="branch",
                         stages=["2.1", 3])
    opened = [n for n, b in model.named_modules() if getattr(b, "pattern", "none") != "none"]
    assert opened == ["layer2.1", "layer3.0", "layer3.1", "layer3.2"]
    with pytest.raises(ValueError, match="stage.block_index"):
        create_model("cifar_resnet20", pattern="branch", stages=["4.0"])


# ----------------------------------------------------------------- the validation's decision rule

def _driver():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "advisor_validation.py"
    spec = importlib.util.spec_from_file_location("advisor_validation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_study(tmp_path, gain_of_score, plain=90.0, noise=0.05, seeds=(0, 1, 2, 3, 4)):
    """A plan with 6 placements (scores 1..6) and result.json files whose gains follow
    ``gain_of_score`` plus seeded noise; the three-block models follow the same rule."""
    import json
    import random
    drv = _driver()
    drv.BOOTSTRAP = 400  # the rule, not its precision
    names = [f"b{s}.{i}-branch" for s in (1, 2, 3) for i in (0, 1)]
    params = [5, 3, 6, 1, 4, 2]
    plan = {"seeds": list(seeds), "placements": {
        n: {"score": float(k + 1), "params": params[k], "flops": params[::-1][k], "order": k % 3,
            "options": {}} for k, n in enumerate(names)},
        "combos": {"top3": {}, "bottom3": {}, "random3": {str(s): {} for s in seeds}}}
    rng = random.Random(0)
    combo = {"top3": 5.0, "random3": 3.5, "bottom3": 2.0}
    for s in seeds:
        accs = {"plain": plain}
        accs.update({n: plain + gain_of_score(k + 1) + rng.gauss(0, noise) for k, n in enumerate(names)})
        accs.update({c: plain + gain_of_score(v) + rng.gauss(0, noise) for c, v in combo.items()})
        for name, acc in accs.items():
            d = tmp_path / "main" / "runs" / name / f"seed{s}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({"status": "finished", "final_acc": acc}))
    return drv.analyse(plan, tmp_path, "main")


def test_validation_rule_supported_when_gains_follow_the_score(tmp_path):
    r = _fake_study(tmp_path, lambda s: 0.5 * s)
    assert r["gate"]["differ"] and r["claim_supported"], r
    assert r["verdict"].startswith("supported")
    assert r["rho"]["advisor"]["rho"] == pytest.approx(1.0)
    assert r["combos"]["top3 - bottom3"]["ci"][0] > 0


def test_validation_rule_not_supported_when_gains_run_against_the_score(tmp_path):
    r = _fake_study(tmp_path, lambda s: -0.5 * s)
    assert r["gate"]["differ"] and not r["claim_supported"]
    assert r["verdict"].startswith("not supported")
    assert r["combos"]["top3 - bottom3"]["ci"][1] < 0


def test_validation_rule_gate_and_floor(tmp_path):
    r = _fake_study(tmp_path / "flat", lambda s: 0.0, noise=0.5)
    assert not r["gate"]["differ"] and r["verdict"].startswith("gains do not differ")
    r = _fake_study(tmp_path / "low", lambda s: 0.5 * s, plain=70.0)
    assert r["verdict"].startswith("invalid: plain's mean")


def test_retrofit_setting_fine_tunes_the_base_and_keeps_its_plan(tmp_path):
    """Every retrofit run starts from the base's weights with the setting's budget, and a
    registered plan is refused for a base it did not score."""
    import json
    drv = _driver()
    plan = {"seeds": [0, 1], "placements": {"b1.0-branch": {"options": {"pattern": "branch"}}},
            "combos": {"top3": {"stages": ["1.0"]}, "bottom3": {"stages": ["3.2"]},
                       "random3": {"0": {"stages": ["2.0"]}, "1": {"stages": ["2.1"]}}}}
    base = tmp_path / "base.pt"
    torch.save(create_model("cifar_resnet20", in_chans=1, num_classes=10).state_dict(), base)
    jobs = drv.grid_jobs(plan, tmp_path, "retrofit", "cpu", smoke=False, base=base)
    assert len(jobs) == 2 * 5  # plain, one placement, top3, bottom3, random3 per seed
    for run_dir, config in jobs:
        assert config["init_from"] == str(base)
        assert (config["epochs"], config["lr"], config["train_subset"]) == (1, 0.02, 20000)
        assert config["model"] == "cifar_resnet20" and config["bf16"] is True
    assert jobs[-1][1]["model_kwargs"] == {"stages": ["2.1"]} and jobs[-1][0].endswith("random3/seed1")
    # the other settings start from scratch
    assert all("init_from" not in c for _, c in drv.grid_jobs(plan, tmp_path, "main", "cpu", False))
    registered = tmp_path / "registered.json"
    registered.write_text(json.dumps({"seeds": [0, 1], "created": "x", "base_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="is not the base"):
        drv.make_plan(tmp_path / "retrofit", [0, 1], False, weights=base, registered=registered)
    # a re-check on fresh seeds keeps the ranking and draws each new seed's random3 as registered
    import hashlib
    import random
    combos = {"top3": {"pattern": "branch", "stages": ["3.2", "1.0", "3.1"]},
              "bottom3": {"pattern": "branch", "stages": ["3.0", "2.0", "1.2"]}, "random3": {}}
    registered.write_text(json.dumps({"seeds": [0, 1], "created": "x", "combos": combos,
                                      "base_sha256": hashlib.sha256(base.read_bytes()).hexdigest()}))
    fresh = drv.make_plan(tmp_path / "recheck", [5, 6], False, weights=base, registered=registered)
    assert fresh["seeds"] == [5, 6] and fresh["combos"]["top3"] == combos["top3"]
    blocks = [f"{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert fresh["combos"]["random3"]["6"] == {
        "pattern": "branch", "stages": sorted(random.Random(1006).sample(blocks, 3))}
    with pytest.raises(SystemExit, match="use another --out"):
        drv.make_plan(tmp_path / "recheck", [7], False, weights=base, registered=registered)
