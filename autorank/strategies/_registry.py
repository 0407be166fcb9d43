"""The strategy registry (a :class:`autorank._registry.Registry`): per name, the strategy's run
and, for those that can, the final training of a plan chosen elsewhere (a search's pick)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._registry import Registry
from ..decompose import validate_plan
from ..types import Plan

if TYPE_CHECKING:
    from ._common import Compressed, StrategyContext

Strategy = Callable[["StrategyContext"], "Compressed"]
PlanTrainer = Callable[["StrategyContext", Plan], "Compressed"]


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: ``run(ctx)`` chooses its ranks and trains; ``train_plan(ctx,
    plan)``, where set, trains a given plan by the same recipe."""

    run: Strategy
    train_plan: PlanTrainer | None = None


_STRATEGIES: Registry[StrategyEntry] = Registry("strategy")


def register_strategy(name: str, *,
                      train_plan: PlanTrainer | None = None) -> Callable[[Strategy], Strategy]:
    """Register ``fn(ctx) -> Compressed`` under ``name``, with ``train_plan(ctx, plan)`` when
    the strategy can train a plan it did not choose.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def wrap(fn: Strategy) -> Strategy:
        _STRATEGIES.add(name, StrategyEntry(fn, train_plan))
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _STRATEGIES.get(name).run


def list_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return _STRATEGIES.names()


def plan_strategies() -> list[str]:
    """The strategies that can train a given plan (``musco`` chooses its own ranks)."""
    return [name for name in _STRATEGIES.names() if _STRATEGIES.get(name).train_plan is not None]


def train_plan(strategy: str, ctx: StrategyContext, plan: Plan) -> Compressed:
    """Factorize ``ctx.baseline`` by ``plan`` and train it with ``strategy``'s recipe:
    ``vbmf-tucker2`` factorizes at once and fine-tunes (Kim et al. 2016), ``admm`` trains the
    dense model towards the plan's ranks first (Yin et al. 2021).

    Raises:
        ValueError: a strategy that cannot train a given plan, or a plan that does not fit.
    """
    trainer = _STRATEGIES.get(strategy).train_plan if strategy in _STRATEGIES else None
    if trainer is None:
        raise ValueError(f"strategy {strategy!r} cannot train a given plan; expected one of "
                         f"{plan_strategies()}")
    validate_plan(ctx.baseline, plan)
    return trainer(ctx, plan)
