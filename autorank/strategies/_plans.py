"""Plans of the classic recipes, stage application with 1x1 fusing, and dense kernels of
factorized layers (the projections ADMM needs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .._inventory import eligible, inventory
from ..decompose import apply_plan, get_method, set_submodule
from ..decompose._base import ConvGeometry, conv_like, layer_bias, linear_like, weight_of
from ..rank import musco_weaken, reference_rank, seed_rank
from ..types import LayerChoice, LayerInfo, Plan
from ._common import CompressConfig, Stage

log = logging.getLogger(__name__)


def eligible_rows(model: nn.Module, config: CompressConfig,
                  input_shape: Sequence[int]) -> list[LayerInfo]:
    """Inventory rows of ``model`` a strategy may factorize (ends and ``exclude`` left out)."""
    return eligible(inventory(model, input_shape), exclude_first_conv=config.keep_ends,
                    exclude_classifier=config.keep_ends, exclude=config.exclude)


def recipe_method(row: LayerInfo) -> str | None:
    """Kim et al. 2016's choice: Tucker-2 for a k x k conv, SVD for a 1x1 conv or a linear."""
    for method in ("tucker2", "svd"):
        if method in row.max_rank:
            return method
    return None


def weakened_rank(method: str, layer: nn.Module, w: float, *, fused: bool) -> tuple[int, ...]:
    """MUSCO's rank ``R - w (R - r_vbmf)`` (Gusak et al. 2019), by the rule the search uses
    (:func:`autorank.rank.musco_weaken` over :func:`autorank.rank.reference_rank`)."""
    return musco_weaken(reference_rank(method, layer, fused=fused),
                        seed_rank(method, layer, fused=fused), w)


def pays_off(method: str, layer: nn.Module, rank: Sequence[int], *, fused: bool) -> bool:
    """A factorization worth making: fewer params, or (``fused``) a rank below the full one."""
    factorization = get_method(method)
    if fused:
        return any(r < t for r, t in zip(rank, factorization.max_rank(layer), strict=True))
    return factorization.num_params(layer, rank) < sum(p.numel() for p in layer.parameters())


def vbmf_plan(model: nn.Module, rows: Iterable[LayerInfo], *, w: float = 1.0,
              fused: bool = False) -> Plan:
    """Tucker-2 / SVD at EVBMF ranks (``w = 1``, Kim et al. 2016) or MUSCO-weakened ones.

    Layers whose factorization would not pay off are left out, with a logged reason.
    """
    plan: Plan = {}
    for row in rows:
        method = recipe_method(row)
        if method is None:
            continue
        layer = model.get_submodule(row.name)
        rank = (row.vbmf_ranks[method] if w == 1.0 and not fused
                else weakened_rank(method, layer, w, fused=fused))
        if pays_off(method, layer, rank, fused=fused):
            plan[row.name] = LayerChoice(method, rank)
        else:
            log.info("%s kept: %s at rank %s would not pay off", row.name, method, rank)
    return plan


def _is_pointwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros")


def _fusable(a: nn.Module, b: nn.Module) -> bool:
    if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
        return True
    return (_is_pointwise(a) and isinstance(b, nn.Conv2d) and _is_pointwise(b)
            and tuple(b.stride) == (1, 1) and b.padding in ((0, 0), "valid"))


def _fuse_pair(a: nn.Module, b: nn.Module) -> nn.Module:
    """One layer computing ``b(a(x))``; exact for linears and 1x1 convs (zero padding of
    ``a`` gives its bias at the border, which the fused bias reproduces)."""
    with torch.no_grad():
        wa, wb = weight_of(a).flatten(1), weight_of(b).flatten(1)
        weight = wb @ wa
        bias_a, bias_b = layer_bias(a), layer_bias(b)
        bias = None if bias_a is None else wb @ bias_a
        if bias_b is not None:
            bias = bias_b if bias is None else bias + bias_b
    if isinstance(a, nn.Linear):
        return linear_like(a, weight, bias)
    return conv_like(a, weight.shape[1], weight.shape[0], (1, 1), weight, bias=bias,
                     window=ConvGeometry.of(a).window("hw"))


def merge_into_neighbours(seq: nn.Sequential, index: int) -> nn.Sequential:
    """Flatten the factorized child ``seq[index]`` into ``seq``, multiplying its first and last
    factors into the 1x1 conv / linear neighbours they touch (MUSCO's later stages)."""
    children = list(seq)
    child = children[index]
    inner = list(child) if isinstance(child, nn.Sequential) else [child]
    left, right = children[:index], children[index + 1:]
    if left and len(inner) > 1 and _fusable(left[-1], inner[0]):
        left[-1] = _fuse_pair(left[-1], inner.pop(0))
    if right and len(inner) > 1 and _fusable(inner[-1], right[0]):
        right[0] = _fuse_pair(inner.pop(), right[0])
    return nn.Sequential(*left, *inner, *right)


def apply_stage(model: nn.Module, stage: Stage) -> nn.Module:
    """A copy of ``model`` with ``stage`` applied (see :class:`Stage`)."""
    out = apply_plan(model, stage.plan)
    if stage.fuse:
        for name in stage.plan:
            parent_name, _, index = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            if isinstance(parent, nn.Sequential) and index.isdigit():
                set_submodule(out, parent_name, merge_into_neighbours(parent, int(index)))
    return out


def rebuild(model: nn.Module, stages: Iterable[Stage]) -> nn.Module:
    """Apply ``stages`` in order to (a copy of) ``model``: the architecture a strategy made."""
    for stage in stages:
        model = apply_stage(model, stage)
    return model


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The single kernel (T, S, kh, kw) or matrix (out, in) a chain of factors computes (no bias).

    ``module`` is a conv/linear or an ``nn.Sequential`` of them, as the decompositions build
    (no grouped factors): channel mixing multiplies, spatial kernels convolve (full size).
    """
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    is_linear = isinstance(layers[0], nn.Linear)
    kernel: torch.Tensor | None = None
    for layer in layers:
        w = weight_of(layer).detach()
        w = w[:, :, None, None] if w.ndim == 2 else w
        if kernel is None:
            kernel = w
            continue
        t, s = w.shape[0], kernel.shape[1]
        out = w.new_zeros(t, s, kernel.shape[2] + w.shape[2] - 1, kernel.shape[3] + w.shape[3] - 1)
        for a in range(w.shape[2]):
            for b in range(w.shape[3]):
                out[:, :, a:a + kernel.shape[2], b:b + kernel.shape[3]] += torch.einsum(
                    "tc,csij->tsij", w[:, :, a, b], kernel)
        kernel = out
    assert kernel is not None
    return kernel[:, :, 0, 0] if is_linear else kernel
