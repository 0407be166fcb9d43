from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import autorank as ar
from autorank.config import SpaceConfig, space_from_dict
from autorank.errors import UserError
from autorank.sweep import build_space, list_presets, load_space


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.pw = nn.Conv2d(32, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(self.b(self.a(self.stem(x)))).mean((2, 3)))


def space_for(**overrides: object) -> ar.sweep.SearchSpace:
    net = Net()
    return build_space(net, ar.inventory(net, (1, 3, 8, 8)), space_from_dict(overrides))


def test_presets_load() -> None:
    assert {"default", "cifar_resnet", "tiny"} <= set(list_presets())
    for name in list_presets():
        assert isinstance(load_space(name), SpaceConfig)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"methodz": ["svd"]}, r"methodz: unknown key"),
        ({"methods": []}, r"methods: is empty"),
        ({"methods": ["svd", "qr"]}, r"unknown method 'qr'"),
        ({"min_params": "big"}, r"min_params: expected int"),
        ({"strength": [0.5, 2.0]}, r"strength: needs \[low, high\]"),
        ({"objectives": ["params"]}, r"objectives: must start with 'accuracy'"),
        ({"finetune": {"stepz": 3}}, r"finetune.stepz: unknown key"),
        ({"finetune": {"lr": -1.0}}, r"finetune: needs"),
    ],
)
def test_bad_presets_name_the_key(data: dict[str, object], pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        space_from_dict(data)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"methods: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_space(evil)
    assert not marker.exists()


def test_default_exclusions_and_methods() -> None:
    space = space_for()
    names = [layer.name for layer in space.layers]
    assert names == ["a", "b", "pw"]  # first conv and the classifier excluded
    by_name = {layer.name: layer for layer in space.layers}
    assert by_name["pw"].methods == ("svd", "prune", "keep")  # 1x1: svd (and pruning) apply
    assert "tucker2" in by_name["a"].methods and by_name["a"].default_method == "tucker2"
    assert [layer.name for layer in space_for(exclude=["b*"]).layers] == ["a", "pw"]
    with pytest.raises(UserError, match="no compressible layer"):
        space_for(exclude=["*"])


def test_seeds_are_evbmf_tucker2_then_musco() -> None:
    net = Net()
    space = build_space(net, ar.inventory(net, (1, 3, 8, 8)), SpaceConfig())
    evbmf, musco, prune30, prune50, half, three_eighths = (space.plan(p) for p in space.seeds())
    for share, plan in ((0.5, half), (0.375, three_eighths)):  # uniform Tucker-2
        assert set(plan) == {layer.name for layer in space.layers}
        for layer in space.layers:
            choice = plan[layer.name]
            assert choice.method == layer.default_method
            exact = layer.max_rank_within(choice.method, layer.weight_shape[1])
            assert all(abs(r - share * e) <= max(1.0, 0.15 * e)
                       for r, e in zip(choice.rank, exact, strict=True)), (layer.name, choice, exact)
    for share, plan in ((0.3, prune30), (0.5, prune50)):  # uniform L1 pruning (Li et al. 2017)
        assert plan and all(c.method == "prune" for c in plan.values())
        for name, choice in plan.items():
            out = next(x for x in space.layers if x.name == name).weight_shape[0]
            assert choice.rank == (round(out * (1 - share)),)
    for layer in space.layers:
        method = layer.default_method
        assert evbmf[layer.name] == ar.LayerChoice(method, layer.seed[method])
        expected = ar.musco_weaken(layer.reference[method], layer.seed[method], 0.8)
        assert musco[layer.name].rank == expected


def test_search_musco_seed_is_compress_musco_first_stage() -> None:
    """One rank rule: the search's MUSCO seed gives every layer the rank that
    ``autorank compress --strategy musco`` gives it in its first stage, for the same w."""
    from autorank._inventory import eligible
    from autorank.strategies import vbmf_plan

    net = Net()
    rows = ar.inventory(net, (1, 3, 8, 8))
    space = build_space(net, rows, SpaceConfig(musco_w=0.8))
    search_seed = space.plan(space.seeds()[1])
    compress_stage = vbmf_plan(net, eligible(rows), w=0.8)
    assert compress_stage  # the comparison is not vacuous
    for name, choice in compress_stage.items():
        assert search_seed[name] == choice
    # the case that once disagreed (round vs int): R = 64, r_vbmf = 10, w = 0.8 -> 20.8
    assert ar.musco_weaken((64,), (10,), 0.8) == (21,)


def test_plans_are_valid_and_names_stable() -> None:
    net = Net()
    space = build_space(net, ar.inventory(net, (1, 3, 8, 8)), SpaceConfig())
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    names = None
    for _ in range(25):
        trial = study.ask()
        space.suggest(trial)
        if names is None:
            names = set(trial.params)
        assert set(trial.params) == names
        ar.apply_plan(net, space.plan(trial.params))  # every sampled plan builds
        study.tell(trial, [0.5, 1.0])
    assert names == {"w", "method.a", "method.b", "method.pw", "scale.a", "scale.b", "scale.pw"}


def test_groups_share_method_and_offset() -> None:
    space = space_for(groups=2)
    assert [layer.key for layer in space.layers] == ["g0", "g0", "g1"]
    assert space.keys()["g1"] == ("svd", "prune", "keep")
    params = {"w": 0.5, "method.g0": "tucker2", "scale.g0": -1.0, "method.g1": "svd", "scale.g1": 0.0}
    plan = space.plan(params)
    a, b = (next(x for x in space.layers if x.name == n) for n in ("a", "b"))
    for layer in (a, b):  # the same method and offset, each on its own EVBMF seed and R
        r_full, r_seed = layer.reference["tucker2"], layer.seed["tucker2"]
        expected = tuple(max(1, round((f - 0.5 * (f - s)) / 2)) for s, f in zip(r_seed, r_full, strict=True))
        assert plan[layer.name] == ar.LayerChoice("tucker2", expected)
    assert plan["pw"].method == "svd"
    # a group's pick that one of its layers cannot take falls back to that layer's default
    mixed = build_space(Net(), ar.inventory(Net(), (1, 3, 8, 8)), space_from_dict({"groups": 1}))
    plan = mixed.plan({"w": 1.0, "method.g0": "tucker2", "scale.g0": 0.0})
    assert [plan[n].method for n in ("a", "b", "pw")] == ["tucker2", "tucker2", "svd"]
    assert mixed.plan(mixed.seeds()[0]) == space_for().plan(space_for().seeds()[0])
    with pytest.raises(UserError, match="groups: must be >= 0"):
        space_from_dict({"groups": -1})


def test_same_seed_same_plans() -> None:
    net = Net()
    space = build_space(net, ar.inventory(net, (1, 3, 8, 8)), SpaceConfig())

    def plans(seed: int) -> list[str]:
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                                       n_startup_trials=3))
        out = []
        for i in range(8):
            trial = study.ask()
            space.suggest(trial)
            plan = space.plan(trial.params)
            out.append(ar.plan_to_json(plan))
            study.tell(trial, [i / 10, float(ar.count_params(ar.apply_plan(net, plan)))])
        return out

    assert plans(3) == plans(3)
    assert plans(3) != plans(4)


