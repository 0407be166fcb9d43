"""Data set loaders: CIFAR-10/100, ``npz:PATH``, ``imagefolder:PATH``, digits, synthetic.

Each loader returns :class:`RawData` (train and test sets in memory); validation carving,
normalisation and batching happen in :func:`autorank.data.get_data`.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autorank import _env
from autorank.data._arrays import RawData, from_numpy
from autorank.data._registry import register_dataset
from autorank.errors import UserError

log = logging.getLogger(__name__)

_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        raise UserError(f"data set {name!r} takes no ':PATH' argument, got {arg!r}")


def _search_dirs(data_dir: Path | None) -> list[Path]:
    # a directory given explicitly is the only place looked at: the variable is the default
    if data_dir is not None:
        return [data_dir]
    env = _env.data_dir()
    return [Path(env)] if env else []


def _locate(arg: str, data_dir: Path | None) -> Path:
    path = Path(arg).expanduser()
    if not path.exists() and data_dir is not None and (data_dir / arg).exists():
        return data_dir / arg
    return path


def read_npz(path: Path, *, source: str, mean: Any = None, std: Any = None) -> RawData:
    """Read an ``.npz`` with ``x_train, y_train, x_test, y_test`` (HWC uint8) and optional
    ``class_names``, without unpickling anything.

    Raises:
        UserError: unreadable file or arrays that fail :func:`from_numpy`'s checks.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # numpy's own message may advise allow_pickle=True: never the fix for data
        why = "it holds pickled objects" if "allow_pickle" in str(e) else type(e).__name__
        raise UserError(f"{source}: {str(path)!r} is corrupt or not a plain .npz of arrays "
                        f"({why}); expected x_train, y_train, x_test, y_test as numeric arrays") from e
    names = arrays.get("class_names")
    class_names = tuple(str(c) for c in names) if names is not None else None
    return from_numpy(arrays, source=source, class_names=class_names, mean=mean, std=std)


def _torchvision_cifar(name: str, root: Path, download: bool) -> RawData:
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"could not download {name} into {str(root)!r} ({e}); are you offline?"
        ) from e
    arrays = {"x_train": train.data, "y_train": np.asarray(train.targets),
              "x_test": test.data, "y_test": np.asarray(test.targets)}
    mean, std = _CIFAR_STATS[name]
    return from_numpy(arrays, source=name, class_names=tuple(train.classes), mean=mean, std=std)


def _load_cifar(name: str, arg: str | None, data_dir: Path | None, download: bool) -> RawData:
    _no_arg(name, arg)
    mean, std = _CIFAR_STATS[name]
    for d in _search_dirs(data_dir):
        if (d / f"{name}.npz").is_file():
            log.info("loading %s from %s", name, d / f"{name}.npz")
            return read_npz(d / f"{name}.npz", source=name, mean=mean, std=std)
    root = (_search_dirs(data_dir) or [Path.home() / ".cache" / "autorank" / "data"])[0]
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if download or (root / folder).is_dir():
        return _torchvision_cifar(name, root, download)
    raise UserError(
        f"{name} not found: put {name}.npz or torchvision's {folder}/ in the data directory "
        f"(--data-dir or ${_env.DATA_DIR}), or pass --download to fetch it into {str(root)!r}"
    )


@register_dataset("cifar10")
def load_cifar10(arg: str | None, *, data_dir: Path | None, download: bool) -> RawData:
    """CIFAR-10 (Krizhevsky 2009): ``cifar10.npz`` if found, else torchvision's copy."""
    return _load_cifar("cifar10", arg, data_dir, download)


@register_dataset("cifar100")
def load_cifar100(arg: str | None, *, data_dir: Path | None, download: bool) -> RawData:
    """CIFAR-100 (Krizhevsky 2009): ``cifar100.npz`` if found, else torchvision's copy."""
    return _load_cifar("cifar100", arg, data_dir, download)


@register_dataset("npz")
def load_npz(arg: str | None, *, data_dir: Path | None, download: bool) -> RawData:
    """``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (+ optional ``class_names``)."""
    del download
    if not arg:
        raise UserError("npz data needs a path: use 'npz:PATH/TO/FILE.npz'")
    path = _locate(arg, data_dir)
    if not path.is_file():
        raise UserError(f"npz file {str(path)!r} does not exist")
    return read_npz(path, source=f"npz:{path}")


