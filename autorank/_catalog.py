"""The registered models' names and families, readable without importing torch.

``autorank models`` and ``autorank --help`` answer from this table in well under a second; the
registry itself (:mod:`autorank.models`) imports torch and torchvision. A test keeps the two equal.
"""

from __future__ import annotations

MODELS: dict[str, str] = {
    "alexnet": "torchvision",
    "densenet121": "torchvision",
    "densenet161": "torchvision",
    "mobilenet_v2": "torchvision",
    "resnet110": "cifar_resnet",
    "resnet18": "torchvision",
    "resnet20": "cifar_resnet",
    "resnet32": "cifar_resnet",
    "resnet34": "torchvision",
    "resnet44": "cifar_resnet",
    "resnet50": "torchvision",
    "resnet56": "cifar_resnet",
    "shufflenet_v2_x1_0": "torchvision",
    "tiny_cnn": "tiny",
    "vgg11_bn": "torchvision",
    "vgg16": "torchvision",
    "vgg16_bn": "torchvision",
}
