from __future__ import annotations

import pytest
import torch
from torch import nn

import autorank as ar


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def test_apply_plan_works_on_a_copy_and_is_exact_at_full_rank() -> None:
    torch.manual_seed(0)
    net = Net().double().eval()
    plan = {"features.0": ar.LayerChoice("tucker2", (3, 8)),
            "features.4": ar.LayerChoice("tt", ar.get_method("tt").max_rank(net.features[4])),
            "head": ar.LayerChoice("svd", (4,))}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = ar.apply_plan(net, plan)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(out.features[0], nn.Sequential) and isinstance(out.head, nn.Sequential)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(out(x), net(x), atol=1e-10)


@pytest.mark.parametrize(
    ("plan", "pattern"),
    [
        ({"features.9": ar.LayerChoice("svd", (2,))}, r"layer 'features.9' does not exist"),
        ({"features.0": ar.LayerChoice("nope", (2,))}, r"layer 'features.0': unknown method 'nope'"),
        ({"features.2": ar.LayerChoice("tucker2", (2, 2))}, r"layer 'features.2'.*groups=2"),
        ({"head": ar.LayerChoice("tucker2", (2, 2))}, r"layer 'head'.*not a Conv2d"),
        ({"features.0": ar.LayerChoice("tucker2", (4, 8))}, r"layer 'features.0'.*r_in=4.*outside 1..3"),
        ({"features.0": ar.LayerChoice("svd", (1, 2))}, r"layer 'features.0'.*takes a rank of 1"),
    ],
)
def test_bad_plans_raise_naming_layer_value_and_allowed(plan: ar.Plan, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ar.apply_plan(Net(), plan)


def test_plan_json_round_trip() -> None:
    plan = {"a.b": ar.LayerChoice("tucker2", (3, 4)), "c": ar.LayerChoice("keep")}
    assert ar.plan_from_json(ar.plan_to_json(plan)) == plan
    with pytest.raises(ValueError, match="layer choice needs"):
        ar.plan_from_json('{"a": 3}')
