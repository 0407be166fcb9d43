"""A tiny CNN for fast tests and demos (about 15k parameters at the default width)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autorank.errors import UserError
from autorank.models._registry import register_model


class TinyCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU layers (widths w, 2w, 2w; strides 1, 2, 2), global pool, Linear.

    Args:
        num_classes: classifier outputs.
        width: channels of the first conv.
    """

    def __init__(self, num_classes: int = 10, *, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model("tiny_cnn", family="tiny")
def build_tiny_cnn(
    *, num_classes: int, input_size: int, weights: str | None, width: int = 16
) -> nn.Module:
    """Build :class:`TinyCNN`; any input size works (global average pooling).

    Raises:
        UserError: ``weights`` given (there are none) or ``width < 1``.
    """
    del input_size
    if weights is not None:
        raise UserError("tiny_cnn has no pretrained weights; pass checkpoint=FILE instead")
    if width < 1:
        raise UserError(f"tiny_cnn width must be >= 1, got {width}")
    return TinyCNN(num_classes, width=width)
