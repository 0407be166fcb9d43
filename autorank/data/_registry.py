"""Data set registry and :func:`get_data`: load, carve a validation split, wrap in a bundle."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from autorank._registry import Registry
from autorank.data._arrays import (
    RawData,
    channel_stats,
    resize_images,
    resolve_size,
    stratified_split,
)
from autorank.data._bundle import DataBundle, Split
from autorank.errors import UserError

log = logging.getLogger(__name__)

Loader = Callable[..., RawData]
VAL_SOURCES = ("train", "test")
DEFAULT_VAL_FRACTION = 0.1  # of train: 5,000 images for CIFAR's 50,000

_DATASETS: Registry[Loader] = Registry("data set", missing=UserError)


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register a loader ``fn(arg, *, data_dir, download, **options) -> RawData``.

    ``arg`` is what follows ``name:`` in the data set name (``npz:PATH``), else ``None``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(loader: Loader) -> Loader:
        _DATASETS.add(name, loader)
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Names of the registered data sets (``npz`` and ``imagefolder`` take ``:PATH``)."""
    return _DATASETS.names()


def _carve(
    raw: RawData, *, val_source: str, val_size: int | float | None, seed: int
) -> tuple[Split, Split, Split]:
    """Return (train, val, test), the val split carved from train or from test."""
    train, test = Split(raw.x_train, raw.y_train), Split(raw.x_test, raw.y_test)
    source = train if val_source == "train" else test
    default = DEFAULT_VAL_FRACTION if val_source == "train" else len(test) // 2
    size = resolve_size(default if val_size is None else val_size, len(source), what="val_size")
    rest, part = stratified_split(source.y, size, seed=seed, what=f"val split of {val_source}")
    val = Split(source.x[part], source.y[part])
    kept = Split(source.x[rest], source.y[rest])
    return (kept, val, test) if val_source == "train" else (train, val, kept)


def _stats(
    raw: RawData, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if mean is None or std is None:
        known_mean, known_std = raw.mean, raw.std
        if known_mean is None or known_std is None:
            known_mean, known_std = channel_stats(raw.x_train)
        mean = known_mean if mean is None else mean
        std = known_std if std is None else std
    channels = raw.x_train.shape[1]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"mean and std need {channels} values each, std > 0; got {mean}, {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def get_data(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int | float | None = None,
    val_source: str = "train",
    seed: int = 0,
    download: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int | None = None,
    **options: Any,
) -> DataBundle:
    """Load a data set into memory with a seeded, stratified validation split.

    Args:
        name: a registered name (``cifar10``, ``cifar100``, ``digits``, ``synthetic``) or
            ``npz:PATH`` / ``imagefolder:PATH``.
        data_dir: where to look for files (CIFAR: else ``$AUTORANK_DATA_DIR``).
        val_size: validation images, as a count or a fraction of the split it comes from;
            default 10 % of train (``val_source="train"``) or half of test (``"test"``).
        val_source: ``"train"`` carves val from the training set (clean only for models
            trained without it); ``"test"`` carves it from the test set and reports on the
            other part -- use it for checkpoints trained on the whole training set.
        seed: seed of the validation split.
        download: let CIFAR be fetched by torchvision when not found.
        mean: per-channel normalisation mean (use the model's ``ModelSpec.mean``); default
            the data set's training mean.
        std: per-channel normalisation std; default the data set's training std.
        image_size: the square side to bring the images to; None: the data set's own
            (image folders: 32). Loaders that take it make their images at that size
            (``imagefolder`` resizes what it decodes, ``synthetic`` draws them); other
            images are resized after loading. A resize is logged and kept in
            :attr:`DataBundle.resized`.
        **options: loader options (``synthetic``: ``num_train``, ``num_test``,
            ``num_classes``, ``data_seed``).

    Returns:
        A :class:`DataBundle`; val never overlaps train or test.

    Raises:
        UserError: unknown name, missing or malformed data, bad split options.
    """
    key, _, arg = name.partition(":")
    loader = _DATASETS.get(key, shown=name)
    if val_source not in VAL_SOURCES:
        raise UserError(f"val_source must be one of {list(VAL_SOURCES)}, got {val_source!r}")
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    if image_size is not None and image_size < 1:
        raise UserError(f"image_size must be >= 1, got {image_size}")
    if image_size is not None and "image_size" in inspect.signature(loader).parameters:
        options["image_size"] = image_size
    raw = _sized(loader(arg or None, data_dir=folder, download=download, **options), image_size)
    if raw.resized:
        log.info("%s: %s", name, raw.resized)
    train, val, test = _carve(raw, val_source=val_source, val_size=val_size, seed=seed)
    mean_t, std_t = _stats(raw, mean, std)
    num_classes = len(raw.class_names)
    log.info("%s: %d train, %d val (from %s), %d test images, %d classes",
             name, len(train), len(val), val_source, len(test), num_classes)
    return DataBundle(name, train, val, test, num_classes, raw.class_names, mean_t, std_t,
                      val_source, raw.resized)


def _sized(raw: RawData, size: int | None) -> RawData:
    """``raw`` with its images resized to ``size`` squared, if they are of another size."""
    h, w = raw.x_train.shape[-2:]
    if size is None or (h, w) == (size, size):
        return raw
    count = len(raw.x_train) + len(raw.x_test)
    gigabytes = count * raw.x_train.shape[1] * size * size / 1e9
    return dataclasses.replace(
        raw, x_train=resize_images(raw.x_train, size), x_test=resize_images(raw.x_test, size),
        resized=f"{count} images resized from {h}x{w} to {size}x{size} "
                f"({gigabytes:.2g} GB in memory)")


def image_hashes(x: torch.Tensor) -> list[int]:
    """One hash per image of a uint8 ``(N, C, H, W)`` tensor, to check splits are disjoint."""
    return [hash(img.numpy().tobytes()) for img in x]
