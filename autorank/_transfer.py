"""The training of a transfer: a checkpoint for other classes fitted to the data's (see
:func:`autorank.baseline.transfer_baseline`, which caches it)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ._epochs import BaselineProgress, EpochSaver, ProgressCallback, Reporter, save_atomic
from .data import DataBundle
from .engine import evaluate, finetune, resolve_device
from .models import load_weights

if TYPE_CHECKING:
    from .baseline import PreparedBaseline

log = logging.getLogger("autorank.baseline")

HEAD_LR = 0.1  # the new head learns from scratch: the from-scratch recipe's lr
TRANSFER_LR = 0.01  # then all layers, from trained weights: the fine-tune recipe's lr
BATCH_SIZE = 128


def train_transfer(prepared: PreparedBaseline, *, path: Path, key: str,
                   on_progress: ProgressCallback | None = None,
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the transfer of ``prepared`` and save it to ``path``: the new head alone, then
    all layers; every epoch saved beside ``path`` under ``key``, and resumed from there.

    Returns:
        The state dict and the transfer's record (see ``transfer_baseline``).
    """
    spec, data, model, fit = prepared.spec, prepared.data, prepared.model, prepared.fit
    assert prepared.state is not None and fit is not None
    new_head = {k: v for k, v in model.state_dict().items() if k.startswith(f"{fit.head}.")}
    load_weights(model, {**prepared.state, **new_head}, source=f"checkpoint {spec.checkpoint!r}")
    device = str(resolve_device(spec.device))
    per_epoch = math.ceil(len(data) / BATCH_SIZE)
    head_steps, all_steps = spec.transfer_head_epochs * per_epoch, spec.transfer_epochs * per_epoch
    record: dict[str, Any] = {
        "from_classes": fit.classes, "to_classes": data.num_classes, "head": fit.head,
        "head_epochs": spec.transfer_head_epochs, "head_steps": head_steps, "head_lr": HEAD_LR,
        "all_epochs": spec.transfer_epochs, "all_steps": all_steps, "lr": TRANSFER_LR,
        "val_before": _val(model, data, device)}
    reporter = Reporter(spec.model, spec.dataset, device, spec.transfer_head_epochs +
                        spec.transfer_epochs, per_epoch, len(data), on_progress, announced=True,
                        kind="transfer")
    head_saver, all_saver = (EpochSaver(path.with_name(f".{path.name}.{phase}.partial"), key,
                                        model, data, reporter) for phase in ("head", "all"))
    _announce(prepared, reporter, head_saver, all_saver, head_steps, all_steps)
    _train_phases(prepared, reporter, (head_saver, all_saver), (head_steps, all_steps))
    record["val_after"] = _val(model, data, device)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(path, {"state_dict": state, "meta": {
        "model": spec.model, "dataset": spec.dataset, "checkpoint": spec.checkpoint,
        "input_size": prepared.input_size, "seed": spec.seed, "transfer": record}})
    for saver in (head_saver, all_saver):
        saver.path.unlink(missing_ok=True)
    log.info("transfer of %s: val accuracy %s, saved to %s", spec.checkpoint,
             record["val_after"], path)
    return state, record


def _train_phases(prepared: PreparedBaseline, reporter: Reporter,
                  savers: tuple[EpochSaver, EpochSaver], steps: tuple[int, int]) -> None:
    """The head alone (the other layers frozen), then all layers, each saved by its saver."""
    spec, data, model, fit = prepared.spec, prepared.data, prepared.model, prepared.fit
    assert fit is not None
    frozen = [p for name, p in model.named_parameters() if not name.startswith(f"{fit.head}.")]
    recipe: dict[str, Any] = {"batch_size": BATCH_SIZE, "seed": spec.seed,
                              "device": reporter.device, "progress": spec.progress,
                              "hook": reporter}
    if steps[0]:
        for p in frozen:
            p.requires_grad_(False)
        try:
            finetune(model, data, steps=steps[0], lr=HEAD_LR, checkpoint=savers[0], **recipe)
        finally:
            for p in frozen:
                p.requires_grad_(True)
    reporter.offset = steps[0]
    if steps[1]:
        finetune(model, data, steps=steps[1], lr=TRANSFER_LR, checkpoint=savers[1], **recipe)


def _val(model: nn.Module, data: DataBundle, device: str) -> float | None:
    return evaluate(model, data, "val", device=device) if len(data.val) else None


def _announce(prepared: PreparedBaseline, reporter: Reporter, head_saver: EpochSaver,
              all_saver: EpochSaver, head_steps: int, all_steps: int) -> None:
    """Say what the transfer does and about how long it takes (what a stopped one left)."""
    spec, data, fit = prepared.spec, prepared.data, prepared.fit
    assert fit is not None
    done = 0
    for saver, offset in ((head_saver, 0), (all_saver, head_steps)):
        reporter.offset = offset
        saved = saver.load()
        done = offset + int(saved["step"]) if saved is not None else done
    reporter.offset = 0
    per_image = _step_seconds(prepared.model, data, reporter.device)
    images = min(BATCH_SIZE, len(data))
    # a head-only step is about a forward pass: a third of a step through all layers
    left = max(0, head_steps - done) / 3 + all_steps - max(0, done - head_steps)
    alone = spec.transfer_head_epochs
    detail = (f"fitting the checkpoint to {data.num_classes} classes (its {fit.head} has "
              f"{fit.classes}): a new {fit.head}, trained {alone} epoch{'s' * (alone != 1)} "
              f"alone, then {spec.transfer_epochs} with all layers")
    event = BaselineProgress(spec.model, spec.dataset, reporter.device, reporter.epochs,
                             len(data), reporter.resumed_from, reporter.resumed_from, 0.0,
                             per_image * images * left, kind="transfer", detail=detail)
    if reporter.callback is not None:
        reporter.callback(event)
    else:
        log.info("%s, on %s: about %.0f s", detail, spec.dataset, event.eta_s)


def _step_seconds(model: nn.Module, data: DataBundle, device: str) -> float:
    """Seconds per image of a training step through all layers, timed on a few images."""
    dev = torch.device(device)
    x, y = next(data.batches("train", batch_size=min(8, len(data)), device=dev))
    was_training = model.training
    model.to(dev).eval()  # BatchNorm's running statistics stay as they are
    seconds = []
    for _ in range(2):  # the first warms up
        began = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds.append(time.perf_counter() - began)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return seconds[-1] / len(y)
