"""Training loops: evaluate, fine-tune (optionally distilling from a teacher), BN recalibration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ._bn import recalibrate_bn
from ._loop import SCHEDULES, EpochCheckpoint, TrainLoop
from .data import DataBundle
from .distill import TeacherCache, distillation_loss
from .errors import NonFiniteLossError, UserError
from .runtime import configure_threads, in_layout, memory_layout, resolve_device

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "NonFiniteLossError",
    "EpochCheckpoint",
    "TeacherCache",
    "TrainHook",
    "configure_threads",
    "distillation_loss",
    "evaluate",
    "finetune",
    "recalibrate_bn",
    "recover",
    "resolve_device",
]

log = logging.getLogger(__name__)


def evaluate(
    model: nn.Module,
    data: DataBundle,
    split: str = "test",
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    memory_format: str = "auto",
) -> float:
    """Top-1 accuracy of ``model`` on a split, in eval mode; the model's mode is restored.

    Args:
        model: a classifier taking normalised images.
        data: the data bundle.
        split: ``train``, ``val`` or ``test``.
        batch_size: images per forward pass.
        device: where to run (``"auto"`` picks CUDA when available).
        limit: evaluate only the first ``limit`` images.
        memory_format: the layout to run in, as :attr:`FinetuneConfig.memory_format` (NHWC on
            CPU by default: faster there); the model's own layout is restored.

    Returns:
        Accuracy in [0, 1].

    Raises:
        UserError: unknown or empty split.
    """
    dev = resolve_device(device)
    if data.num_examples(split) == 0 or limit == 0:
        raise UserError(f"cannot evaluate on split {split!r}: it has no images")
    was_training = model.training
    model.eval().to(dev)
    layout = memory_layout(memory_format, dev)
    correct = total = 0
    try:
        # the layout changes outside inference mode: else the weights become inference tensors
        with in_layout(model, layout), torch.inference_mode():
            for x, y in data.batches(split, batch_size=batch_size, device=dev, limit=limit):
                if x.dim() == 4:
                    x = x.contiguous(memory_format=layout)
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
    finally:
        model.train(was_training)
    return correct / total


@dataclass(frozen=True)
class FinetuneConfig:
    """The one fine-tune recipe of autorank: what trials, strategies and exports train with.

    :func:`recover` applies all of it (BatchNorm recalibration, then the fine-tune, distilling
    from the dense baseline); :func:`finetune` the training part alone. A fine-tune needs
    exactly one of ``steps`` and ``epochs``.
    """

    steps: int | None = None
    epochs: float | None = None
    lr: float = 0.01  # a fine-tune starts from trained weights: 10x below a from-scratch 0.1
    schedule: str = "cosine"  # "cosine" (to 0 at the last step) or "constant"
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the CIFAR ResNet recipe of He et al. 2016
    batch_size: int = 128
    augment: bool = True  # random crop + flip
    distill: bool = True  # recover(): the dense baseline is the teacher (Hinton et al. 2015)
    kd_alpha: float = 0.9  # weight of the distillation term when a teacher is given
    kd_temperature: float = 4.0  # Hinton et al. 2015 use 1-20; 4 is common for CIFAR
    bn_batches: int = 20  # recover(): BatchNorm recalibration batches first (0: none)
    seed: int = 0
    log_every: int = 50  # steps between log lines (and the window of FinetuneResult.final_loss)
    # "channels_last" trains in NHWC, "contiguous" in NCHW, "auto": NHWC on CPU, where a step
    # was 1.02-1.48x faster over the registered models at 2 threads (1.29-1.72x on compressed
    # ResNet-20s; bench/results/train_speed.md), NCHW elsewhere (not measured there). The
    # model leaves the fine-tune in NCHW either way.
    memory_format: str = "auto"

    def __post_init__(self) -> None:
        if ((self.steps is not None and self.steps < 0) or (self.epochs is not None and self.epochs < 0)
                or self.lr <= 0 or self.batch_size < 1 or self.bn_batches < 0):
            raise UserError("finetune: needs steps >= 0, epochs >= 0, lr > 0, batch_size >= 1, "
                            "bn_batches >= 0")
        if not 0.0 <= self.kd_alpha <= 1.0 or self.kd_temperature <= 0:
            raise UserError("finetune: needs 0 <= kd_alpha <= 1 and kd_temperature > 0")
        memory_layout(self.memory_format, torch.device("cpu"))  # a known name, or UserError
        if self.schedule not in SCHEDULES:
            raise UserError(f"finetune: unknown schedule {self.schedule!r}; expected one of "
                            f"{sorted(SCHEDULES)}")

    @property
    def trains(self) -> bool:
        """Whether the recipe has any training step."""
        return bool(self.steps or self.epochs)


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did: mean loss of its last ``log_every`` steps, steps, time, speed."""

    final_loss: float
    steps: int
    seconds: float
    images_per_s: float


