"""Data sets held in memory as uint8 tensors: CIFAR-10/100, npz arrays, image folders, digits,
synthetic. :func:`get_data` returns a :class:`DataBundle` whose ``batches`` normalise and augment.
"""

from __future__ import annotations

from autorank.data import sources  # noqa: F401  (registers the loaders)
from autorank.data._arrays import RawData, channel_stats, from_numpy
from autorank.data._bundle import DataBundle, Split, augment_batch
from autorank.data._registry import (
    get_data,
    image_hashes,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DataBundle",
    "RawData",
    "Split",
    "augment_batch",
    "channel_stats",
    "from_numpy",
    "get_data",
    "image_hashes",
    "list_datasets",
    "register_dataset",
]
