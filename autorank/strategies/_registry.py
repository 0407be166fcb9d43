"""Strategy registry: a :class:`autorank._registry.Registry` and a decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._registry import Registry

if TYPE_CHECKING:
    from ._common import Compressed, StrategyContext

Strategy = Callable[["StrategyContext"], "Compressed"]

_STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register ``fn(ctx) -> Compressed`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def wrap(fn: Strategy) -> Strategy:
        _STRATEGIES.add(name, fn)
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _STRATEGIES.get(name)


def list_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return _STRATEGIES.names()