class TrainHook(Protocol):
    """Extra work inside :func:`finetune`'s loop (e.g. the ADMM updates of Yin et al. 2021)."""

    def after_step(self, step: int) -> None:
        """Called after the optimizer step ``step`` (0-based)."""


@dataclass(frozen=True)
class _Extras:
    """What a fine-tune does beside training: distill, hook, checkpoint, progress bar."""

    teacher: TeacherCache | None = None
    hook: TrainHook | None = None
    checkpoint: EpochCheckpoint | None = None
    progress: bool = False


def _resolve_config(config: FinetuneConfig | None, overrides: dict[str, Any]) -> FinetuneConfig:
    base = config or FinetuneConfig()
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"unknown fine-tune options {unknown}; expected some of {sorted(names)}")
    cfg = dataclasses.replace(base, **overrides)
    if (cfg.steps is None) == (cfg.epochs is None):
        raise UserError("give exactly one of steps and epochs")
    return cfg


def _endless(
    data: DataBundle, cfg: FinetuneConfig, gen: torch.Generator, dev: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from data.batches("train", batch_size=cfg.batch_size, shuffle=True,
                                augment=cfg.augment, generator=gen, device=dev)


def _total_steps(cfg: FinetuneConfig, data: DataBundle) -> int:
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None
    return max(1, round(cfg.epochs * math.ceil(len(data) / cfg.batch_size)))


def finetune(
    model: nn.Module,
    data: DataBundle,
    config: FinetuneConfig | None = None,
    *,
    teacher: nn.Module | TeacherCache | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    hook: TrainHook | None = None,
    checkpoint: EpochCheckpoint | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Train ``model`` in place with SGD + momentum and a cosine (or constant) learning rate.

    With a ``teacher``, the loss is Hinton et al.'s (2015) distillation loss (see
    :func:`distillation_loss`). Deterministic on CPU for a given ``seed``: shuffling,
    augmentation and dropout draw from seeded generators, the global RNG is left as it was.

    Args:
        model: the network to train; left in eval mode.
        data: training images come from ``data.train``.
        config: options; any :class:`FinetuneConfig` field can also be passed by keyword
            (``finetune(model, data, steps=100, lr=0.01)``).
        teacher: a frozen model whose logits the student matches, or a :class:`TeacherCache`
            of one (its logits computed once for a stream of batches that repeats).
        device: where to train.
        progress: show a tqdm bar.
        hook: its ``after_step`` runs after every optimizer step.
        checkpoint: the loop is saved there at the end of every epoch, and a state found there
            is resumed: the same batches, learning rates and random draws follow, so the
            weights end as those of a fine-tune that never stopped (on CPU, bit for bit).
        **overrides: :class:`FinetuneConfig` fields.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        UserError: bad options, no training images, a checkpoint with a teacher.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    cfg = _resolve_config(config, overrides)
    dev = resolve_device(device)
    if len(data) == 0:
        raise UserError("cannot fine-tune: the training split has no images")
    total = _total_steps(cfg, data)
    if teacher is not None and checkpoint is not None:
        raise UserError("a fine-tune with a teacher cannot be checkpointed")  # its logit cache
    if isinstance(teacher, nn.Module):
        teacher = TeacherCache(teacher)  # a fresh cache: nothing is reused beyond this call
    if teacher is not None:
        teacher.start(data, cfg, dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # dropout and other in-model randomness
        return _train_loop(model, data, cfg, total, dev,
                           _Extras(teacher, hook, checkpoint, progress))


def _loss(
    model: nn.Module, teacher: TeacherCache | None, step: int, x: torch.Tensor, y: torch.Tensor,
    cfg: FinetuneConfig,
) -> torch.Tensor:
    out = model(x)
    if teacher is None:
        return F.cross_entropy(out, y)
    target = teacher.logits(step, x, y)
    return distillation_loss(out, target, y, alpha=cfg.kd_alpha, t=cfg.kd_temperature)


def _train_loop(
    model: nn.Module, data: DataBundle, cfg: FinetuneConfig, total: int, dev: torch.device,
    extras: _Extras,
) -> FinetuneResult:
    model.to(dev).train()
    layout = memory_layout(cfg.memory_format, dev)
    teacher = extras.teacher.teacher if extras.teacher is not None else None
    with in_layout(model, layout), in_layout(teacher, layout):
        return _train_steps(model, data, cfg, total, dev, extras, layout)


def _train_steps(
    model: nn.Module, data: DataBundle, cfg: FinetuneConfig, total: int, dev: torch.device,
    extras: _Extras, layout: torch.memory_format,
) -> FinetuneResult:
    loop = TrainLoop.make(model, cfg, total, dev)
    per_epoch = math.ceil(len(data) / cfg.batch_size)  # the batches of one pass of _endless
    saved = extras.checkpoint.load() if extras.checkpoint is not None else None
    start = loop.resume(model, saved, per_epoch) if saved is not None else 0
    batches = _endless(data, cfg, loop.gen, dev)
    bar = _progress_bar(total, extras.progress, initial=start)
    recent: list[float] = []
    epoch_loss = [0.0, 0]  # sum, steps
    images, t0 = 0, time.perf_counter()
    for step in range(start, total):
        x, y = next(batches)
        if x.dim() == 4:
            x = x.contiguous(memory_format=layout)
        value = _step(model, loop, extras.teacher, step, (x, y), cfg)
        if extras.hook is not None:
            extras.hook.after_step(step)
        images += len(y)
        recent = (recent + [value])[-cfg.log_every :]
        epoch_loss = [epoch_loss[0] + value, epoch_loss[1] + 1]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
        elif (step + 1) % cfg.log_every == 0:
            log.info("step %d/%d loss %.4f", step + 1, total, sum(recent) / len(recent))
        if extras.checkpoint is not None and ((step + 1) % per_epoch == 0 or step + 1 == total):
            extras.checkpoint.save(loop.state(model, step + 1), math.ceil((step + 1) / per_epoch),
                                   epoch_loss[0] / epoch_loss[1])
            epoch_loss = [0.0, 0]
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    model.eval()
    final = sum(recent) / len(recent) if recent else float("nan")
    return FinetuneResult(final, total, seconds, images / max(seconds, 1e-9))


def _step(model: nn.Module, loop: TrainLoop, teacher: TeacherCache | None, step: int,
          batch: tuple[torch.Tensor, torch.Tensor], cfg: FinetuneConfig) -> float:
    """One optimizer step; returns its loss.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite.
    """
    x, y = batch
    loss = _loss(model, teacher, step, x, y, cfg)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(f"loss is {value} at step {step + 1}/{loop.total}; lower the lr "
                                 f"(now {loop.sched.get_last_lr()[0]:.3g}) or check the model")
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    loop.opt.step()
    loop.sched.step()
    return value


def _progress_bar(total: int, enabled: bool, *, initial: int = 0) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: a live bar on a terminal, nothing in logs and CI (no line per update)
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=None)


def recover(
    model: nn.Module,
    data: DataBundle,
    recipe: FinetuneConfig,
    *,
    teacher: nn.Module | TeacherCache | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    hook: TrainHook | None = None,
) -> FinetuneResult | None:
    """What follows every compression, in place: BatchNorm recalibration on
    ``recipe.bn_batches`` training batches, then the fine-tune, distilling from ``teacher``
    (the dense baseline) when ``recipe.distill``.

    Trials, strategies and exports all train a compressed model through this one function.

    Returns:
        The fine-tune's result, or None when the recipe has no training step.

    Raises:
        UserError, NonFiniteLossError: as :func:`finetune`.
    """
    if recipe.bn_batches:
        recalibrate_bn(model, data, batches=recipe.bn_batches, batch_size=recipe.batch_size,
                       device=device)
    if not recipe.trains:
        return None
    result = finetune(model, data, recipe, teacher=teacher if recipe.distill else None,
                      device=device, progress=progress, hook=hook)
    log.info("fine-tuned %d steps in %.0f s, final loss %.3f", result.steps, result.seconds,
             result.final_loss)
    return result
