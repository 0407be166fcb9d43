"""The one registry shape every extension point uses (methods, models, data sets, strategies):
a name -> value table that refuses duplicates and names the known entries on a miss."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Values of one ``kind`` by name.

    Args:
        kind: what the entries are, for messages ("method", "data set", ...).
        missing: the exception an unknown name raises (``ValueError``, or ``UserError`` where
            the name comes straight from the command line).
    """

    def __init__(self, kind: str, missing: type[Exception] = ValueError) -> None:
        self.kind = kind
        self.missing = missing
        self._entries: dict[str, T] = {}

    def add(self, name: str, value: T) -> None:
        """Register ``value`` under ``name``.

        Raises:
            ValueError: ``name`` is already registered.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value

    def get(self, name: str, shown: str | None = None) -> T:
        """The value registered as ``name``; ``shown`` is how the message quotes it (default
        ``name``).

        Raises:
            ``missing``: unknown name (the message lists the known ones).
        """
        try:
            return self._entries[name]
        except KeyError:
            raise self.missing(f"unknown {self.kind} {shown or name!r}; expected one of "
                               f"{self.names()}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
