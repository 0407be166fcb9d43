"""The dense model a search or a strategy starts from, and the data split it is judged on:
a checkpoint (given a new head and a transfer fine-tune when it is for other classes), or one
trained from scratch when there is none; both cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _env
from ._epochs import (
    BaselineProgress,
    EpochSaver,
    ProgressCallback,
    Reporter,
    save_atomic,
    say,
)
from ._transfer import BATCH_SIZE, HEAD_LR, TRANSFER_LR, train_transfer
from .data import DataBundle, get_data
from .engine import evaluate, finetune, resolve_device
from .errors import UserError
from .models import (
    CheckpointFit,
    check_checkpoint,
    check_input_shape,
    get_model,
    get_model_spec,
    load_checkpoint,
    load_weights,
)

__all__ = ["BaselineProgress", "BaselineSpec", "LoadedBaseline", "PreparedBaseline",
           "ProgressCallback", "baseline_path", "data_fingerprint", "epochs_dir",
           "finish_baseline", "load_baseline", "prepare_baseline", "resolve_val_source",
           "train_baseline", "transfer_baseline"]

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
    input_size: int | None = None  # None: the data set's own image side (image folders: 32)
    device: str = "cpu"
    val_size: int | float | None = None  # None: the data set's default
    download: bool = False  # let torchvision fetch CIFAR when it is not found
    progress: bool = False  # show the baseline training's progress bar
    num_classes: int | None = None  # None: the data set's; given, it must be the data set's
    # A checkpoint for other classes gets a new head, trained this many epochs alone, then
    # transfer_epochs with all layers (the usual transfer fine-tune, e.g. Kornblith et al. 2019)
    transfer_head_epochs: int = 2
    transfer_epochs: int = 8

    def __post_init__(self) -> None:
        if self.transfer_head_epochs < 0 or self.transfer_epochs < 0 or not (
                self.transfer_head_epochs or self.transfer_epochs):
            raise UserError("--transfer-head-epochs and --transfer-epochs must be >= 0, not both 0")


def resolve_val_source(val_source: str, checkpoint: str | None) -> str:
    """``auto``: a checkpoint of unknown training data is validated on a seeded half of the
    test set (the other half reports); a baseline trained here on a split carved from train."""
    if val_source != "auto":
        return val_source
    return "test" if checkpoint else "train"


@dataclasses.dataclass(frozen=True)
class PreparedBaseline:
    """A baseline checked before anything is trained or written: its data loaded, its model
    built (weights not loaded yet), its checkpoint read and found to fit.

    Args:
        spec: the spec, its ``input_size`` resolved.
        model: the model for the data's classes and the input size, randomly initialised.
        data: the images.
        state: the checkpoint's tensors, or None (a baseline is trained from scratch).
        fit: how the checkpoint fits: its classifier's name and classes.
    """

    spec: BaselineSpec
    model: nn.Module
    data: DataBundle
    state: dict[str, torch.Tensor] | None = None
    fit: CheckpointFit | None = None

    @property
    def input_size(self) -> int:
        assert self.spec.input_size is not None
        return self.spec.input_size

    @property
    def transfers(self) -> bool:
        """Whether the checkpoint's classifier is for other classes (a transfer comes first)."""
        return self.fit is not None and self.fit.classes != self.data.num_classes


@dataclasses.dataclass(frozen=True)
class LoadedBaseline:
    """The trained dense model (eval mode), its data, and its transfer's record (None when
    the checkpoint fitted the classes, or none was given)."""

    model: nn.Module
    data: DataBundle
    transfer: dict[str, Any] | None = None


