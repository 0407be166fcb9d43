"""Model registry: a dict, a decorator that refuses duplicates, ``get_model`` and ``list_models``.

Modelled on torchvision's ``torchvision/models/_api.py``. Models never normalise their input:
the :class:`ModelSpec` carries the mean/std the data pipeline must apply, which keeps layer
dotted names identical to the checkpoints' (``layer1.0.conv1``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autorank._registry import Registry
from autorank.errors import UserError
from autorank.models._checkpoint import load_checkpoint, load_weights

Builder = Callable[..., nn.Module]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model expects of its input.

    Args:
        name: the registry name.
        family: a coarse family (``cifar_resnet``, ``torchvision``, ``tiny``).
        mean: per-channel mean the data pipeline subtracts (images scaled to [0, 1] first).
        std: per-channel std the data pipeline divides by.
        input_size: the image side the model is meant for by default.
    """

    name: str
    family: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int = 32


_MODELS: Registry[tuple[Builder, ModelSpec]] = Registry("model", missing=UserError)


def register_model(
    name: str,
    *,
    family: str,
    mean: tuple[float, float, float] = CIFAR10_MEAN,
    std: tuple[float, float, float] = CIFAR10_STD,
    input_size: int = 32,
) -> Callable[[Builder], Builder]:
    """Register a model builder under ``name``.

    The builder is called as ``builder(num_classes=, input_size=, weights=, **kwargs)``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(builder: Builder) -> Builder:
        _MODELS.add(name, (builder, ModelSpec(name, family, mean, std, input_size)))
        return builder

    return decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return _MODELS.names()


def _lookup(name: str) -> tuple[Builder, ModelSpec]:
    return _MODELS.get(name)


def get_model_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` of a registered model.

    Raises:
        UserError: ``name`` is not registered.
    """
    return _lookup(name)[1]


def get_model(
    name: str,
    *,
    num_classes: int = 10,
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    weights: str | None = None,
    input_size: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading a checkpoint into it.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output.
        checkpoint: a checkpoint file (see :func:`load_checkpoint`) or a state dict.
        weights: a torchvision weight name (torchvision models only; see their builders).
        input_size: image side; torchvision models adapt their stem when it is <= 64.
        **kwargs: builder-specific options (e.g. ``width`` for ``tiny_cnn``).

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        UserError: unknown name, bad option, unreadable checkpoint or one that does not fit.
    """
    builder, _ = _lookup(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    model = builder(num_classes=num_classes, input_size=input_size, weights=weights, **kwargs)
    if checkpoint is not None:
        state = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
        source = "state dict" if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
        load_weights(model, state, source=source)
    return model.eval()


def check_input_shape(model: nn.Module, input_shape: tuple[int, ...], *, name: str = "the model") -> None:
    """Refuse images ``model`` cannot take, before any time is spent training or searching.

    Args:
        model: the model (its mode is restored).
        input_shape: one image, ``(channels, height, width)``.
        name: what to call the model in the message.

    Raises:
        UserError: the forward pass of one such image fails (e.g. pooled below 1x1).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{name} cannot take {'x'.join(map(str, input_shape))} images ({first}); "
                        "use larger images or another model") from err
    finally:
        model.train(was_training)
