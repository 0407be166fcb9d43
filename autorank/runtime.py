"""Where and how torch runs: the device, and the number of CPU threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import UserError

__all__ = ["configure_threads", "num_threads", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"`` into ``cuda`` when available, else ``cpu``; check any other name.

    Raises:
        UserError: an unknown device string, or CUDA asked for but unavailable.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(
            f"unknown device {device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available; use 'cpu'")
    return dev


def configure_threads(n: int | None) -> int:
    """Set the number of CPU threads torch uses for intra-op work.

    Args:
        n: threads to use, or ``None`` to leave the setting alone.

    Returns:
        The number of threads now in effect.

    Raises:
        UserError: ``n < 1``.
    """
    if n is not None:
        if n < 1:
            raise UserError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the old value after."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
