"""Conformance suite: every registered decomposition method, the same checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import autorank as ar
from autorank.decompose import DegenerateDecompositionError
from autorank.decompose.cp import cp_als
from autorank.decompose.prune import kept_channels

CONV_METHODS = [m for m in ar.list_methods() if m != "keep"]
NESTED = ["svd", "spatial_svd", "tucker2", "tt"]  # error falls as rank grows
CP_METHODS = ["cp", "cp3"]

GEOMETRIES = {
    "plain": dict(kernel_size=3, padding=1),
    "no_bias": dict(kernel_size=3, padding=1, bias=False),
    "stride2": dict(kernel_size=3, stride=2, padding=1),
    "stride21": dict(kernel_size=3, stride=(2, 1), padding=(1, 0)),
    "k1x3": dict(kernel_size=(1, 3), padding=(0, 1)),
    "k5x5": dict(kernel_size=5, padding=2),
    "dilation2": dict(kernel_size=3, dilation=2, padding=2),
    "same": dict(kernel_size=(3, 2), padding="same"),
}


def make_conv(geometry: str, s: int = 5, t: int = 6) -> nn.Conv2d:
    torch.manual_seed(0)
    kw = dict(GEOMETRIES[geometry])
    kw.setdefault("bias", True)
    return nn.Conv2d(s, t, **kw).double()


def cp_kernel(conv: nn.Conv2d, method: str, rank: int) -> None:
    """Overwrite ``conv``'s kernel with an exact rank-``rank`` CP tensor of the method's modes."""
    g = torch.Generator().manual_seed(1)
    t, s, kh, kw = conv.weight.shape
    dims = (t, s, kh, kw) if method == "cp" else (t, s, kh * kw)
    factors = [torch.randn(d, rank, generator=g, dtype=torch.float64) for d in dims]
    letters = "abcd"[: len(dims)]
    spec = ",".join(f"{c}r" for c in letters) + "->" + letters
    with torch.no_grad():
        conv.weight.copy_(torch.einsum(spec, *factors).reshape(conv.weight.shape))


def exact_rank(method: str, conv: nn.Conv2d) -> tuple[int, ...]:
    if method in CP_METHODS:
        cp_kernel(conv, method, 3)
        return (3,)
    return ar.get_method(method).max_rank(conv)


@torch.no_grad()
def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@torch.no_grad()
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("method", CONV_METHODS)
def test_exact_at_full_rank(method: str, geometry: str) -> None:
    conv = make_conv(geometry)
    rank = exact_rank(method, conv)
    fact = ar.get_method(method).factorize(conv, rank)
    x = torch.randn(2, 5, 11, 9, dtype=torch.float64)
    y, ref = fact(x), conv(x)
    assert y.shape == ref.shape
    assert rel_error(y, ref) <= 1e-4
    # a factorization is a chain of small convs; pruning keeps the layer, with fewer filters
    layers = [fact] if method == "prune" else list(fact)
    assert isinstance(fact, nn.Conv2d if method == "prune" else nn.Sequential)
    assert all(isinstance(m, nn.Conv2d) for m in layers)
    assert all(p.dtype == torch.float64 for p in fact.parameters())


@pytest.mark.parametrize("geometry", ["plain", "no_bias", "k1x3", "stride21"])
@pytest.mark.parametrize("method", CONV_METHODS)
def test_num_params_matches_module(method: str, geometry: str) -> None:
    conv = make_conv(geometry)
    strategy = ar.get_method(method)
    top = strategy.max_rank(conv)
    for fraction in (0.3, 0.6, 1.0):
        rank = tuple(max(1, int(fraction * r)) for r in top)
        if method in CP_METHODS:
            rank = (max(1, int(fraction * 8)),)
        fact = strategy.factorize(conv, rank)
        assert strategy.num_params(conv, rank) == sum(p.numel() for p in fact.parameters())
        bias = (fact[-1] if isinstance(fact, nn.Sequential) else fact).bias
        assert (bias is None) == (conv.bias is None)
        if conv.bias is not None:
            # pruning keeps the biases of the filters it keeps
            kept = kept_channels(conv, rank[0]) if method == "prune" else slice(None)
            assert torch.equal(bias, conv.bias[kept])


@torch.no_grad()
@pytest.mark.parametrize("method", NESTED)
def test_error_falls_as_rank_grows(method: str) -> None:
    conv = make_conv("plain", s=8, t=10)
    strategy = ar.get_method(method)
    top = strategy.max_rank(conv)
    x = torch.randn(4, 8, 8, 8, dtype=torch.float64)
    ref = conv(x)
    errors = []
    for fraction in (0.15, 0.4, 0.7, 1.0):
        rank = tuple(max(1, round(fraction * r)) for r in top)
        errors.append(float((strategy.factorize(conv, rank)(x) - ref).norm()))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-8 * float(ref.norm())


def test_tucker2_ratio_matches_kim_formula() -> None:
    conv = nn.Conv2d(32, 48, 3, bias=False)
    s, t, d, r3, r4 = 32, 48, 3, 7, 11
    expected = d * d * s * t / (s * r3 + d * d * r3 * r4 + t * r4)
    got = ar.count_params(conv) / ar.get_method("tucker2").num_params(conv, (r3, r4))
    assert got == pytest.approx(expected)


@torch.no_grad()
def test_tucker2_hooi_fits_at_least_as_well_as_hosvd() -> None:
    from autorank.decompose.tucker2 import Tucker2

    conv = make_conv("plain", s=8, t=10)
    errors = {}
    for name, method in (("hosvd", Tucker2()), ("hooi", Tucker2(hooi_iters=10))):
        f = method.factorize(conv, (3, 4))
        dense = torch.einsum("as,oahw,to->tshw", f[0].weight[:, :, 0, 0], f[1].weight,
                             f[2].weight[:, :, 0, 0])
        errors[name] = float((dense - conv.weight).norm())
    assert errors["hooi"] <= errors["hosvd"] + 1e-12
    assert errors["hosvd"] > 0


def test_svd_linear_exact_and_others_refuse_linear() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(12, 7).double()
    fact = ar.get_method("svd").factorize(lin, (7,))
    x = torch.randn(3, 12, dtype=torch.float64)
    assert rel_error(fact(x), lin(x)) < 1e-10
    assert [type(m) for m in fact] == [nn.Linear, nn.Linear]
    assert fact[0].bias is None and torch.equal(fact[1].bias, lin.bias)
    for method in ("tucker2", "cp", "cp3", "tt", "spatial_svd"):
        assert not ar.get_method(method).supports(lin)


@pytest.mark.parametrize("method", CONV_METHODS)
def test_grouped_conv_not_supported(method: str) -> None:
    depthwise = nn.Conv2d(8, 8, 3, groups=8)
    assert not ar.get_method(method).supports(depthwise)
    with pytest.raises(ValueError, match="groups=8"):
        ar.get_method(method).factorize(depthwise, (1,) * len(ar.get_method(method).rank_names))


@pytest.mark.parametrize("method", CONV_METHODS)
def test_rank_outside_range_raises(method: str) -> None:
    conv = make_conv("plain")
    strategy = ar.get_method(method)
    top = strategy.max_rank(conv)
    with pytest.raises(ValueError, match="outside 1.."):
        strategy.factorize(conv, (0,) + top[1:])
    with pytest.raises(ValueError, match="outside 1.."):
        strategy.factorize(conv, (top[0] + 1,) + top[1:])
    with pytest.raises(ValueError, match="takes a rank of"):
        strategy.factorize(conv, top + (1,))


def test_cp_degeneracy_is_detected() -> None:
    # a⊗a⊗b + a⊗b⊗a + b⊗a⊗a has rank 3 but border rank 2: rank-2 CP-ALS degenerates.
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    outer = lambda x, y, z: np.einsum("i,j,k->ijk", x, y, z)  # noqa: E731
    tensor = outer(a, a, b) + outer(a, b, a) + outer(b, a, a)
    with pytest.raises(DegenerateDecompositionError):
        cp_als(tensor, 2)
    with pytest.raises(DegenerateDecompositionError):
        cp_als(np.full((3, 3, 3), np.nan), 2)


def test_factors_are_cached_and_sliced() -> None:
    conv = make_conv("plain", s=8, t=10)
    tucker = ar.get_method("tucker2")
    tucker.cache.clear()
    a = tucker.factorize(conv, (3, 4))
    b = tucker.factorize(conv, (5, 6))
    assert tucker.cache.misses == 1 and tucker.cache.hits == 1
    assert torch.equal(a[0].weight, b[0].weight[:3])
    copy = make_conv("plain", s=8, t=10)  # same content, another object: still a hit
    tucker.factorize(copy, (2, 2))
    assert tucker.cache.hits == 2
    with torch.no_grad():
        copy.weight.add_(1.0)
    tucker.factorize(copy, (2, 2))
    assert tucker.cache.misses == 2


def test_keep_is_identity() -> None:
    conv = make_conv("plain")
    kept = ar.get_method("keep").factorize(conv, ())
    assert kept is not conv and torch.equal(kept.weight, conv.weight)
    assert ar.get_method("keep").num_params(conv, ()) == ar.count_params(conv)


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'foo'; expected one of \['cp', 'cp3'"):
        ar.get_method("foo")


def test_list_methods() -> None:
    assert ar.list_methods() == ["cp", "cp3", "keep", "prune", "spatial_svd", "svd", "tt", "tucker2"]
