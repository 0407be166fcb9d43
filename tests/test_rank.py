from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import autorank as ar
from autorank.rank import energy_rank, evbmf, rank_from_ratio, singular_values


def low_rank_plus_noise(rows: int, cols: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols))
    return signal + 0.1 * np.sqrt(rank) * rng.normal(size=(rows, cols))


@pytest.mark.parametrize(("rows", "cols", "rank"), [(60, 150, 7), (150, 60, 7), (64, 576, 12),
                                                    (576, 64, 12), (40, 40, 5)])
def test_evbmf_recovers_rank_in_both_orientations(rows: int, cols: int, rank: int) -> None:
    matrix = low_rank_plus_noise(rows, cols, rank)
    assert ar.evbmf_rank(matrix) == rank
    assert ar.evbmf_rank(matrix.T) == rank


@pytest.mark.parametrize(("rows", "cols"), [(50, 200), (200, 50), (80, 80)])
def test_evbmf_on_pure_noise_is_zero_or_near(rows: int, cols: int) -> None:
    noise = np.random.default_rng(3).normal(size=(rows, cols))
    assert ar.evbmf_rank(noise) <= 1


def test_evbmf_edge_cases() -> None:
    assert ar.evbmf_rank(np.zeros((5, 8))) == 0
    result = evbmf(np.array([10.0, 1.0, 0.5]), (3, 30))
    assert 0 <= result.rank <= 3 and result.sigma2 > 0
    with pytest.raises(ValueError, match="expected 3 singular values"):
        evbmf(np.array([1.0]), (3, 30))
    with pytest.raises(ValueError, match="2-D"):
        ar.evbmf_rank(np.zeros((2, 2, 2)))


def test_singular_values_match_svd() -> None:
    m = np.random.default_rng(0).normal(size=(30, 70))
    np.testing.assert_allclose(singular_values(m), np.linalg.svd(m, compute_uv=False), atol=1e-10)
    np.testing.assert_allclose(singular_values(m.T), np.linalg.svd(m, compute_uv=False), atol=1e-10)


def test_musco_weaken() -> None:
    assert ar.musco_weaken((64, 64), (8, 16), 1.0) == (8, 16)
    assert ar.musco_weaken((64, 64), (8, 16), 0.0) == (64, 64)
    assert ar.musco_weaken((64,), (8,), 0.5) == (36,)
    assert ar.musco_weaken((4,), (0,), 1.0) == (1,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ar.musco_weaken((4,), (1,), 1.5)


def test_energy_rank() -> None:
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 1.0) == 3


@pytest.mark.parametrize("method", ["svd", "spatial_svd", "tucker2", "tt", "cp", "cp3"])
def test_rank_from_ratio_meets_the_ratio(method: str) -> None:
    conv = nn.Conv2d(32, 48, 3)
    for ratio in (2.0, 5.0):
        rank = rank_from_ratio(method, conv, ratio)
        params = ar.get_method(method).num_params(conv, rank)
        assert ar.count_params(conv) / params >= ratio
        bigger = tuple(r + 1 for r in rank)
        assert ar.count_params(conv) / ar.get_method(method).num_params(conv, bigger) < ratio


def test_vbmf_seed_of_a_low_rank_kernel() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, bias=False)
    u_in, u_out = torch.randn(32, 5), torch.randn(48, 7)
    core = torch.randn(7, 5, 3, 3)
    kernel = torch.einsum("oihw,si,to->tshw", core, u_in, u_out)
    with torch.no_grad():
        conv.weight.copy_(kernel + 0.01 * torch.randn_like(kernel))
    assert ar.vbmf_rank_for("tucker2", conv) == (5, 7)
    assert ar.vbmf_rank_for("svd", conv) == (7,)
    r1, _, r3 = ar.vbmf_rank_for("tt", conv)
    assert (r1, r3) == (5, 7)
    (cp_rank,) = ar.vbmf_rank_for("cp", conv)
    tucker_params = ar.get_method("tucker2").num_params(conv, (5, 7))
    assert ar.get_method("cp").num_params(conv, (cp_rank,)) <= tucker_params
