"""The dense model a search or a strategy starts from, and the data split it is judged on;
training one from scratch when there is no checkpoint, with an on-disk cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _env
from ._io import crash_point
from .data import DataBundle, get_data
from .engine import evaluate, finetune, resolve_device
from .errors import UserError
from .models import get_model, get_model_spec

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BaselineProgress:
    """Where the training of a baseline stands: reported once its first few steps are timed
    (``loss`` None: the start, with the estimate), then after every epoch."""

    model: str
    dataset: str
    device: str
    epochs: int
    train_images: int
    epoch: int  # epochs done
    resumed_from: int  # epochs done before this process went on (0: a fresh start)
    elapsed_s: float  # since this process began
    eta_s: float  # estimated time left (at the start: of all this process will train)
    loss: float | None = None  # the epoch's mean training loss
    val_accuracy: float | None = None  # after the epoch, on the validation split


ProgressCallback = Callable[[BaselineProgress], None]


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


def load_baseline(spec: BaselineSpec, *, on_progress: ProgressCallback | None = None,
                  ) -> tuple[nn.Module, DataBundle]:
    """The trained dense model (in eval mode) and its data.

    Images the model cannot take are refused before a baseline is trained. A baseline trained
    here reports its progress to ``on_progress`` (see :func:`train_baseline`).

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
                                        progress=spec.progress, on_progress=on_progress))
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


def _key(model_name: str, dataset: str, *, epochs: int, seed: int, lr: float, batch_size: int,
         content: str) -> str:
    return json.dumps([model_name, dataset, epochs, seed, lr, batch_size, content])


def baseline_path(
    model_name: str, dataset: str, *, epochs: int, seed: int, lr: float, batch_size: int,
    cache_dir: str | os.PathLike[str] | None = None, content: str = "",
) -> Path:
    """Where :func:`train_baseline` caches a baseline: a readable name plus a hash of the key,
    which holds the data's ``content`` (:func:`data_fingerprint`)."""
    key = _key(model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
               content=content)
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
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Train a registered model from scratch and save ``{"state_dict", "meta"}``.

    The recipe of He et al. 2016 for CIFAR: SGD momentum 0.9, weight decay 5e-4, cosine LR
    from ``lr``, random crop + flip. Training uses the train split minus the seeded 10 %
    validation split, so that split stays clean for judging compressed models. With
    ``out=None`` the file is cached under ``cache_dir`` (default ``$AUTORANK_CACHE_DIR/
    baselines`` or ``~/.cache/autorank/baselines``), keyed by (model, data set name and
    content, epochs, seed, lr, batch size), and an existing file is returned without training.

    Every epoch's end is saved beside the checkpoint (``.<name>.partial``, with the same key):
    training stopped in any way resumes there when called again, and ends with the weights an
    uninterrupted run gives (on CPU, bit for bit). ``on_progress`` gets a
    :class:`BaselineProgress` after the first few steps (with the time estimate) and after
    every epoch (loss, validation accuracy); without it they are logged at INFO.

    Returns:
        The checkpoint path; it loads with ``torch.load(..., weights_only=True)``.

    Raises:
        UserError: unknown model or data set, ``epochs < 1``.
    """
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    spec = get_model_spec(model_name)
    data = get_data(dataset, data_dir=data_dir, seed=seed, mean=spec.mean, std=spec.std)
    content = data_fingerprint(data)
    path = Path(out) if out is not None else baseline_path(
        model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
        cache_dir=cache_dir, content=content)
    if out is None and path.is_file():
        log.info("baseline %s found in the cache: %s", model_name, path)
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weight initialisation
        model = get_model(model_name, num_classes=data.num_classes)
    key = _key(model_name, dataset, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
               content=content)
    saver = _EpochSaver(path.with_name(f".{path.name}.partial"), key, model, data, _Reporter(
        model_name, dataset, str(resolve_device(device)), epochs,
        math.ceil(len(data) / batch_size), len(data), on_progress))
    finetune(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
             device=device, progress=progress, hook=saver.reporter, checkpoint=saver)
    meta = {"model": model_name, "dataset": dataset, "epochs": epochs, "seed": seed,
            "lr": lr, "batch_size": batch_size, "num_classes": data.num_classes,
            "val_accuracy": evaluate(model, data, "val", device=device) if len(data.val) else -1.0,
            "test_accuracy": evaluate(model, data, "test", device=device)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, {"state_dict": state, "meta": meta})
    saver.path.unlink(missing_ok=True)
    log.info("baseline %s: test accuracy %.4f, saved to %s",
             model_name, meta["test_accuracy"], path)
    return path


def _save(path: Path, obj: Any) -> None:
    """``torch.save`` through a temporary file (one per process) and a rename: a crash never
    leaves a half-written file, and two processes training the same baseline do not collide."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


