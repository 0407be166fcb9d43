"""Low-rank decompositions and channel pruning of conv and linear layers, and applying a plan
to a model.

Methods (rank tuple order in brackets): ``keep`` (), ``svd`` (r), ``spatial_svd`` (r),
``tucker2`` (r_in, r_out), ``cp`` (R), ``cp3`` (R), ``tt`` (r1, r2, r3), ``prune`` (k).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from torch import nn

from ..types import LayerChoice
from . import cp, keep, prune, spatial_svd, svd, tt, tucker2  # noqa: F401  (registers them)
from ._base import ConvGeometry, FactorCache, Method, Rank
from ._registry import get_method, list_methods, register_method
from .cp import DegenerateDecompositionError
from .prune import CoupledGroup, channel_consumers, coupled_groups, prunable_layers, prune_layers

__all__ = [
    "ConvGeometry",
    "CoupledGroup",
    "DegenerateDecompositionError",
    "FactorCache",
    "Method",
    "Rank",
    "apply_plan",
    "channel_consumers",
    "coupled_groups",
    "get_method",
    "list_methods",
    "prunable_layers",
    "prune_layers",
    "register_method",
    "set_submodule",
    "validate_plan",
]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"layer {name!r} does not exist in {type(model).__name__}") from None


def validate_plan(model: nn.Module, plan: Mapping[str, LayerChoice]) -> None:
    """Check every entry of ``plan`` against ``model`` without building anything.

    Raises:
        ValueError: an unknown layer, an unknown method, a layer the method does not support, or
            a rank outside 1..max; the message names the layer, the value and what is allowed.

    A factorization of a pruned layer (``choice.prune``) is checked against the layer's
    pruned shape when the plan is applied.
    """
    for name, choice in plan.items():
        layer = _layer(model, name)
        try:
            if choice.kept_channels is not None:
                get_method("prune").check_rank(layer, (choice.kept_channels,))
            if choice.prune is None or choice.method == "prune":
                get_method(choice.method).check_rank(layer, choice.rank)
            else:
                get_method(choice.method)
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None


def apply_plan(model: nn.Module, plan: Mapping[str, LayerChoice], *,
               input_shape: tuple[int, ...] = (1, 3, 32, 32),
               importance: str = "l1", structure_only: bool = False) -> nn.Module:
    """A copy of ``model`` with every layer named in ``plan`` compressed.

    The order of operations: first every pruned layer (``prune``, or a factorization with
    ``prune`` set) loses its least important output channels (``importance``: ``l1`` or ``l2``
    filter norm, or ``group`` norm: see :mod:`autorank.decompose.prune`), and every layer
    coupled to them shrinks with it (Torch-Pruning's dependency graph, traced at ``input_shape``):
    the coupled groups (:func:`coupled_groups`: layers whose outputs a residual sum ties, all
    pruned to one count) once each, then the layers pruned alone. Then each factorized layer,
    as pruned, is replaced by its factorization. ``model`` is left
    untouched; layers not named are kept. Factors are cached per method by the layer's weight
    content, so plans over the same baseline reuse them. ``structure_only``: the factors' weights
    are arbitrary (:meth:`Method.skeleton`: no CP-ALS or TT to run), a model to time, not to use.

    Raises:
        ValueError: see :func:`validate_plan`; also a layer whose channels cannot be pruned alone,
            a coupled group pruned in part or to different counts (the group named), or a
            decomposition that fails (e.g. a degenerate CP), with the layer's name.
    """
    validate_plan(model, plan)
    out = copy.deepcopy(model)
    kept = {n: k for n, c in plan.items() if (k := c.kept_channels) is not None}
    if kept:
        prune_layers(out, kept, input_shape, importance=importance)
    for name, choice in plan.items():
        if choice.method in ("keep", "prune"):
            continue
        layer = out.get_submodule(name)  # as pruned, where pruning reached it
        try:
            method = get_method(choice.method)
            build = method.skeleton if structure_only else method.factorize
            new = build(layer, choice.rank)
        except ValueError as err:
            raise type(err)(f"layer {name!r}: {err}") from err
        set_submodule(out, name, new)
    return out
