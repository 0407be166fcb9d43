"""CIFAR ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", Sec. 4.2.

Option-A (parameter-free, zero-padded) shortcuts; module names and shapes follow
akamaster/pytorch_resnet_cifar10 so its checkpoints load after stripping ``module.``.
The ``resnet20`` / ``resnet56`` checkpoints were trained on ImageNet-normalised inputs,
hence the ImageNet mean/std in their specs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autorank.errors import UserError
from autorank.models._registry import IMAGENET_MEAN, IMAGENET_STD, register_model


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, plus an identity or option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _PadShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: widths 16/32/64, ``n`` blocks per stage.

    Args:
        depth: 20, 32, 44, 56, 110, ... (``depth = 6 n + 2``).
        num_classes: classifier outputs.
    """

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            # akamaster initialises convs and the classifier with Kaiming normal.
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, *, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _builder(depth: int) -> None:
    @register_model(
        f"resnet{depth}", family="cifar_resnet", mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    def build(*, num_classes: int, input_size: int, weights: str | None) -> nn.Module:
        del input_size  # global average pooling: any input size works
        if weights is not None:
            raise UserError(
                f"resnet{depth} has no torchvision weights; pass checkpoint=FILE instead"
            )
        return CifarResNet(depth, num_classes)


for _depth in (20, 32, 44, 56, 110):
    _builder(_depth)
