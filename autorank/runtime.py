"""Where and how torch runs: the device, the number of CPU threads, the tensor layout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import UserError

__all__ = ["MEMORY_FORMATS", "configure_threads", "in_layout", "memory_layout", "num_threads",
           "resolve_device"]

# "auto": NHWC on CPU, where fine-tune steps were 1.02-1.72x and evaluation 1.12-1.84x faster
# at 2 threads (bench/results/train_speed.md), NCHW elsewhere (not measured)
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


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


def memory_layout(memory_format: str, dev: torch.device) -> torch.memory_format:
    """The tensor layout of ``memory_format`` (``FinetuneConfig.memory_format``) on ``dev``."""
    if memory_format not in MEMORY_FORMATS:
        raise UserError(f"unknown memory_format {memory_format!r}; expected one of {list(MEMORY_FORMATS)}")
    if memory_format == "channels_last" or (memory_format == "auto" and dev.type == "cpu"):
        return torch.channels_last
    return torch.contiguous_format


@contextmanager
def in_layout(model: nn.Module | None, layout: torch.memory_format) -> Iterator[None]:
    """``model``'s 4-d weights in ``layout`` inside, in the layout they had before after."""
    if model is None or layout == torch.contiguous_format:
        yield
        return
    # a 1x1 kernel is contiguous in both layouts: the first larger one tells which it is in
    was_nhwc = next((not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
                     for w in model.parameters() if w.dim() == 4 and w.shape[2] * w.shape[3] > 1),
                    False)
    model.to(memory_format=layout)
    try:
        yield
    finally:
        if not was_nhwc:
            model.to(memory_format=torch.contiguous_format)