def _read_folder(folder: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray,
                                                                        list[tuple[int, int]]]:
    """Images and labels of ``folder/<class>/*``, resized to ``size`` squared, and the
    ``(height, width)`` of each image that was of another size."""
    from PIL import Image

    images, labels, resized = [], [], []
    for label, cls in enumerate(classes):
        for file in sorted((folder / cls).rglob("*")):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                with Image.open(file) as opened:
                    if opened.size != (size, size):
                        resized.append((opened.height, opened.width))
                    im = opened.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
                labels.append(label)
    if not images:
        raise UserError(f"imagefolder: no images found under {str(folder)!r}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), resized


@register_dataset("imagefolder")
def load_imagefolder(
    arg: str | None, *, data_dir: Path | None, download: bool, image_size: int = 32
) -> RawData:
    """``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/`` (or ``PATH/val/``).

    Images are decoded once, converted to RGB and resized to ``image_size`` squared; how
    many were resized is kept in :attr:`RawData.resized`.
    A ``test/`` folder is the test set; without one, ``val/`` is.
    """
    del download
    if not arg:
        raise UserError("imagefolder needs a path: use 'imagefolder:DIR' (DIR/train, DIR/test)")
    root = _locate(arg, data_dir)
    held_out = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or held_out is None:
        raise UserError(f"imagefolder {str(root)!r} needs a train/ and a test/ (or val/) folder")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    extra = sorted({p.name for p in held_out.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise UserError(f"imagefolder: classes {extra} in {held_out.name}/ are not in train/")
    x_train, y_train, resized = _read_folder(root / "train", classes, image_size)
    x_test, y_test, resized_test = _read_folder(held_out, classes, image_size)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    raw = from_numpy(arrays, source=f"imagefolder:{root}", class_names=tuple(classes))
    resized += resized_test
    if not resized:
        return raw
    sizes = sorted(set(resized))
    shown = ", ".join(f"{h}x{w}" for h, w in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
    return dataclasses.replace(raw, resized=f"{len(resized)} of {len(x_train) + len(x_test)} "
                               f"images resized from {shown} to {image_size}x{image_size}")


@register_dataset("digits")
def load_digits(arg: str | None, *, data_dir: Path | None, download: bool) -> RawData:
    """scikit-learn's bundled 8x8 digits, upscaled to 32x32 RGB; a fixed stratified 25 % test set.

    Works offline; the embedded default for demos.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    del data_dir, download
    _no_arg("digits", arg)
    bunch = sk_digits()
    grey = torch.from_numpy(bunch.images).float().div_(16.0)[:, None]  # values 0..16
    big = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)
    x = big.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    y = bunch.target.astype(np.int64)
    # Fixed seed: the test set is the same whatever seed the validation split uses.
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    arrays = {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}
    return from_numpy(arrays, source="digits", class_names=tuple(str(c) for c in range(10)))


@register_dataset("synthetic")
def load_synthetic(
    arg: str | None,
    *,
    data_dir: Path | None,
    download: bool,
    num_train: int = 512,
    num_test: int = 256,
    num_classes: int = 4,
    image_size: int = 32,
    data_seed: int = 0,
) -> RawData:
    """Random but learnable images: a smooth per-class pattern plus per-image noise.

    Every image is distinct (continuous noise), which tests rely on to check disjoint splits.
    """
    del data_dir, download
    _no_arg("synthetic", arg)
    if num_train < 1 or num_test < 1 or num_classes < 2 or image_size < 4:
        raise UserError(
            "synthetic needs num_train, num_test >= 1, num_classes >= 2, image_size >= 4"
        )
    g = torch.Generator().manual_seed(data_seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g) * 128 + 64
    patterns = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear")

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        noise = torch.randn(n, 3, image_size, image_size, generator=g) * 40
        x = (patterns[y] + noise).round().clamp(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).numpy(), y.numpy()

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    names = tuple(f"class{c}" for c in range(num_classes))
    return from_numpy(arrays, source="synthetic", class_names=names)
