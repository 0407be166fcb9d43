from __future__ import annotations

import torch
from torch import nn

import autorank as ar
from autorank._inventory import inventory_frame


def test_flops_of_conv_and_linear_match_hand_formula() -> None:
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    # output 16 x 16 x 16, each output a 8*3*3 multiply-add = 2 FLOPs each
    assert ar.count_flops(conv, (1, 8, 32, 32)) == 2 * 16 * 16 * 16 * 8 * 3 * 3
    lin = nn.Linear(64, 10)
    assert ar.count_flops(lin, (4, 64)) == 2 * 4 * 64 * 10


def test_count_params_counts_batchnorm_not_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    assert ar.count_params(model) == 3 * 4 * 9 + 2 * 4


def test_measure_latency_is_positive_and_restores_threads() -> None:
    before = torch.get_num_threads()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).train()
    ms = ar.measure_latency(model, (1, 3, 16, 16), batch_size=4, threads=1, repeats=5, warmup=1)
    assert ms > 0
    assert torch.get_num_threads() == before
    assert model.training


def test_factorized_model_costs_less() -> None:
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
    small = ar.apply_plan(model, {"2": ar.LayerChoice("tucker2", (4, 4))})
    assert ar.count_params(small) < ar.count_params(model)
    assert ar.count_flops(small, (1, 3, 16, 16)) < ar.count_flops(model, (1, 3, 16, 16))


def test_inventory_rows() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 32, 1), nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
    rows = ar.inventory(model, (1, 3, 8, 8))
    assert [r.name for r in rows] == ["0", "3", "5"]  # the depthwise conv is not compressible
    conv, pointwise, linear = rows
    assert conv.flops == 2 * 16 * 64 * 3 * 9 and conv.params == 16 * 27 + 16
    # pruning conv 0 cuts the depthwise conv after it too: its channels are its own
    assert set(conv.ratios) == {"cp", "cp3", "prune", "spatial_svd", "svd", "tt", "tucker2"}
    assert len(conv.vbmf_rank) == 2
    assert set(pointwise.ratios) == {"prune", "svd"} and len(pointwise.vbmf_rank) == 1
    assert linear.kind == "linear" and linear.max_rank["svd"] == (10,)
    assert "prune" not in linear.max_rank  # the classifier's classes stay
    frame = inventory_frame(rows)
    assert list(frame["layer"]) == ["0", "3", "5"]
