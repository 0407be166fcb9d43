"""torchvision classification models by their torchvision name, adapted to small images.

When ``input_size <= 64`` (CIFAR-sized inputs) each family gets the usual small-input stem, so
that a 32x32 image is not reduced to 1x1 before the last stage:

- ResNet (He et al. 2016): ``conv1`` becomes a 3x3 stride-1 conv, ``maxpool`` an identity.
- VGG (Simonyan & Zisserman 2015): the 5 max-pools already give 1x1 at 32x32; ``avgpool``
  becomes a 1x1 adaptive pool and the classifier ``Linear(512, 512) - ReLU - Dropout -
  Linear(512, num_classes)`` instead of three 4096-wide layers on a 7x7 map.
- AlexNet (Krizhevsky et al. 2012): ``features.0`` becomes a 3x3 stride-1 conv (the 11x11
  stride-4 stem would leave 1 pixel), ``avgpool`` a 2x2 adaptive pool and the classifier
  ``Dropout - Linear(1024, 1024) - ReLU - Dropout - Linear(1024, 1024) - ReLU - Linear``.
- DenseNet (Huang et al. 2017): ``features.conv0`` becomes a 3x3 stride-1 conv,
  ``features.pool0`` an identity.
- MobileNetV2 (Sandler et al. 2018): stride 1 in the stem conv and in the 24-channel stage
  (total stride 8 instead of 32), as in the common CIFAR ports.
- ShuffleNetV2 (Ma et al. 2018): ``conv1`` stride 1 and ``maxpool`` an identity.

Pretrained ``weights`` (ImageNet) fit only the unadapted architecture: they need
``input_size > 64``; the classifier is replaced by a fresh ``num_classes`` head when
``num_classes != 1000``.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Callable

import torchvision
from torch import nn

from autorank.errors import UserError
from autorank.models._registry import register_model

log = logging.getLogger(__name__)

SMALL_INPUT_MAX = 64
_IMAGENET_CLASSES = 1000


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    conv = model.get_submodule(name)
    assert isinstance(conv, nn.Conv2d), f"{name} is {type(conv).__name__}, not Conv2d"
    return conv


def _linear_out(model: nn.Module, name: str) -> int:
    layer = model.get_submodule(name)
    assert isinstance(layer, nn.Linear), f"{name} is {type(layer).__name__}, not Linear"
    return layer.out_features


def _small_stem(model: nn.Module, name: str, *, bias: bool) -> None:
    """Replace conv ``name`` by a 3x3 stride-1 conv with the same output width."""
    width = _conv(model, name).out_channels
    model.set_submodule(name, nn.Conv2d(3, width, 3, stride=1, padding=1, bias=bias))


def _adapt_resnet(model: nn.Module) -> None:
    _small_stem(model, "conv1", bias=False)
    model.set_submodule("maxpool", nn.Identity())


def _adapt_vgg(model: nn.Module) -> None:
    num_classes = _linear_out(model, "classifier.6")
    model.set_submodule("avgpool", nn.AdaptiveAvgPool2d(1))
    model.set_submodule("classifier", nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, num_classes)
    ))


def _adapt_alexnet(model: nn.Module) -> None:
    num_classes = _linear_out(model, "classifier.6")
    _small_stem(model, "features.0", bias=True)
    model.set_submodule("avgpool", nn.AdaptiveAvgPool2d(2))
    model.set_submodule("classifier", nn.Sequential(
        nn.Dropout(0.5),
        nn.Linear(256 * 2 * 2, 1024),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    ))


def _adapt_densenet(model: nn.Module) -> None:
    _small_stem(model, "features.conv0", bias=False)
    model.set_submodule("features.pool0", nn.Identity())


def _adapt_mobilenet_v2(model: nn.Module) -> None:
    _conv(model, "features.0.0").stride = (1, 1)
    # features.2 opens the 24-channel stage; its depthwise conv carries the stride.
    _conv(model, "features.2.conv.1.0").stride = (1, 1)


def _adapt_shufflenet(model: nn.Module) -> None:
    _conv(model, "conv1.0").stride = (1, 1)
    model.set_submodule("maxpool", nn.Identity())


_ADAPTERS: dict[str, Callable[[nn.Module], None]] = {
    "resnet18": _adapt_resnet,
    "resnet34": _adapt_resnet,
    "resnet50": _adapt_resnet,
    "vgg11_bn": _adapt_vgg,
    "vgg16": _adapt_vgg,
    "vgg16_bn": _adapt_vgg,
    "alexnet": _adapt_alexnet,
    "mobilenet_v2": _adapt_mobilenet_v2,
    "shufflenet_v2_x1_0": _adapt_shufflenet,
    "densenet121": _adapt_densenet,
    "densenet161": _adapt_densenet,
}


def _resolve_weights(name: str, weights: str) -> torchvision.models.WeightsEnum:
    try:
        if "." in weights:
            return torchvision.models.get_weight(weights)
        return torchvision.models.get_model_weights(name)[weights]
    except (KeyError, ValueError) as e:
        allowed = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
        raise UserError(f"unknown weights {weights!r} for {name}; expected one of {allowed}") from e


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a fresh one with ``num_classes`` outputs."""
    name, last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    model.set_submodule(name, nn.Linear(last.in_features, num_classes))


def _pretrained(name: str, weights: str, num_classes: int) -> nn.Module:
    enum = _resolve_weights(name, weights)
    try:
        model = torchvision.models.get_model(name, weights=enum)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"could not download torchvision weights {enum} ({e}); run once online or put "
            "the file in $TORCH_HOME/hub/checkpoints"
        ) from e
    if num_classes != _IMAGENET_CLASSES:
        _replace_head(model, num_classes)
    return model


def build_torchvision(
    name: str, *, num_classes: int, input_size: int, weights: str | None
) -> nn.Module:
    """Build torchvision model ``name``, with the small-input stem when ``input_size <= 64``.

    Args:
        name: a torchvision model name with an adaptation in this module.
        num_classes: classifier outputs.
        input_size: image side the model will see.
        weights: a torchvision weight name (``"IMAGENET1K_V1"``, ``"DEFAULT"`` or the full
            ``"ResNet18_Weights.IMAGENET1K_V1"``); needs ``input_size > 64``.

    Returns:
        The model, randomly initialised unless ``weights`` is given.

    Raises:
        UserError: weights with a small input size, unknown weights, or a failed download.
    """
    if weights is not None:
        if input_size <= SMALL_INPUT_MAX:
            raise UserError(
                f"pretrained weights for {name} fit only the unadapted ImageNet stem; use "
                f"input_size > {SMALL_INPUT_MAX} (resize the images) or drop weights"
            )
        return _pretrained(name, weights, num_classes)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if input_size <= SMALL_INPUT_MAX:
        _ADAPTERS[name](model)
    return model


def _register(name: str) -> None:
    @register_model(name, family="torchvision")
    def build(*, num_classes: int, input_size: int, weights: str | None) -> nn.Module:
        return build_torchvision(
            name, num_classes=num_classes, input_size=input_size, weights=weights
        )


for _name in _ADAPTERS:
    _register(_name)
