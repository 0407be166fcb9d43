"""Checked conversion of numpy image arrays into tensors, stratified splits, channel stats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from autorank.errors import UserError


@dataclass(frozen=True)
class RawData:
    """What a loader returns: a train and a test set as uint8 NCHW / int64 tensors.

    ``mean``/``std`` are the data set's known training statistics, or ``None`` to have
    them computed from the training images. ``resized`` says how the loader resized images
    (``""``: it did not).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resized: str = ""


def resize_images(x: torch.Tensor, size: int, *, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to ``size`` x ``size``: bilinear, antialiased when
    shrinking, in chunks (a float copy of a chunk at a time)."""
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        part = F.interpolate(x[start : start + chunk].float(), size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _images(x: np.ndarray, *, key: str, source: str) -> torch.Tensor:
    if x.ndim == 3:  # (N, H, W) grey
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(
            f"{source}: {key} has shape {x.shape}; expected (N, H, W, 3) or (N, H, W, 1) images"
        )
    if x.dtype != np.uint8:
        raise UserError(f"{source}: {key} has dtype {x.dtype}; expected uint8 pixels 0..255")
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    # Models are built for RGB input; grey images are repeated to three channels.
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t.contiguous()


def _labels(y: np.ndarray, *, key: str, source: str, n: int) -> torch.Tensor:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{source}: {key} has shape {y.shape}, dtype {y.dtype}; expected (N,) ints")
    if len(y) != n:
        raise UserError(f"{source}: {key} has {len(y)} labels for {n} images")
    return torch.from_numpy(y.astype(np.int64))


def from_numpy(
    arrays: dict[str, np.ndarray],
    *,
    source: str,
    class_names: tuple[str, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> RawData:
    """Check and convert ``x_train, y_train, x_test, y_test`` (HWC uint8 images) to tensors.

    Args:
        arrays: the four arrays by key.
        source: how to name the data in error messages.
        class_names: class names; default ``"0" .. str(max label)``.
        mean: known per-channel mean, or ``None``.
        std: known per-channel std, or ``None``.

    Raises:
        UserError: a key missing, wrong shape or dtype, length mismatch, label out of range.
    """
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise UserError(
            f"{source}: missing arrays {missing}; need x_train, y_train, x_test, y_test"
        )
    x_tr = _images(arrays["x_train"], key="x_train", source=source)
    x_te = _images(arrays["x_test"], key="x_test", source=source)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise UserError(f"{source}: train images {tuple(x_tr.shape[1:])} and test images "
                        f"{tuple(x_te.shape[1:])} differ in size")
    y_tr = _labels(arrays["y_train"], key="y_train", source=source, n=len(x_tr))
    y_te = _labels(arrays["y_test"], key="y_test", source=source, n=len(x_te))
    if len(y_tr) == 0 or len(y_te) == 0:
        raise UserError(f"{source}: train and test sets must not be empty")
    if class_names is None:
        class_names = tuple(str(c) for c in range(int(max(y_tr.max(), y_te.max())) + 1))
    num_classes = len(class_names)
    for key, y in (("y_train", y_tr), ("y_test", y_te)):
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise UserError(f"{source}: {key} has labels in {int(y.min())}..{int(y.max())}; "
                            f"expected 0..{num_classes - 1}")
    return RawData(x_tr, y_tr, x_te, y_te, tuple(class_names), mean, std)


def resolve_size(size: int | float, n: int, *, what: str) -> int:
    """Turn a count or a fraction of ``n`` into a count in ``0 .. n - 1``.

    Raises:
        UserError: a negative size, a fraction outside [0, 1) or a count >= ``n``.
    """
    count = round(size * n) if isinstance(size, float) else int(size)
    if isinstance(size, float) and not 0.0 <= size < 1.0:
        raise UserError(f"{what} as a fraction must be in [0, 1), got {size}")
    if not 0 <= count < n:
        raise UserError(f"{what} must be in 0..{n - 1} images (or a fraction), got {size}")
    return count


def stratified_split(
    y: torch.Tensor, size: int, *, seed: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices ``0 .. len(y) - 1`` into (rest, part of ``size``), stratified by label.

    Both index tensors come back sorted, so the original order is kept within each part.

    Raises:
        UserError: the split cannot be stratified (a class with one image, or ``size``
            smaller than the number of classes).
    """
    idx = np.arange(len(y))
    if size == 0:
        return torch.from_numpy(idx), torch.from_numpy(idx[:0])
    try:
        rest, part = train_test_split(idx, test_size=size, random_state=seed, stratify=y.numpy())
    except ValueError as e:
        raise UserError(f"cannot carve a stratified {what} of {size} images: {e}") from e
    return torch.from_numpy(np.sort(rest)), torch.from_numpy(np.sort(part))


def channel_stats(x: torch.Tensor, *, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], computed in chunks.

    Returns:
        ``(mean, std)``, each a tuple with one float per channel.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
