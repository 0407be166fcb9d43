"""``keep``: the layer unchanged (the search's way of saying "do not factorize")."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from ._base import Method, Rank
from ._registry import register_method


@register_method
class Keep(Method):
    """Leave the layer as it is. Rank tuple: ``()``."""

    name = "keep"
    rank_names = ()
    seed_unfoldings = ()

    def unsupported_reason(self, layer: nn.Module) -> str | None:
        return None

    def max_rank(self, layer: nn.Module) -> Rank:
        return ()

    def num_params(self, layer: nn.Module, rank: Sequence[int] = ()) -> int:
        return sum(p.numel() for p in layer.parameters())

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        return copy.deepcopy(layer)
