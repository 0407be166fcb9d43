"""The final training of a plan chosen elsewhere (e.g. a search's Pareto model) by a strategy's
recipe: ``vbmf-tucker2`` factorizes at once and fine-tunes (Kim et al. 2016), ``admm`` trains
the dense model towards the plan's ranks first (Yin et al. 2021).
"""

from __future__ import annotations

from collections.abc import Callable

from ..decompose import validate_plan
from ..types import Plan
from . import admm, vbmf_tucker2
from ._common import Compressed, StrategyContext

_PLAN_TRAINERS: dict[str, Callable[[StrategyContext, Plan], Compressed]] = {
    "vbmf-tucker2": vbmf_tucker2.train_plan,
    "admm": admm.train_plan,
}


def plan_strategies() -> list[str]:
    """The strategies that can train a given plan (``musco`` chooses its own ranks)."""
    return sorted(_PLAN_TRAINERS)


def train_plan(strategy: str, ctx: StrategyContext, plan: Plan) -> Compressed:
    """Factorize ``ctx.baseline`` by ``plan`` and train it with ``strategy``'s recipe.

    Raises:
        ValueError: a strategy that cannot train a given plan, or a plan that does not fit.
    """
    if strategy not in _PLAN_TRAINERS:
        raise ValueError(f"strategy {strategy!r} cannot train a given plan; expected one of "
                         f"{plan_strategies()}")
    validate_plan(ctx.baseline, plan)
    return _PLAN_TRAINERS[strategy](ctx, plan)