_TIMED_STEPS = 5  # steps timed (after the first, which warms up) before the estimate


@dataclasses.dataclass
class _Reporter:
    """Reports a baseline's training: the start with an estimate, then every epoch (the
    engine's ``TrainHook``)."""

    model: str
    dataset: str
    device: str
    epochs: int
    per_epoch: int  # steps
    train_images: int
    callback: ProgressCallback | None
    resumed_from: int = 0
    began: float = dataclasses.field(default_factory=time.perf_counter)
    first: tuple[int, float] | None = None  # the first step of this process, when it ended
    announced: bool = False

    def after_step(self, step: int) -> None:
        if self.first is None:
            self.first = (step, time.perf_counter())
        last = step + 1 == self.epochs * self.per_epoch
        if not self.announced and (step - self.first[0] >= _TIMED_STEPS or last):
            self.announced = True
            self.report(step + 1)

    def report(self, steps: int, loss: float | None = None, val: float | None = None) -> None:
        now, total = time.perf_counter(), self.epochs * self.per_epoch
        first, ended = self.first or (0, self.began)
        timed = steps - first - 1
        per_step = (now - ended) / timed if timed > 0 else now - self.began
        done = BaselineProgress(
            self.model, self.dataset, self.device, self.epochs, self.train_images,
            steps // self.per_epoch if loss is not None else self.resumed_from, self.resumed_from,
            now - self.began, per_step * (total - (steps if loss is not None else first)),
            loss, val)
        if self.callback is not None:
            self.callback(done)
        elif loss is None:
            log.info("training a %s baseline: %d epochs on %s, about %.0f s", self.model,
                     self.epochs - self.resumed_from, self.dataset, done.eta_s)
        else:
            log.info("baseline epoch %d/%d: loss %.4f, val accuracy %s", done.epoch, self.epochs,
                     loss, "-" if val is None else f"{val:.4f}")


class _EpochSaver:
    """The engine's ``EpochCheckpoint`` for a baseline: its loop saved at every epoch's end
    under the cache key, the validation accuracy reported."""

    def __init__(self, path: Path, key: str, model: nn.Module, data: DataBundle,
                 reporter: _Reporter) -> None:
        self.path, self.key, self.model, self.data, self.reporter = path, key, model, data, reporter

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            log.warning("baseline training starts over: its saved epoch %s is unreadable (%s)",
                        self.path, err)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            return None  # another baseline's (an explicit --out reused)
        self.reporter.resumed_from = int(state["step"]) // self.reporter.per_epoch
        log.info("baseline: resuming after epoch %d from %s", self.reporter.resumed_from,
                 self.path)
        return state

    def save(self, state: dict[str, Any], epoch: int, loss: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _save(self.path, {**state, "key": self.key})
        val = evaluate(self.model, self.data, "val", device=self.reporter.device) \
            if len(self.data.val) else None
        self.reporter.report(int(state["step"]), loss, val)
        _inject_fault(f"baseline-epoch-{epoch}")


def _inject_fault(point: str) -> None:
    """``$AUTORANK_INJECT_FAULT``: ``driver:baseline-epoch-K`` SIGKILLs the process after epoch
    K is saved, ``raise:baseline-epoch-K`` raises there (tests of the resume)."""
    crash_point(point)
    if ("raise", point) in _env.injected_faults():
        raise RuntimeError(f"injected fault at {point}")
