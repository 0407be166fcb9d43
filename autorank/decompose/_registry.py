"""The registry of decomposition methods: a dict and a decorator."""

from __future__ import annotations

from typing import TypeVar

from .._registry import Registry
from ._base import Method

_METHODS: Registry[Method] = Registry("method")

M = TypeVar("M", bound=type[Method])


def register_method(cls: M) -> M:
    """Class decorator: register one instance of ``cls`` under ``cls.name``; refuses duplicates."""
    _METHODS.add(cls.name, cls())
    return cls


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _METHODS.get(name)


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return _METHODS.names()
