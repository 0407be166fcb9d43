"""In-memory image data: uint8 NCHW splits, batched normalisation and augmentation on tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autorank.errors import UserError

SPLITS = ("train", "val", "test")
_CROP_PAD = 4


@dataclass(frozen=True)
class Split:
    """One split: ``x`` uint8 ``(N, C, H, W)``, ``y`` int64 ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return f"Split(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)})"


@dataclass(frozen=True)
class DataBundle:
    """Train/val/test splits held in memory, plus what a model needs to know about them.

    Args:
        name: the data set name given to :func:`autorank.data.get_data`.
        train: training images (the val split already carved out when ``val_source="train"``).
        val: validation images, used to judge trials.
        test: test images, used only to report (half of the original test set when
            ``val_source="test"``).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        class_names: one name per class.
        mean: per-channel mean applied after scaling to [0, 1].
        std: per-channel std.
        val_source: ``"train"`` or ``"test"``: the split the validation images came from.
        resized: how the images were resized on loading, in words (``""``: they were not).
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_source: str = "train"
    resized: str = ""

    @property
    def image_size(self) -> tuple[int, int]:
        """Image ``(height, width)``."""
        return int(self.train.x.shape[-2]), int(self.train.x.shape[-1])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's ``(C, H, W)``, as a model sees it."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def split(self, name: str) -> Split:
        """Return split ``name`` (``train``, ``val`` or ``test``).

        Raises:
            UserError: unknown split name.
        """
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        split: Split = getattr(self, name)
        return split

    def num_examples(self, split: str) -> int:
        """Number of images in ``split``."""
        return len(self.split(split))

    def __len__(self) -> int:
        """Number of training images."""
        return len(self.train)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Turn a uint8 batch into float32, scaled to [0, 1] then standardised per channel."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float().div_(255.0) - mean).div_(std)

    def batches(
        self,
        split: str,
        *,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        limit: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches: ``x`` float32 normalised on ``device``, ``y`` int64.

        Augmentation is the standard CIFAR one (He et al. 2016): random crop with 4-pixel
        zero padding and random horizontal flip, drawn per image but applied batch-wise.

        Args:
            split: ``train``, ``val`` or ``test``.
            batch_size: images per batch; the last batch may be smaller.
            shuffle: visit images in a random order drawn from ``generator``.
            augment: apply crop + flip.
            generator: source of randomness for shuffling and augmentation.
            device: where the batches go.
            limit: use at most this many images (the first ones, after shuffling).

        Raises:
            UserError: unknown split or ``batch_size < 1``.
        """
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        data = self.split(split)
        n = len(data) if limit is None else min(len(data), max(0, limit))
        order = torch.randperm(len(data), generator=generator)[:n] if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            idx = slice(start, stop) if order is None else order[start:stop]
            x, y = data.x[idx], data.y[idx]
            if augment:
                x = augment_batch(x, generator=generator)
            yield self.normalise(x.to(device, non_blocking=True)), y.to(device)


def augment_batch(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip of a uint8 ``(N, C, H, W)`` batch.

    Args:
        x: the batch; not modified.
        generator: source of the random offsets and flips.

    Returns:
        A new batch of the same shape and dtype.
    """
    n, _, h, w = x.shape
    p = _CROP_PAD
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy + torch.arange(h)
    cols = dx + torch.arange(w)
    # Flipping is folded into the column index, so one gather does crop and flip.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n)[:, None, None]
    # Advanced indices split by a slice move to the front: result is (N, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()