def test_a_residual_group_is_one_key_of_the_space() -> None:
    from autorank._inventory import _layer_info
    from autorank.decompose import prunable_layers
    from autorank.models import get_model

    model = get_model("resnet18").eval()
    alone = prunable_layers(model, (1, 3, 32, 32))
    names = ["layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv2"]
    rows = [_layer_info(n, model.get_submodule(n), 0, ["tucker2", "svd"] + ["prune"] * (n in alone))
            for n in names]  # a few rows: the whole inventory's CP seeds take a minute
    space = build_space(model, rows, space_from_dict({"exclude_first_conv": False}))
    keys = space.keys()
    assert [k for k in keys if k.startswith("res:")] == [
        "res:conv1", "res:layer2.0.conv2", "res:layer3.0.conv2", "res:layer4.0.conv2"]
    assert keys["res:layer2.0.conv2"] == ("keep", "prune")
    assert keys["layer2.0.conv2"] == ("tucker2", "svd", "keep")  # a member keeps its factorizations
    # the L1 seeds prune inside the blocks only
    assert all(space.plan(seed).get("layer2.1.conv2") is None for seed in space.seeds()[2:4])
    params = {**space.seed_params(1.0), "method.layer2.1.conv2": "keep",
              "method.res:layer2.0.conv2": "prune", "w": 0.0, "scale.res:layer2.0.conv2": -1.0}
    trial = optuna.trial.FixedTrial(params)
    space.suggest(trial)  # the parameters a sampler draws
    plan = space.plan(trial.params)
    assert plan["layer2.0.downsample.0"] == plan["layer2.1.conv2"] == ar.LayerChoice("prune", (64,))
    tucker = plan["layer2.0.conv2"]  # pruned, then factorized within its 64 outputs
    assert tucker.method == "tucker2" and tucker.prune == 64 and tucker.rank[1] <= 64
    compressed = ar.apply_plan(model, plan).eval()
    with torch.inference_mode():
        assert compressed(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert compressed.get_submodule("layer2.0.conv2")[-1].out_channels == 64
    assert compressed.get_submodule("layer2.1.conv1").in_channels == 64
