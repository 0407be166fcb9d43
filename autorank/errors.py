"""autorank's exceptions: one base class, and the one a user can cause and fix.

The CLI prints a :class:`UserError` (and any ``ValueError``) as one line and exits with status 2.
"""

from __future__ import annotations

__all__ = ["AutorankError", "DegenerateDecompositionError", "NonFiniteLossError", "UserError"]


class AutorankError(Exception):
    """Base class of every exception autorank raises on purpose."""


class UserError(AutorankError, ValueError):
    """Bad input: the message says what is wrong and what is allowed."""


class NonFiniteLossError(AutorankError, RuntimeError):
    """The training loss became NaN or infinite (learning rate too high, or a broken model)."""


class DegenerateDecompositionError(AutorankError, ValueError):
    """A CP decomposition that must not be used: NaN, diverging factors or a useless fit."""
