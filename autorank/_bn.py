"""BatchNorm recalibration: what follows every compression before the fine-tune."""

from __future__ import annotations

import logging

import torch
from torch import nn

from .data import DataBundle
from .runtime import resolve_device

log = logging.getLogger(__name__)


def recalibrate_bn(
    model: nn.Module,
    data: DataBundle,
    *,
    batches: int = 20,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    augment: bool = True,
) -> int:
    """Re-estimate BatchNorm running statistics on training images, without gradients.

    Resets each BN's running mean/var and accumulates a cumulative average (``momentum=None``)
    over ``batches`` training batches, then restores each BN's momentum and the model's mode.
    Needed after factorization changes the activations a BN layer sees.

    The batches are augmented (crop + flip) by default, as in training: statistics of
    un-augmented images differ from those a checkpoint learned, and measured on the CIFAR
    ResNet-20 checkpoint, recalibrating the dense model on un-augmented batches costs 2.8 points
    of test accuracy (91.73 -> 88.97 %), on augmented ones 0.1 (91.62 %).

    Args:
        model: the model, modified in place.
        data: images come from ``data.train`` (shuffled with a fixed seed).
        batches: number of batches to average over.
        batch_size: images per batch.
        device: where to run.
        augment: random crop + flip, as the training batches had.

    Returns:
        The number of BN layers recalibrated.
    """
    dev = resolve_device(device)
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        log.info("recalibrate_bn: the model has no BatchNorm layer with running stats")
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.to(dev).train()
    try:
        with torch.no_grad():
            for x, _ in data.batches("train", batch_size=batch_size, shuffle=True,
                                     augment=augment, generator=torch.Generator().manual_seed(0),
                                     device=dev, limit=batches * batch_size):
                model(x)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return len(bns)
