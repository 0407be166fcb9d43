"""Strategy registry: a dict and a decorator that refuses duplicates (as ``decompose``'s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._common import Compressed, StrategyContext

Strategy = Callable[["StrategyContext"], "Compressed"]

_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register ``fn(ctx) -> Compressed`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def wrap(fn: Strategy) -> Strategy:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        _STRATEGIES[name] = fn
        return fn

    return wrap


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(_STRATEGIES)}") from None


def list_strategies() -> list[str]:
    """Names of all registered strategies, sorted."""
    return sorted(_STRATEGIES)
