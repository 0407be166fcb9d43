"""Rank selection: EVBMF estimates, MUSCO weakening, energy and target-ratio ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..decompose import FactorCache, get_method
from ..decompose._base import fingerprint, weight_of
from ._vbmf import EVBMFResult, evbmf, evbmf_rank, singular_values

__all__ = [
    "EVBMFResult",
    "energy_rank",
    "evbmf",
    "evbmf_rank",
    "musco_weaken",
    "rank_from_ratio",
    "reference_rank",
    "seed_rank",
    "singular_values",
    "vbmf_rank_for",
]


def musco_weaken(full: Sequence[int], vbmf: Sequence[int], w: float, *,
                 scale: float = 1.0) -> tuple[int, ...]:
    """MUSCO's weakened rank ``R - w (R - r_vbmf)`` per entry, times ``scale``, rounded to the
    nearest integer and clipped to ``1..R``.

    Gusak et al., "Automated Multi-Stage Compression of Neural Networks", ICCVW 2019: ``w = 1``
    is the EVBMF rank itself, ``w = 0`` the full rank ``R``. This is the one rank rule of
    autorank: the search's plans (``scale`` is a layer's ``2 ** offset``), its MUSCO seed and
    ``autorank compress --strategy musco`` all go through it.
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"weakening factor w must be in [0, 1], got {w}")
    return tuple(max(1, min(r, round((r - w * (r - v)) * scale)))
                 for r, v in zip(full, vbmf, strict=True))


def reference_rank(method: str, layer: nn.Module, *, fused: bool = False) -> tuple[int, ...]:
    """MUSCO's ``R``: the rank at which ``method``'s factorization of ``layer`` costs as many
    params as the dense layer (never above the exact rank), since higher ranks cannot pay off.

    A layer of a later MUSCO stage (``fused``), whose outer factors merge into their
    neighbours, pays off at any rank below its exact one: there ``R`` is the exact rank.
    """
    top = get_method(method).max_rank(layer)
    if fused:
        return top
    same_cost = rank_from_ratio(method, layer, 1.0)
    return tuple(min(t, s) for t, s in zip(top, same_cost, strict=True))


def seed_rank(method: str, layer: nn.Module, *, fused: bool = False) -> tuple[int, ...]:
    """The EVBMF-seeded rank (:func:`vbmf_rank_for`) clipped to :func:`reference_rank`."""
    return tuple(min(v, r) for v, r in zip(vbmf_rank_for(method, layer),
                                            reference_rank(method, layer, fused=fused), strict=True))


def energy_rank(singular_values: np.ndarray | torch.Tensor, energy: float) -> int:
    """Smallest rank whose leading singular values keep ``energy`` of the squared sum."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sv2 = np.sort(np.asarray(singular_values, dtype=np.float64).ravel())[::-1] ** 2
    total = sv2.sum()
    if total <= 0:
        return 1
    return int(np.searchsorted(np.cumsum(sv2) / total, energy - 1e-12) + 1)


def _scaled(top: Sequence[int], fraction: float) -> tuple[int, ...]:
    return tuple(max(1, min(t, math.ceil(fraction * t))) for t in top)


def rank_from_ratio(method: str, layer: nn.Module, ratio: float) -> tuple[int, ...]:
    """The largest uniform rank (same fraction of every max rank) with params ratio >= ``ratio``.

    ``ratio`` is dense params / factorized params (e.g. 4 keeps a quarter). When even rank 1
    cannot reach it, rank 1 is returned.
    """
    if ratio <= 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    factorization = get_method(method)
    top = factorization.max_rank(layer)
    if not top:
        return ()
    budget = sum(p.numel() for p in layer.parameters()) / ratio
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisection on the fraction of the max rank
        mid = (lo + hi) / 2
        if factorization.num_params(layer, _scaled(top, mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return _scaled(top, lo)


# Seeds are asked for again and again (inventory, every method, cp's tucker2 reference, the
# search space): memoise each unfolding's EVBMF rank by the weight's content.
_SEED_CACHE = FactorCache(max_entries=4096)


def _unfolding_rank(layer: nn.Module, rows: Sequence[int]) -> int:
    """EVBMF rank (at least 1) of the kernel (T, S, kh, kw) unfolded with modes ``rows`` as rows."""

    def compute() -> int:
        w = weight_of(layer).detach().to("cpu", torch.float64)
        perm = list(rows) + [d for d in range(w.ndim) if d not in rows]
        mat = w.permute(perm).reshape(int(np.prod([w.shape[d] for d in rows])), -1)
        return max(1, evbmf_rank(mat))

    return int(_SEED_CACHE.get((fingerprint(weight_of(layer)), tuple(rows)), compute))


def vbmf_rank_for(method: str, layer: nn.Module) -> tuple[int, ...]:
    """The EVBMF-seeded rank of ``layer`` for ``method``, clipped to 1..max.

    Each rank entry is the EVBMF rank of the kernel unfolding named by the method's
    ``seed_unfoldings`` (svd: T x S·kh·kw; spatial_svd: S·kh x kw·T; tucker2: the in- and
    out-channel unfoldings of Kim et al. 2016; tt: the S, (S, kh) and T unfoldings, its TT-SVD
    bonds). CP has no such matrix: cp/cp3 get the rank with as many params as tucker2 at its
    EVBMF ranks.
    """
    factorization = get_method(method)
    top = factorization.max_rank(layer)
    if factorization.seed_unfoldings is None:
        dense = sum(p.numel() for p in layer.parameters())
        tucker_params = get_method("tucker2").num_params(layer, vbmf_rank_for("tucker2", layer))
        return rank_from_ratio(method, layer, dense / tucker_params)
    rank = tuple(_unfolding_rank(layer, rows) for rows in factorization.seed_unfoldings)
    return tuple(min(r, t) for r, t in zip(rank, top, strict=True))
