"""Checkpoint reading and checked state-dict loading. A checkpoint is data, never code."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autorank.errors import UserError

# Prefixes added by wrappers around a model: DataParallel / DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN_KEYS = 5


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file without executing any code.

    Loads with ``torch.load(..., weights_only=True)``; accepts ``{"state_dict": ...}``,
    ``{"model": ...}`` or a bare state dict, and strips ``module.`` / ``_orig_mod.`` prefixes.

    Args:
        path: the checkpoint file.

    Returns:
        A dict of parameter and buffer name to tensor.

    Raises:
        UserError: the file is missing, is not a plain tensor checkpoint (e.g. a pickled
            ``nn.Module``), holds no state dict, or holds NaN or infinite weights.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"checkpoint {str(file)!r} does not exist")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"checkpoint {str(file)!r} is not a plain tensor checkpoint (weights_only load "
            f"refused it: {first}); save model.state_dict(), not the model object"
        ) from e
    except Exception as e:  # arbitrary bytes fail in pickle's dispatch with any error type
        raise UserError(
            f"checkpoint {str(file)!r} is not a PyTorch checkpoint ({type(e).__name__} while "
            "reading it); give a file written by torch.save(model.state_dict(), PATH)"
        ) from e
    state = _unwrap(obj)
    if state is None:
        raise UserError(
            f"checkpoint {str(file)!r} holds no state dict; expected a dict of tensors, "
            "optionally under 'state_dict' or 'model'"
        )
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"checkpoint {str(file)!r} holds NaN or infinite values in {len(bad)} "
                        f"tensor(s), first {_strip_prefix(bad[0])!r}: it cannot be compressed; "
                        "give the checkpoint of a model that trained without diverging")
    return {_strip_prefix(k): v for k, v in state.items()}


def _unwrap(obj: object) -> Mapping[str, torch.Tensor] | None:
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj = inner
            break
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    return None


def _strip_prefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _show(keys: list[str]) -> str:
    head = ", ".join(keys[:_SHOWN_KEYS])
    return f"{len(keys)} ({head}{', ...' if len(keys) > _SHOWN_KEYS else ''})"


@dataclass(frozen=True)
class Misfit:
    """How a state dict differs from a model's: keys missing or unexpected, tensors whose shape
    differs (``(key, theirs, ours)``, in the model's order). Empty (false) when it fits."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        """The differences in words: ``missing keys 2 (a, b); shape mismatches 1 (...)``."""
        parts = []
        if self.missing:
            parts.append(f"missing keys {_show(list(self.missing))}")
        if self.unexpected:
            parts.append(f"unexpected keys {_show(list(self.unexpected))}")
        if self.shapes:
            parts.append(f"shape mismatches {_show([f'{k} {a} vs {b}' for k, a, b in self.shapes])}")
        return "; ".join(parts)


def misfit(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
           any_rows: Collection[str] = ()) -> Misfit:
    """How ``state_dict`` differs from ``model``'s own (``num_batches_tracked`` may be missing).

    Args:
        model: the module.
        state_dict: names (wrapper prefixes stripped or not) to tensors.
        any_rows: keys whose first dimension may differ (a classifier's outputs).
    """
    state = {_strip_prefix(k): v for k, v in state_dict.items()}
    own = model.state_dict()

    def fits(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> bool:
        if key in any_rows:
            return theirs.dim() == ours.dim() and theirs.shape[1:] == ours.shape[1:]
        return theirs.shape == ours.shape

    return Misfit(
        tuple(k for k in own if k not in state and not k.endswith("num_batches_tracked")),
        tuple(k for k in state if k not in own),
        tuple((k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and not fits(k, state[k], v)))


def load_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict"
) -> nn.Module:
    """Load a state dict into ``model``, refusing any mismatch with a readable message.

    Missing ``num_batches_tracked`` buffers are tolerated (older checkpoints lack them).

    Args:
        model: the module to fill in place.
        state_dict: names to tensors, wrapper prefixes already stripped or not.
        source: how to name the weights' origin in error messages (e.g. the file path).

    Returns:
        ``model``.

    Raises:
        UserError: keys missing, unexpected, or with a different shape.
    """
    differs = misfit(model, state_dict)
    if differs:
        raise UserError(f"{source} does not fit {type(model).__name__}: {differs.describe()}; "
                        "check the model name and num_classes")
    model.load_state_dict({_strip_prefix(k): v for k, v in state_dict.items()}, strict=False)
    return model
