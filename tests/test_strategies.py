"""Strategies end to end on a tiny CNN and digits: consistent rows, MUSCO's stages, the ADMM
pull towards the rank constraint, exact 1x1 fusing and kernels, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import autorank as ar
from autorank.cli import main
from autorank.data import DataBundle, get_data
from autorank.decompose import get_method
from autorank.engine import FinetuneConfig
from autorank.metrics import count_flops, count_params
from autorank.models import get_model, get_model_spec
from autorank.strategies import (
    AdmmOptions,
    CompressConfig,
    MuscoOptions,
    StrategyContext,
    admm_plan,
    admm_train,
    compress,
    dense_weight,
    list_strategies,
    merge_into_neighbours,
    save_compressed,
    train_plan,
)
from autorank.types import LayerChoice

FAST = FinetuneConfig(steps=8, batch_size=64)


@pytest.fixture(scope="module")
def data() -> DataBundle:
    spec = get_model_spec("tiny_cnn")
    return get_data("digits", mean=spec.mean, std=spec.std)


@pytest.fixture(scope="module")
def baseline(tiny_checkpoint: Path) -> nn.Module:
    return get_model("tiny_cnn", checkpoint=tiny_checkpoint)


def test_three_strategies_are_registered() -> None:
    assert list_strategies() == ["admm", "musco", "vbmf-tucker2"]


@pytest.mark.parametrize("name", ["vbmf-tucker2", "musco", "admm"])
def test_strategy_end_to_end(name: str, baseline: nn.Module, data: DataBundle,
                             tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    cfg = CompressConfig(finetune=FAST, admm=AdmmOptions(steps=10, ratio=3.0))
    row, out = compress(name, "tiny_cnn", baseline, data, cfg)
    shape = (1, *data.input_shape)
    assert row.params_ratio == pytest.approx(count_params(baseline) / count_params(out.model))
    assert row.flops_ratio == pytest.approx(count_flops(baseline, shape)
                                            / count_flops(out.model, shape))
    assert row.params_ratio > 1 and row.flops_ratio > 1
    for acc in (row.accuracy_before, row.accuracy_after, row.fine_tune):
        assert 0.0 <= acc <= 1.0
    assert row.accuracy_before > 0.3  # the baseline really is the trained checkpoint
    assert row.wall_s > 0 and row.test_images == data.num_examples("test")
    assert all(torch.equal(v, baseline.state_dict()[k]) for k, v in before.items())
    folder = save_compressed(tmp_path / name, row, out, config=cfg, baseline=baseline, data=data,
                             dataset="digits")
    saved = json.loads((folder / "results.json").read_text())
    assert saved["row"]["params_ratio"] == pytest.approx(row.params_ratio)
    assert (folder / "results.csv").read_text().startswith("model,strategy,params_ratio,flops_ratio,")
    # the model is an export directory: loaded back as plain torch, bit-identical
    info = json.loads((folder / "export.json").read_text())
    assert info["strategy"] == name and info["params_ratio"] == pytest.approx(row.params_ratio)
    assert info["test_accuracy"] == row.fine_tune
    plan = json.loads((folder / "plan.json").read_text())
    assert ("stages" in plan) == (name == "musco")  # every stage of a multi-stage model
    card = (folder / "README.md").read_text()
    assert f"autorank compress --strategy {name}" in card and "right after factorization" in card
    loaded = ar.load_exported(folder)
    assert all(type(m).__module__.startswith("torch.nn") for m in loaded.modules() if m is not loaded)
    x = torch.randn(4, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(loaded(x), out.model.eval()(x))


def test_musco_second_stage_compresses_the_factorized_layers_further(
        baseline: nn.Module, data: DataBundle) -> None:
    cfg = CompressConfig(finetune=FinetuneConfig(steps=0, bn_batches=2),
                         musco=MuscoOptions(stages=2, w=0.5))
    row, out = compress("musco", "tiny_cnn", baseline, data, cfg)
    first, second = out.table
    assert second["params_ratio"] > first["params_ratio"] > 1
    assert row.params_ratio == pytest.approx(second["params_ratio"])
    assert all(name.endswith(".1") for name in out.stages[1].plan)
    for name in out.stages[0].plan:  # still 1x1 -> k x k core -> 1x1, with smaller ranks
        layer = out.model.get_submodule(name)
        assert [tuple(c.kernel_size) for c in layer] == [(1, 1), (3, 3), (1, 1)]
        assert layer[1].in_channels <= out.stages[1].plan[f"{name}.1"].rank[0]


def test_musco_stops_at_the_target_ratio(baseline: nn.Module, data: DataBundle) -> None:
    cfg = CompressConfig(finetune=FinetuneConfig(steps=0, bn_batches=0),
                         musco=MuscoOptions(stages=3, w=0.5, target_ratio=1.5))
    _, out = compress("musco", "tiny_cnn", baseline, data, cfg)
    assert len(out.table) == 1 and "reached the target" in out.extra["stop_reason"]


@pytest.mark.parametrize("method", ["tucker2", "tt"])
def test_admm_penalty_drives_weights_to_the_rank_constraint(
        method: str, baseline: nn.Module, data: DataBundle) -> None:
    opts = AdmmOptions(steps=30, method=method, ratio=3.0, rho=2.0, rho_growth=1.5,
                       rho_max=20.0, update_every=5)
    ctx = StrategyContext(baseline, data, CompressConfig(finetune=FAST, admm=opts),
                          (1, *data.input_shape))
    dense = get_model("tiny_cnn", checkpoint=baseline.state_dict())
    plan = admm_plan(ctx)
    assert {c.method for c in plan.values()} == {method}
    hook = admm_train(dense, plan, ctx)
    d = hook.distances
    assert len(d) == 1 + opts.steps // opts.update_every
    assert d[-1] < 0.5 * d[0]  # the weights moved most of the way into the format
    assert d[-1] < d[len(d) // 2] < d[0]
    assert hook.rho == pytest.approx(min(opts.rho * 1.5 ** (len(d) - 1), opts.rho_max))


@pytest.mark.parametrize("strategy", ["vbmf-tucker2", "admm"])
def test_train_plan_gives_a_chosen_plan_its_final_training(
        strategy: str, baseline: nn.Module, data: DataBundle) -> None:
    plan = {"conv2": LayerChoice("tucker2", (8, 8)), "conv3": LayerChoice("svd", (6,))}
    cfg = CompressConfig(finetune=FAST, admm=AdmmOptions(steps=10))
    out = train_plan(strategy, StrategyContext(baseline, data, cfg, (1, *data.input_shape)), plan)
    assert out.stages[0].plan == plan and 0 <= out.fine_tune <= 1
    assert out.model.conv2[1].in_channels == 8 and out.model.conv3[0].out_channels == 6
    with pytest.raises(ValueError, match="cannot train a given plan"):
        train_plan("musco", StrategyContext(baseline, data, cfg, (1, 3, 32, 32)), plan)


@pytest.mark.parametrize(("method", "rank"), [("tucker2", (6, 5)), ("tt", (6, 10, 5)),
                                              ("svd", (5,))])
def test_dense_weight_is_the_factorized_kernel(method: str, rank: tuple[int, ...]) -> None:
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False)
    factorized = get_method(method).factorize(conv, rank)
    x = torch.randn(2, 8, 7, 7)
    dense = nn.Conv2d(8, 12, 3, padding=1, bias=False)
    with torch.no_grad():
        dense.weight.copy_(dense_weight(factorized))
    torch.testing.assert_close(dense(x), factorized(x), atol=1e-5, rtol=1e-4)
    full = get_method(method).factorize(conv, get_method(method).max_rank(conv))
    torch.testing.assert_close(dense_weight(full), conv.weight.detach(), atol=1e-5, rtol=1e-4)


def test_merging_a_refactorized_core_is_exact() -> None:
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=True)
    tucker = get_method("tucker2")
    triple = tucker.factorize(conv, (6, 7))
    triple[1] = tucker.factorize(triple[1], tucker.max_rank(triple[1]))
    merged = merge_into_neighbours(triple, 1)
    assert [tuple(m.kernel_size) for m in merged] == [(1, 1), (3, 3), (1, 1)]
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(merged(x), triple(x), atol=1e-5, rtol=1e-4)
    linear = nn.Linear(10, 6)
    pair = get_method("svd").factorize(linear, (4,))
    pair[1] = get_method("svd").factorize(pair[1], (4,))
    merged = merge_into_neighbours(pair, 1)
    assert [type(m) for m in merged] == [nn.Linear, nn.Linear]
    y = torch.randn(3, 10)
    torch.testing.assert_close(merged(y), pair(y), atol=1e-5, rtol=1e-4)


def test_cli_compress(tiny_checkpoint: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["compress", "--model", "tiny_cnn", "--checkpoint", str(tiny_checkpoint),
                 "--dataset", "digits", "--strategy", "vbmf-tucker2", "--finetune-steps", "4",
                 "--batch-size", "64", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "params ratio" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"plan.json", "model.safetensors", "export.json",
                                               "README.md", "results.csv", "results.json"}
    row = json.loads((out / "results.json").read_text())["row"]
    assert row["strategy"] == "vbmf-tucker2" and row["params_ratio"] > 1


@pytest.mark.parametrize(("argv", "pattern"), [
    (["--strategy", "svd-magic"], "unknown strategy 'svd-magic'; expected one of"),
    (["--strategy", "musco", "--w", "1.5"], "w must be in [0, 1]"),
    (["--strategy", "admm", "--plan", "/no/plan.json"], "plan file '/no/plan.json' does not"),
    (["--strategy", "musco", "--out", "{tmp}/busy"], "holds other files; give a new or empty"),
])
def test_cli_compress_bad_input(argv: list[str], pattern: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "results-of-something-else.csv").write_text("kept\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["compress", "--model", "tiny_cnn", "--dataset", "digits",
                 "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and pattern in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert (tmp_path / "busy" / "results-of-something-else.csv").read_text() == "kept\n"
