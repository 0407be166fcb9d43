"""Errors a user can cause and fix; the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message says what is wrong and what is allowed."""
