"""Low-rank decompositions of conv and linear layers, and applying a plan to a model.

Methods (rank tuple order in brackets): ``keep`` (), ``svd`` (r), ``spatial_svd`` (r),
``tucker2`` (r_in, r_out), ``cp`` (R), ``cp3`` (R), ``tt`` (r1, r2, r3).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from torch import nn

from ..types import LayerChoice
from . import cp, keep, spatial_svd, svd, tt, tucker2  # noqa: F401  (registers the methods)
from ._base import ConvGeometry, FactorCache, Method, Rank
from ._registry import get_method, list_methods, register_method
from .cp import DegenerateDecompositionError

__all__ = [
    "ConvGeometry",
    "DegenerateDecompositionError",
    "FactorCache",
    "Method",
    "Rank",
    "apply_plan",
    "get_method",
    "list_methods",
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
    """
    for name, choice in plan.items():
        layer = _layer(model, name)
        try:
            get_method(choice.method).check_rank(layer, choice.rank)
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None


def apply_plan(model: nn.Module, plan: Mapping[str, LayerChoice]) -> nn.Module:
    """A copy of ``model`` with each layer named in ``plan`` replaced by its factorization.

    ``model`` is left untouched. Layers not named are kept. Factors are cached per method by
    the layer's weight content, so plans over the same baseline reuse them.

    Raises:
        ValueError: see :func:`validate_plan`; also a decomposition that fails (e.g. a degenerate
            CP), with the layer's name.
    """
    validate_plan(model, plan)
    out = copy.deepcopy(model)
    for name, choice in plan.items():
        if choice.method == "keep":
            continue
        try:
            new = get_method(choice.method).factorize(model.get_submodule(name), choice.rank)
        except ValueError as err:
            raise type(err)(f"layer {name!r}: {err}") from err
        set_submodule(out, name, new)
    return out
