"""The registry of decomposition methods: a dict and a decorator."""

from __future__ import annotations

from typing import TypeVar

from ._base import Method

_METHODS: dict[str, Method] = {}

M = TypeVar("M", bound=type[Method])


def register_method(cls: M) -> M:
    """Class decorator: register one instance of ``cls`` under ``cls.name``; refuses duplicates."""
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} is already registered")
    _METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(_METHODS)}") from None


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_METHODS)
