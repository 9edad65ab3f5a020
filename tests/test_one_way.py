"""One piece of code for each thing (issue 17): the machine description, the model defaults a row
reports, the optimizer groups, gamma's stored value, the command line a study records."""
import json
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from resattn import create_model
from resattn.layers.blocks import AttentionConfig
from resattn.cli import main
from resattn.workflow.compare import RunSpec, _flat_result
from resattn.utils.machine import machine_description
from resattn.layers.modulation import Modulation
from resattn.workflow.report import machine_lines
from resattn.workflow.train import TrainConfig, param_groups


def test_one_machine_description_everywhere(tmp_path):
    from resattn.workflow.data import load_dataset
    from resattn.workflow.train import train
    bundle = load_dataset("digits", train_subset=64, test_subset=32)
    train(TrainConfig(dataset="digits", epochs=1, batch_size=64, augment=False), tmp_path,
          bundle=bundle, progress=False)
    described = machine_description()
    assert json.loads((tmp_path / "result.json").read_text())["machine"] == described
    assert f"- machine: {described}" in machine_lines("resattn compare", 1.0, [])


@pytest.mark.parametrize("pattern", ["dual", 4])
def test_flat_result_reads_the_model_defaults(pattern, monkeypatch):
    spec = RunSpec("r", "v", None, 0, 0.1, TrainConfig(model_kwargs={"pattern": pattern}))
    row = _flat_result({"status": "finished"}, spec)
    default = AttentionConfig()
    assert (row["skip_attn"], row["skip_modulation"]) == (default.skip_attn, default.skip_modulation)
    # another default in the model config is what the row reports (nothing hard-coded here)
    import resattn.layers.blocks as blocks
    monkeypatch.setattr(blocks, "AttentionConfig",
                        lambda: replace(default, skip_attn="se", skip_modulation="gate"))
    row = _flat_result({"status": "finished"}, spec)
    assert (row["skip_attn"], row["skip_modulation"]) == ("se", "gate")
    plain = RunSpec("r", "v", None, 0, 0.1, TrainConfig(model_kwargs={"pattern": "post"}))
    assert _flat_result({}, plain)["skip_attn"] is None


def _groups_before(model, weight_decay, lr, gamma_lr_scale):
    """param_groups as it was written before issue 17 (gamma found by its name)."""
    decay, no_decay, gammas = [], [], []
    for name, p in model.named_parameters():
        if name.endswith(".gamma") or name == "gamma":
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


def _converted():
    import torchvision
    from resattn.tools.convert import convert
    model = torchvision.models.resnet18(num_classes=10)
    convert(model, pattern="dual")  # in place
    return model


@pytest.mark.parametrize("build", [
    lambda: create_model("cifar_resnet20"),
    lambda: create_model("cifar_resnet20", pattern="dual"),
    lambda: create_model("cifar_resnet20", pattern="dual", gamma_shape="channel"),
    lambda: create_model("cifar_resnet20", pattern="post", modulation="near_identity"),
    lambda: Modulation("se", 8, "near_identity"),
    _converted,
], ids=["plain", "dual", "dual-channel", "post-near-identity", "one-modulation", "converted-tv"])
def test_param_groups_are_the_groups_of_before(build):
    model = build()
    new, old = param_groups(model, 5e-4, 0.1, 2.0), _groups_before(model, 5e-4, 0.1, 2.0)
    assert [{k: v for k, v in g.items() if k != "params"} for g in new] == \
           [{k: v for k, v in g.items() if k != "params"} for g in old]
    assert [[id(p) for p in g["params"]] for g in new] == [[id(p) for p in g["params"]] for g in old]
    if hasattr(model, "no_weight_decay"):  # the gamma group is what the timm interface declares
        names = {id(p): n for n, p in model.named_parameters()}
        gamma = [names[id(p)] for g in new if g["name"] == "gamma" for p in g["params"]]
        assert set(gamma) == model.no_weight_decay()


def test_gamma_init_is_one_formula():
    m = create_model("cifar_resnet20", pattern="dual", skip_gamma_init=0.1, res_gamma_init=0.3)
    mods = [mod for mod in m.modules() if isinstance(mod, Modulation) and mod.gamma is not None]
    built = [(mod.gamma.clone(), mod.effective_gamma().item()) for mod in mods]
    for mod in mods:
        nn.init.normal_(mod.gamma)
    m.init_weights()  # back to gamma_init, through the same formula as construction
    assert all(torch.equal(mod.gamma, g) for mod, (g, _) in zip(mods, built))
    assert sorted({round(e, 6) for _, e in built}) == [0.1, 0.3]


STUDY = """
name: cmdline
claim: c.
hypothesis: {better: a, worse: b, metric: final_acc}
decision_rule: {test: paired, confidence: 0.95}
variants: {a: {pattern: dual}, b: {pattern: none}}
dataset: digits
budgets:
  smoke: {epochs: 1, train_subset: 100, test_subset: 50, seeds: [0]}
"""


def test_study_records_the_command_as_typed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    out = tmp_path / "out"
    argv = ["study", str(path), "--budget", "smoke", "--out", str(out), "--report-only",
            "--no-progress", "--executor", "processes", "--workers", "3", "--threads", "1"]
    main(argv)  # report-only: trains nothing, the runs count as missing
    doc = json.loads((out / "study.json").read_text())
    # the command that trains the runs; that this report trained nothing is study.json's own field
    assert doc["command"].split() == ["resattn", *(a for a in argv if a != "--report-only")]
    assert doc["report_only"] is True
