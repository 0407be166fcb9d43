"""The dense model a search or a strategy starts from, and the data split it is judged on;
training one from scratch when there is no checkpoint, with an on-disk cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from . import _env
from .data import DataBundle, get_data
from .engine import evaluate, finetune
from .errors import UserError
from .models import get_model, get_model_spec

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """Which baseline to load (or train first) and which images to use."""

    model: str
    dataset: str
    checkpoint: str | None = None  # None: a baseline is trained first (cached)
    data_dir: str | None = None  # default $AUTORANK_DATA_DIR
    val_source: str = "auto"  # auto: half the test set for a checkpoint, else from train
    seed: int = 0
    baseline_epochs: int = 30
    input_size: int = 32
    device: str = "cpu"
    val_size: int | float | None = None  # None: the data set's default
    download: bool = False  # let torchvision fetch CIFAR when it is not found
    progress: bool = False  # show the baseline training's progress bar


def resolve_val_source(val_source: str, checkpoint: str | None) -> str:
    """``auto``: a checkpoint of unknown training data is validated on a seeded half of the
    test set (the other half reports); a baseline trained here on a split carved from train."""
    if val_source != "auto":
        return val_source
    return "test" if checkpoint else "train"


def load_baseline(spec: BaselineSpec) -> tuple[nn.Module, DataBundle]:
    """The trained dense model (in eval mode) and its data.

    Images the model cannot take are refused before a baseline is trained.

    Raises:
        UserError: unknown model or data set, missing data, images the model cannot take, a
            checkpoint that does not fit.
    """
    from .models import check_input_shape, load_checkpoint, load_weights

    model_spec = get_model_spec(spec.model)
    data_dir = spec.data_dir or _env.data_dir()
    data = get_data(spec.dataset, data_dir=data_dir,
                    val_source=resolve_val_source(spec.val_source, spec.checkpoint),
                    val_size=spec.val_size, seed=spec.seed, mean=model_spec.mean,
                    std=model_spec.std, download=spec.download)
    model = get_model(spec.model, num_classes=data.num_classes, input_size=spec.input_size)
    check_input_shape(model, data.input_shape, name=f"model {spec.model!r}")
    checkpoint = spec.checkpoint
    if checkpoint is None:
        log.info("no checkpoint: training a %s baseline for %d epochs (cached)", spec.model,
                 spec.baseline_epochs)
        checkpoint = str(train_baseline(spec.model, spec.dataset, epochs=spec.baseline_epochs,
                                        seed=spec.seed, data_dir=data_dir, device=spec.device,
                                        progress=spec.progress))
    load_weights(model, load_checkpoint(checkpoint), source=checkpoint)
    return model.eval(), data


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if _env.cache_dir():
        return Path(str(_env.cache_dir())).expanduser() / "baselines"
    return Path.home() / ".cache" / "autorank" / "baselines"


def data_fingerprint(data: DataBundle) -> str:
    """A hash of the images and labels of every split: the data set's content, not its path
    (a file overwritten with other images is another data set)."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def baseline_path(
    model_name: str, dataset: str, *, epochs: int, seed: int, lr: float, batch_size: int,
    cache_dir: str | os.PathLike[str] | None = None, content: str = "",
) -> Path:
    """Where :func:`train_baseline` caches a baseline: a readable name plus a hash of the key,
    which holds the data's ``content`` (:func:`data_fingerprint`)."""
    key = json.dumps([model_name, dataset, epochs, seed, lr, batch_size, content])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)[-40:]
    return _cache_dir(cache_dir) / f"{model_name}-{slug}-e{epochs}-s{seed}-{digest}.pt"


def train_baseline(
    model_name: str,
    dataset: str,
    *,
    epochs: int,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    lr: float = 0.1,
    batch_size: int = 128,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Path:
    """Train a registered model from scratch and save ``{"state_dict", "meta"}``.

    The recipe of He et al. 2016 for CIFAR: SGD momentum 0.9, weight decay 5e-4, cosine LR
    from ``lr``, random crop + flip. Training uses the train split minus the seeded 10 %
    validation split, so that split stays clean for judging compressed models. With
    ``out=None`` the file is cached under ``cache_dir`` (default ``$AUTORANK_CACHE_DIR/
    baselines`` or ``~/.cache/autorank/baselines``), keyed by (model, data set name and
    content, epochs, seed, lr, batch size), and an existing file is returned without training.

    Returns:
        The checkpoint path; it loads with ``torch.load(..., weights_only=True)``.

    Raises:
        UserError: unknown model or data set, ``epochs < 1``.
    """
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    spec = get_model_spec(model_name)
    data = get_data(dataset, data_dir=data_dir, seed=seed, mean=spec.mean, std=spec.std)
    path = Path(out) if out is not None else baseline_path(
        model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
        cache_dir=cache_dir, content=data_fingerprint(data))
    if out is None and path.is_file():
        log.info("baseline %s found in the cache: %s", model_name, path)
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weight initialisation
        model = get_model(model_name, num_classes=data.num_classes)
    finetune(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
             device=device, progress=progress)
    meta = {"model": model_name, "dataset": dataset, "epochs": epochs, "seed": seed,
            "lr": lr, "batch_size": batch_size, "num_classes": data.num_classes,
            "val_accuracy": evaluate(model, data, "val", device=device) if len(data.val) else -1.0,
            "test_accuracy": evaluate(model, data, "test", device=device)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cached baseline
    log.info("baseline %s: test accuracy %.4f, saved to %s",
             model_name, meta["test_accuracy"], path)
    return path
