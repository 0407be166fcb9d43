"""The environment variables autorank reads, each in one place.

- ``AUTORANK_DATA_DIR``: where data sets live when no ``--data-dir`` is given.
- ``AUTORANK_WEIGHTS_DIR``: where a checkpoint given by file name is looked up.
- ``AUTORANK_CACHE_DIR``: where trained baselines and latency tables are cached (default
  ``~/.cache/autorank``).
- ``AUTORANK_INJECT_FAULT``: faults tests inject through the real code paths, as
  comma-separated ``kind:where`` pairs: ``raise:3`` (trial 3 raises; also ``nan``, ``oom``,
  ``kill``) or ``driver:baseline`` (the driver is SIGKILLed at that point). Unset in normal use.
"""

from __future__ import annotations

import os

DATA_DIR = "AUTORANK_DATA_DIR"
WEIGHTS_DIR = "AUTORANK_WEIGHTS_DIR"
CACHE_DIR = "AUTORANK_CACHE_DIR"
INJECT_FAULT = "AUTORANK_INJECT_FAULT"


def data_dir() -> str | None:
    """``$AUTORANK_DATA_DIR``, or None when unset or empty."""
    return os.environ.get(DATA_DIR) or None


def weights_dir() -> str | None:
    """``$AUTORANK_WEIGHTS_DIR``, or None when unset or empty."""
    return os.environ.get(WEIGHTS_DIR) or None


def cache_dir() -> str | None:
    """``$AUTORANK_CACHE_DIR``, or None when unset or empty."""
    return os.environ.get(CACHE_DIR) or None


def injected_faults() -> list[tuple[str, str]]:
    """The ``(kind, where)`` pairs of ``$AUTORANK_INJECT_FAULT``."""
    pairs = []
    for item in filter(None, os.environ.get(INJECT_FAULT, "").split(",")):
        kind, _, where = item.partition(":")
        pairs.append((kind.strip(), where.strip()))
    return pairs


def resolve_checkpoint(value: str | None) -> str | None:
    """A checkpoint path as given, or looked up by file name in ``$AUTORANK_WEIGHTS_DIR``.

    Raises:
        UserError: neither exists.
    """
    from .errors import UserError

    if value is None or os.path.exists(value):
        return value
    folder = weights_dir()
    if folder and os.path.exists(os.path.join(folder, value)):
        return os.path.join(folder, value)
    raise UserError(f"checkpoint {value!r} not found (a file path, or a file name in "
                    f"$AUTORANK_WEIGHTS_DIR={folder or '<unset>'})")
