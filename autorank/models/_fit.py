"""Whether a checkpoint fits a registered model at an input size: its classifier (a new head
when the classes differ, see :mod:`autorank.baseline`), its stem, everything else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autorank.errors import UserError
from autorank.models._checkpoint import _strip_prefix, misfit
from autorank.models._registry import get_model
from autorank.models.torchvision_models import SMALL_INPUT_MAX

IMAGENET_SIZE = 224  # the side ImageNet checkpoints were trained at
SMALL_SIZE = 32  # a side of the small-input stems (CIFAR)


def classifier_name(model: nn.Module) -> str:
    """The dotted name of ``model``'s classifier: its last ``nn.Linear``.

    Raises:
        UserError: the model has no Linear layer.
    """
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no Linear classifier to fit to the classes")
    return names[-1]


@dataclass(frozen=True)
class CheckpointFit:
    """A checkpoint that fits a model but perhaps for its classifier's number of outputs.

    Args:
        head: the classifier's dotted name (``fc``, ``classifier.6``).
        classes: the checkpoint's classifier outputs.
    """

    head: str
    classes: int


def check_checkpoint(name: str, state: Mapping[str, torch.Tensor], *, input_size: int,
                     source: str = "the state dict") -> CheckpointFit:
    """Check that ``state`` fits model ``name`` built for ``input_size``, the number of
    classes aside (a classifier for other classes gets replaced, not refused).

    A torchvision model takes a small-input stem at ``input_size <= 64`` and keeps its ImageNet
    one above (:mod:`autorank.models.torchvision_models`): a checkpoint of the other form is
    named as such, with the input size that fits it.

    Args:
        name: a registered model name.
        state: the checkpoint's tensors.
        input_size: the image side the model is built for.
        source: how to name the checkpoint in messages (e.g. ``"checkpoint 'r18.pt'"``).

    Returns:
        The classifier's name and the checkpoint's number of classes.

    Raises:
        UserError: the stem is of the other input-size form, or any other difference.
    """
    state = {_strip_prefix(k): v for k, v in state.items()}
    model = get_model(name, num_classes=2, input_size=input_size)
    head = classifier_name(model)
    rows = {f"{head}.weight", f"{head}.bias"}
    differs = misfit(model, state, any_rows=rows)
    if differs:
        hint = _other_form(name, state, input_size, differs.shapes, source)
        raise UserError(hint or f"{source} does not fit {name} at --input-size {input_size}: "
                        f"{differs.describe()}; check the model name")
    return CheckpointFit(head, int(state[f"{head}.weight"].shape[0]))


def _other_form(name: str, state: Mapping[str, torch.Tensor], input_size: int,
                shapes: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...],
                source: str) -> str | None:
    """The message for a checkpoint that fits ``name`` at the other stem's input sizes."""
    large = input_size > SMALL_INPUT_MAX
    other = SMALL_SIZE if large else IMAGENET_SIZE
    model = get_model(name, num_classes=2, input_size=other)
    head = classifier_name(model)
    if not shapes or misfit(model, state, any_rows={f"{head}.weight", f"{head}.bias"}):
        return None
    key, theirs, ours = shapes[0]  # the first layer that differs: the stem, or VGG's classifier
    layer = key.rpartition(".")[0] or key
    part = "stem" if len(theirs) == 4 else "layout"
    form = "small-input" if large else "ImageNet"
    sizes = f"up to {SMALL_INPUT_MAX}" if large else f"above {SMALL_INPUT_MAX}"
    return (f"{source} has {name}'s {form} {part} ({layer} is {_kernel(theirs)}, not "
            f"{_kernel(ours)} as at --input-size {input_size}): pass --input-size {other} (or "
            f"any size {sizes}; the images are resized to it)")


def _kernel(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[3]}" if len(shape) == 4 else str(shape)
