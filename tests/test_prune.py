"""``prune``: structured channel pruning through Torch-Pruning's dependency graph, alone or
before a factorization, on every registered model, exported and loaded back."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

import autorank as ar
from autorank.bundle import load_exported, write_bundle
from autorank.decompose import coupled_groups, prunable_layers
from autorank.metrics import flops_by_layer
from autorank.models import get_model, list_models

SLOW_MODELS = {"densenet121", "densenet161", "resnet110", "resnet50", "resnet34"}


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODELS
                                  else m for m in list_models()])
def test_every_model_pruned_by_half_runs(name: str) -> None:
    model = get_model(name).eval()
    prunable = sorted(prunable_layers(model, (1, 3, 32, 32)))
    rng = random.Random(0)
    chosen = rng.sample(prunable, max(1, len(prunable) // 2)) if prunable else []
    plan = {n: ar.LayerChoice("prune", (max(1, model.get_submodule(n).weight.shape[0] // 2),))
            for n in chosen}
    pruned = ar.apply_plan(model, plan).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        y = pruned(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    if plan:
        assert ar.count_params(pruned) < ar.count_params(model)
        for n, choice in plan.items():
            assert pruned.get_submodule(n).weight.shape[0] == choice.rank[0]
    else:  # a model whose graph cannot be traced offers nothing to prune
        assert name.startswith("shufflenet")


def test_residual_ties_and_the_classifier_are_not_pruned_alone() -> None:
    model = get_model("resnet20")
    # option-A shortcuts: only the channels inside each block are a layer's own
    assert prunable_layers(model, (1, 3, 32, 32)) == {
        f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
    with pytest.raises(ValueError, match="cannot be pruned alone"):
        ar.apply_plan(model, {"layer1.0.conv2": ar.LayerChoice("prune", (8,))})
    rows = {r.name: r for r in ar.inventory(model, (1, 3, 32, 32))}
    assert "prune" in rows["layer1.0.conv1"].max_rank and "prune" not in rows["layer1.0.conv2"].max_rank
    # the graph ties the 16-, 32- and 64-channel streams through the invisible padding: refused
    assert coupled_groups(model, (1, 3, 32, 32)) == []


STAGE2 = ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2")


def test_resnet18_exposes_its_residual_groups() -> None:
    groups = coupled_groups(get_model("resnet18"), (1, 3, 32, 32))
    assert [(g.name, g.channels) for g in groups] == [
        ("res:conv1", 64), ("res:layer2.0.conv2", 128), ("res:layer3.0.conv2", 256),
        ("res:layer4.0.conv2", 512)]
    assert groups[0].members == ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    assert groups[0].consumers == ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1",
                                   "layer2.0.downsample.0")
    assert groups[1].members == STAGE2
    assert groups[3].members == ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")
    assert groups[3].consumers == ("layer4.1.conv1", "fc")  # the classifier's inputs, not outputs


def test_a_residual_group_is_pruned_once_and_consistently() -> None:
    model = get_model("resnet18").eval()
    with torch.no_grad():  # channel 5 tops the summed L1 norm, channel 7 is dead everywhere
        model.get_submodule("layer2.1.conv2").weight[5] *= 100.0
        for name in STAGE2:
            model.get_submodule(name).weight[7] = 0.0
    norms = sum(model.get_submodule(n).weight.detach().abs().flatten(1).sum(1) for n in STAGE2)
    kept = sorted(sorted(range(128), key=lambda i: -float(norms[i]))[:64])
    assert 5 in kept and 7 not in kept
    pruned = ar.apply_plan(model, {n: ar.LayerChoice("prune", (64,)) for n in STAGE2}).eval()
    with torch.inference_mode():
        assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for name in STAGE2:
        assert pruned.get_submodule(name).out_channels == 64
        assert torch.equal(pruned.get_submodule(name).weight, model.get_submodule(name).weight[kept])
    for name in ("layer2.0.bn2", "layer2.0.downsample.1", "layer2.1.bn2"):
        assert pruned.get_submodule(name).num_features == 64
    for name in ("layer2.1.conv1", "layer3.0.conv1", "layer3.0.downsample.0"):
        assert pruned.get_submodule(name).in_channels == 64
    filters = 128 * 9 + 64 + 128 * 9  # one output channel of each member
    inputs = 128 * 9 + 256 * 9 + 256  # one input channel of each consumer
    assert ar.count_params(model) - ar.count_params(pruned) == 64 * (filters + 3 * 2 + inputs)


@pytest.mark.parametrize("plan", [
    {"layer2.1.conv2": 64},  # one member alone
    {"layer2.0.conv2": 32, "layer2.0.downsample.0": 64, "layer2.1.conv2": 64},  # disagreeing
])
def test_a_residual_group_pruned_in_part_names_the_group(plan: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"coupled group 'res:layer2.0.conv2' \(layer2.0.conv2, "
                                         r"layer2.0.downsample.0, layer2.1.conv2\)"):
        ar.apply_plan(get_model("resnet18"), {n: ar.LayerChoice("prune", (k,)) for n, k in plan.items()})


def test_a_group_pruned_resnet18_round_trips_through_export(tmp_path: Path) -> None:
    model = get_model("resnet18").eval()
    # groups first, then the layer pruned alone, then the factorization on the pruned shapes
    plan = {"conv1": ar.LayerChoice("prune", (32,)), "layer1.0.conv2": ar.LayerChoice("prune", (32,)),
            "layer1.1.conv2": ar.LayerChoice("tucker2", (8, 16), prune=32),
            "layer2.0.conv1": ar.LayerChoice("prune", (48,)),
            "layer2.0.conv2": ar.LayerChoice("tucker2", (16, 32), prune=64),
            "layer2.0.downsample.0": ar.LayerChoice("prune", (64,)),
            "layer2.1.conv2": ar.LayerChoice("prune", (64,))}
    compressed = ar.apply_plan(model, plan).eval()
    assert compressed.get_submodule("layer2.0.conv2")[0].in_channels == 48
    assert compressed.get_submodule("layer1.1.conv2")[-1].out_channels == 32
    write_bundle(compressed, plan, tmp_path, {"model_name": "resnet18", "num_classes": 10,
                                              "input_shape": [3, 32, 32]})
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(load_exported(tmp_path)(x), compressed(x))


def test_pruning_is_exact_counts_and_leaves_the_model_alone() -> None:
    model = get_model("resnet20").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = ar.apply_plan(model, {"layer1.0.conv1": ar.LayerChoice("prune", (16,))}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(full(x), model(x))  # every channel kept: the same model
    pruned = ar.apply_plan(model, {"layer2.0.conv1": ar.LayerChoice("prune", (12,))})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy
    conv1, bn1, conv2 = (pruned.get_submodule(f"layer2.0.{n}") for n in ("conv1", "bn1", "conv2"))
    assert (conv1.out_channels, bn1.num_features, conv2.in_channels) == (12, 12, 12)
    saved = (32 - 12) * (16 * 9 + 2 + 32 * 9)  # conv1 filters, BN scale and shift, conv2 inputs
    assert ar.count_params(model) - ar.count_params(pruned) == saved
    flops = flops_by_layer(pruned, (1, 3, 32, 32))
    assert flops["layer2.0.conv1"] == 2 * 12 * 16 * 9 * 16 * 16  # stride 2: 16x16 outputs


def test_a_pruned_and_factorized_model_round_trips_through_export(tmp_path: Path) -> None:
    model = get_model("resnet20").eval()
    plan = {"layer1.0.conv1": ar.LayerChoice("prune", (8,)),
            "layer1.0.conv2": ar.LayerChoice("tucker2", (4, 8)),  # its inputs were pruned
            "layer2.1.conv1": ar.LayerChoice("tucker2", (10, 12), prune=20)}
    compressed = ar.apply_plan(model, plan).eval()
    assert compressed.get_submodule("layer2.1.conv1")[-1].out_channels == 20
    assert ar.plan_from_json(ar.plan_to_json(plan)) == plan
    info = write_bundle(compressed, plan, tmp_path, {"model_name": "resnet20", "num_classes": 10,
                                                     "input_shape": [3, 32, 32]})
    assert sorted(info["reshaped"]) == ["layer1.0.bn1", "layer2.1.bn1", "layer2.1.conv2"]
    loaded = load_exported(tmp_path)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded(x), compressed(x))
    from autorank.bundle import export_onnx

    assert export_onnx(compressed, tmp_path / "model.onnx", x) < 1e-3  # onnxruntime agrees
    assert all(isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d | nn.Sequential | nn.ReLU)
               or not list(m.parameters(recurse=False)) for m in loaded.modules())


def test_a_search_with_prune_in_the_space(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import dataclasses

    from autorank.config import make_config, space_from_dict
    from autorank.sweep import search

    cfg = make_config(space="tiny", model="tiny_cnn", dataset="digits", checkpoint=str(tiny_checkpoint),
                      val_source="train", budget=6, runner="local", out=str(tmp_path / "run"),
                      seed=0, finetune_steps=10)
    cfg = dataclasses.replace(cfg, space=space_from_dict(
        {"methods": ["prune", "tucker2", "svd", "keep"]}, base=cfg.space))
    result = search(cfg)
    trials = result.trials.set_index("number")
    assert (trials["state"] == "complete").all()
    pruning_seeds = [ar.plan_from_json(trials.loc[n, "plan"]) for n in (2, 3)]
    model = get_model("tiny_cnn")
    for share, plan in zip((0.3, 0.5), pruning_seeds, strict=True):
        assert plan and all(c.method == "prune" for c in plan.values())
        for name, choice in plan.items():
            out = model.get_submodule(name).weight.shape[0]
            assert choice.rank == (round(out * (1 - share)),)
    assert len(result.pareto())


@pytest.mark.parametrize("importance", ["l1", "l2", "group"])
def test_importance_picks_the_channels(importance: str) -> None:
    model = get_model("resnet20").eval()
    conv = model.get_submodule("layer1.0.conv1")
    with torch.no_grad():  # channel 5 has the largest filter norm by far
        conv.weight[5] *= 100.0
    pruned = ar.apply_plan(model, {"layer1.0.conv1": ar.LayerChoice("prune", (1,))},
                           importance=importance)
    assert torch.equal(pruned.get_submodule("layer1.0.conv1").weight[0], conv.weight[5])
    with pytest.raises(ValueError, match="unknown importance"):
        ar.apply_plan(model, {"layer1.0.conv1": ar.LayerChoice("prune", (4,))}, importance="l3")
