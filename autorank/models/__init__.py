"""Model registry: CIFAR ResNets (akamaster-compatible), torchvision models, tiny test nets.

Models take normalised tensors; :func:`get_model_spec` gives the mean/std to normalise with.
"""

from __future__ import annotations

from autorank.models import cifar_resnet, tiny, torchvision_models  # noqa: F401  (registration)
from autorank.models._checkpoint import Misfit, load_checkpoint, load_weights, misfit
from autorank.models._fit import CheckpointFit, check_checkpoint, classifier_name
from autorank.models._registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    check_input_shape,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CheckpointFit",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Misfit",
    "ModelSpec",
    "check_checkpoint",
    "check_input_shape",
    "classifier_name",
    "get_model",
    "get_model_spec",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "misfit",
    "register_model",
]
