"""Deployment copies: BatchNorm folded and adjacent factors merged, exactly, for every method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import autorank as ar
from autorank._deploy import deploy
from autorank.models import get_model

LAYER = "layer2.1.conv1"  # 3x3, 32 -> 32, at 16x16
CHOICES = {
    "keep": ar.LayerChoice("keep", ()),
    "tucker2": ar.LayerChoice("tucker2", (12, 20)),
    "tucker2_full": ar.LayerChoice("tucker2", (32, 32)),
    "cp": ar.LayerChoice("cp", (6,)),
    "cp3": ar.LayerChoice("cp3", (6,)),
    "tt": ar.LayerChoice("tt", (8, 12, 8)),
    "spatial_svd": ar.LayerChoice("spatial_svd", (10,)),
    "svd": ar.LayerChoice("svd", (10,)),
    "prune": ar.LayerChoice("prune", (20,)),
    "prune_tucker2": ar.LayerChoice("tucker2", (8, 10), prune=20),
}


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = get_model("resnet20")
    model.train()
    with torch.no_grad():  # running statistics far from (0, 1), so folding changes the weights
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def _outputs(a: nn.Module, b: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return a.eval()(x), b(x)


@pytest.mark.parametrize("kind", sorted(CHOICES))
def test_deploy_is_exact_for_every_method(resnet20: nn.Module, kind: str) -> None:
    plan = {LAYER: CHOICES[kind], "linear": ar.LayerChoice("svd", (8,))}
    model = ar.apply_plan(resnet20, plan)
    fast = deploy(model)
    want, got = _outputs(model, fast)
    assert (want - got).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_full_rank_factors_are_merged_and_low_rank_ones_kept(resnet20: nn.Module) -> None:
    full = ar.apply_plan(resnet20, {LAYER: CHOICES["tucker2_full"], "linear": ar.LayerChoice("svd", (10,))})
    low = ar.apply_plan(resnet20, {LAYER: CHOICES["tucker2"], "linear": ar.LayerChoice("svd", (2,))})
    convs = sum(isinstance(m, nn.Conv2d) for m in resnet20.modules())
    linears = sum(isinstance(m, nn.Linear) for m in resnet20.modules())
    fast_full, fast_low = deploy(full), deploy(low)
    # full rank: 1x1 -> 3x3 -> 1x1 costs more than one 3x3, so it becomes one; the classifier's two
    # linears (64 -> 10 -> 10) become one
    assert sum(isinstance(m, nn.Conv2d) for m in fast_full.modules()) == convs
    assert sum(isinstance(m, nn.Linear) for m in fast_full.modules()) == linears
    # low rank: every factor is cheaper than any merge
    assert sum(isinstance(m, nn.Conv2d) for m in fast_low.modules()) == convs + 2
    assert sum(isinstance(m, nn.Linear) for m in fast_low.modules()) == linears + 1
    assert ar.count_params(fast_low) < ar.count_params(low)  # BatchNorm's parameters are folded
    for model, fast in ((full, fast_full), (low, fast_low)):
        want, got = _outputs(model, fast)
        assert (want - got).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))


def test_a_padded_conv_after_a_biased_1x1_is_not_merged() -> None:
    # zero padding of the second conv would see the first's bias at the border: not exact
    model = nn.Sequential(nn.Conv2d(4, 4, 1, bias=True), nn.Conv2d(4, 8, 3, padding=1)).eval()
    fast = deploy(model, (1, 4, 8, 8))
    assert sum(isinstance(m, nn.Conv2d) for m in fast.modules()) == 2
    unbiased = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.Conv2d(4, 8, 3, padding=1)).eval()
    fast = deploy(unbiased, (1, 4, 8, 8))
    assert sum(isinstance(m, nn.Conv2d) for m in fast.modules()) == 1
    want, got = _outputs_small(unbiased, fast)
    assert (want - got).abs().max() <= 1e-5


def _outputs_small(a: nn.Module, b: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return a(x), b(x)