def prepare_baseline(spec: BaselineSpec, *,
                     on_progress: ProgressCallback | None = None) -> PreparedBaseline:
    """Load the data, build the model and check the checkpoint, training nothing: what can be
    refused is refused here (a search writes its run directory after this).

    The images are brought to ``spec.input_size`` (said through ``on_progress`` when resized).

    Raises:
        UserError: unknown model or data set, missing data, ``num_classes`` other than the
            data's, images the model cannot take, a checkpoint that does not fit (a stem of
            the other input-size form is named with the ``--input-size`` that fits it).
    """
    model_spec = get_model_spec(spec.model)
    state = load_checkpoint(spec.checkpoint) if spec.checkpoint is not None else None
    source = f"checkpoint {spec.checkpoint!r}"
    fit = None if state is None or spec.input_size is None else check_checkpoint(
        spec.model, state, input_size=spec.input_size, source=source)  # before any resize
    data = get_data(spec.dataset, data_dir=spec.data_dir or _env.data_dir(),
                    val_source=resolve_val_source(spec.val_source, spec.checkpoint),
                    val_size=spec.val_size, seed=spec.seed, mean=model_spec.mean,
                    std=model_spec.std, download=spec.download, image_size=spec.input_size)
    _check_classes(spec.num_classes, data)
    size = spec.input_size or max(data.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # the new head of a transfer
        model = get_model(spec.model, num_classes=data.num_classes, input_size=size)
    if state is not None and fit is None:
        fit = check_checkpoint(spec.model, state, input_size=size, source=source)
    check_input_shape(model, data.input_shape, name=f"model {spec.model!r}")
    if data.resized:  # said once nothing was refused: an error stays one line
        say(on_progress, f"{spec.dataset}: {data.resized}; --input-size sets the size")
    return PreparedBaseline(dataclasses.replace(spec, input_size=size), model, data, state, fit)


def _check_classes(num_classes: int | None, data: DataBundle) -> None:
    if num_classes is not None and num_classes != data.num_classes:
        names = ", ".join(data.class_names[:5]) + (", ..." if data.num_classes > 5 else "")
        raise UserError(f"--num-classes {num_classes} disagrees with {data.name}, whose labels "
                        f"are {data.num_classes} classes ({names}); leave --num-classes out or "
                        f"give {data.num_classes}")


def finish_baseline(prepared: PreparedBaseline, *,
                    on_progress: ProgressCallback | None = None) -> LoadedBaseline:
    """The prepared baseline trained: the checkpoint loaded, after a transfer fine-tune when
    it is for other classes (:func:`transfer_baseline`), or a baseline trained from scratch
    when there is no checkpoint (:func:`train_baseline`); either cached."""
    spec, model, data = prepared.spec, prepared.model, prepared.data
    transfer = None
    if prepared.state is None:
        log.info("no checkpoint: training a %s baseline for %d epochs (cached)", spec.model,
                 spec.baseline_epochs)
        path = str(train_baseline(
            spec.model, spec.dataset, epochs=spec.baseline_epochs, seed=spec.seed,
            data_dir=spec.data_dir or _env.data_dir(), device=spec.device,
            progress=spec.progress, input_size=prepared.input_size,
            on_progress=None if on_progress is None else _no_lines(on_progress)))
        state, source = load_checkpoint(path), path
    elif prepared.transfers:
        state, transfer = transfer_baseline(prepared, on_progress=on_progress)
        source = f"the transfer of {spec.checkpoint}"
    else:
        state, source = prepared.state, str(spec.checkpoint)
    load_weights(model, state, source=source)
    return LoadedBaseline(model.cpu().eval(), data, transfer)  # a transfer may have moved it


def _no_lines(callback: ProgressCallback) -> ProgressCallback:
    """``callback`` without the plain lines (said once already, by :func:`prepare_baseline`)."""
    return lambda event: None if isinstance(event, str) else callback(event)


def load_baseline(spec: BaselineSpec, *, on_progress: ProgressCallback | None = None,
                  ) -> tuple[nn.Module, DataBundle]:
    """The trained dense model (in eval mode) and its data: :func:`prepare_baseline`, then
    :func:`finish_baseline`.

    ``on_progress`` gets the plain lines (images resized) and the progress of a baseline
    trained here or of a transfer (see :func:`train_baseline`).

    Raises:
        UserError: as :func:`prepare_baseline`.
    """
    loaded = finish_baseline(prepare_baseline(spec, on_progress=on_progress),
                             on_progress=on_progress)
    return loaded.model, loaded.data


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


def _key(model_name: str, dataset: str, *, epochs: int, seed: int, lr: float, batch_size: int,
         content: str, input_size: int = 32) -> str:
    # the input size picks a torchvision model's stem; 32 (the default) keeps older keys
    extra = [] if input_size == 32 else [input_size]
    return json.dumps([model_name, dataset, epochs, seed, lr, batch_size, content, *extra])


def baseline_path(
    model_name: str, dataset: str, *, epochs: int, seed: int, lr: float, batch_size: int,
    cache_dir: str | os.PathLike[str] | None = None, content: str = "", input_size: int = 32,
) -> Path:
    """Where :func:`train_baseline` caches a baseline: a readable name plus a hash of the key,
    which holds the data's ``content`` (:func:`data_fingerprint`) and the input size."""
    key = _key(model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
               content=content, input_size=input_size)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return _cache_dir(cache_dir) / f"{model_name}-{_slug(dataset)}-e{epochs}-s{seed}-{digest}.pt"


def epochs_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """Where ``train_baseline(..., keep_epochs=True)`` keeps every epoch's weights:
    ``<checkpoint>.epochs/epoch-NNN.pt``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.name}.epochs")


def _slug(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)[-40:]


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
    on_progress: ProgressCallback | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    keep_epochs: bool = False,
) -> Path:
    """Train a registered model from scratch and save ``{"state_dict", "meta"}``.

    The recipe of He et al. 2016 for CIFAR: SGD momentum 0.9, weight decay 5e-4, cosine LR
    from ``lr``, random crop + flip. Training uses the train split minus the seeded 10 %
    validation split, so that split stays clean for judging compressed models. With
    ``out=None`` the file is cached under ``cache_dir`` (default ``$AUTORANK_CACHE_DIR/
    baselines`` or ``~/.cache/autorank/baselines``), keyed by (model, data set name and
    content, epochs, seed, lr, batch size, input size), and an existing file is returned
    without training.

    The images are brought to ``input_size`` (None: the data set's own; said through
    ``on_progress`` when resized) and the model is built for it; ``num_classes``, when given,
    must be the data set's.

    Every epoch's end is saved beside the checkpoint (``.<name>.partial``, with the same key):
    training stopped in any way resumes there when called again, and ends with the weights an
    uninterrupted run gives (on CPU, bit for bit). ``on_progress`` gets a
    :class:`BaselineProgress` after the first few steps (with the time estimate) and after
    every epoch (loss, validation accuracy); without it they are logged at INFO.

    With ``keep_epochs`` every epoch's weights are also kept, each a checkpoint of its own
    (``meta`` with ``epoch``, ``loss`` and ``val_accuracy``), in the folder
    :func:`epochs_dir` names beside the checkpoint; they stay after the training ends.

    Returns:
        The checkpoint path; it loads with ``torch.load(..., weights_only=True)``.

    Raises:
        UserError: unknown model or data set, ``epochs < 1``, ``num_classes`` not the data's.
    """
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    spec = get_model_spec(model_name)
    data = get_data(dataset, data_dir=data_dir, seed=seed, mean=spec.mean, std=spec.std,
                    image_size=input_size)
    _check_classes(num_classes, data)
    size = input_size or max(data.image_size)
    content = data_fingerprint(data)
    path = Path(out) if out is not None else baseline_path(
        model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
        cache_dir=cache_dir, content=content, input_size=size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weight initialisation
        model = get_model(model_name, num_classes=data.num_classes, input_size=size)
    check_input_shape(model, data.input_shape, name=f"model {model_name!r}")
    if data.resized:
        say(on_progress, f"{dataset}: {data.resized}; --input-size sets the size")
    if out is None and path.is_file():
        log.info("baseline %s found in the cache: %s", model_name, path)
        return path
    key = _key(model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
               content=content, input_size=size)
    recipe = {"model": model_name, "dataset": dataset, "epochs": epochs, "seed": seed,
              "lr": lr, "batch_size": batch_size, "num_classes": data.num_classes,
              "input_size": size}
    saver = EpochSaver(path.with_name(f".{path.name}.partial"), key, model, data, Reporter(
        model_name, dataset, str(resolve_device(device)), epochs,
        math.ceil(len(data) / batch_size), len(data), on_progress),
        keep=(epochs_dir(path), recipe) if keep_epochs else None)
    finetune(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
             device=device, progress=progress, hook=saver.reporter, checkpoint=saver)
    meta = {**recipe,
            "val_accuracy": evaluate(model, data, "val", device=device) if len(data.val) else -1.0,
            "test_accuracy": evaluate(model, data, "test", device=device)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(path, {"state_dict": state, "meta": meta})
    saver.path.unlink(missing_ok=True)
    log.info("baseline %s: test accuracy %.4f, saved to %s",
             model_name, meta["test_accuracy"], path)
    return path


def transfer_baseline(prepared: PreparedBaseline, *, on_progress: ProgressCallback | None = None,
                      cache_dir: str | os.PathLike[str] | None = None,
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit a checkpoint for other classes to the data's: a new (seeded) classifier, trained
    ``transfer_head_epochs`` alone (the other layers frozen), then ``transfer_epochs`` with all
    layers, the usual transfer fine-tune (Kornblith et al., CVPR 2019).

    Announced in one line through ``on_progress`` (else logged), with its epochs and the time
    they take; reported after every epoch. Cached like :func:`train_baseline` (keyed by the
    checkpoint's tensors, the data's content, the input size, the epochs, seed and recipe),
    saved at every epoch's end, and resumed there when called again.

    Returns:
        The transferred state dict and its record: ``from_classes``, ``to_classes``, ``head``,
        ``head_epochs``, ``head_steps``, ``all_epochs``, ``all_steps``, learning rates,
        ``val_before`` and ``val_after`` (validation accuracy; None without a val split).
    """
    path, key = _transfer_path(prepared, cache_dir)
    if path.is_file():
        log.info("transfer of %s found in the cache: %s", prepared.spec.checkpoint, path)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["state_dict"], saved["meta"]["transfer"]
    return train_transfer(prepared, path=path, key=key, on_progress=on_progress)


def _transfer_path(prepared: PreparedBaseline,
                   cache_dir: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Where a transfer is cached, and its key (what it computes from)."""
    spec = prepared.spec
    assert prepared.state is not None
    weights = hashlib.sha256()
    for name in sorted(prepared.state):
        tensor = prepared.state[name].detach().cpu().contiguous()
        weights.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        weights.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    key = json.dumps([spec.model, spec.dataset, "transfer", weights.hexdigest(),
                      prepared.input_size, spec.transfer_head_epochs, spec.transfer_epochs,
                      spec.seed, HEAD_LR, TRANSFER_LR, BATCH_SIZE,
                      data_fingerprint(prepared.data)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = (f"{spec.model}-{_slug(spec.dataset)}-transfer-h{spec.transfer_head_epochs}"
            f"a{spec.transfer_epochs}-s{spec.seed}-{digest}.pt")
    return _cache_dir(cache_dir) / name, key
