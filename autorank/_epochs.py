"""A training of the dense model (a baseline from scratch, a transfer to other classes) that
reports its progress and is saved at every epoch's end, to resume where it stopped."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _env
from ._io import crash_point
from .data import DataBundle
from .engine import evaluate

log = logging.getLogger("autorank.baseline")

TIMED_STEPS = 5  # steps timed (after the first, which warms up) before the estimate


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
    kind: str = "baseline"  # what trains: "baseline" (from scratch) or "transfer"
    detail: str = ""  # at the start: what it does, in words ("" for a baseline)


# Gets a BaselineProgress, or a plain line to show (e.g. that the images were resized).
ProgressCallback = Callable[[BaselineProgress | str], None]


def say(callback: ProgressCallback | None, line: str) -> None:
    """Show ``line`` through ``callback``, else log it at INFO."""
    if callback is not None:
        callback(line)
    else:
        log.info("%s", line)


def save_atomic(path: Path, obj: Any) -> None:
    """``torch.save`` through a temporary file (one per process) and a rename: a crash never
    leaves a half-written file, and two processes training the same baseline do not collide."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclasses.dataclass
class Reporter:
    """Reports a training: the start with an estimate, then every epoch (the engine's
    ``TrainHook``). Steps count from the start of the whole training: ``offset`` is added to
    those of a later phase (a transfer's all-layers one)."""

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
    kind: str = "baseline"
    offset: int = 0

    def after_step(self, step: int) -> None:
        step += self.offset
        if self.first is None:
            self.first = (step, time.perf_counter())
        last = step + 1 == self.epochs * self.per_epoch
        if not self.announced and (step - self.first[0] >= TIMED_STEPS or last):
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
            loss, val, self.kind)
        if self.callback is not None:
            self.callback(done)
        elif loss is None:
            log.info("training a %s %s: %d epochs on %s, about %.0f s", self.model, self.kind,
                     self.epochs - self.resumed_from, self.dataset, done.eta_s)
        else:
            log.info("%s epoch %d/%d: loss %.4f, val accuracy %s", self.kind, done.epoch,
                     self.epochs, loss, "-" if val is None else f"{val:.4f}")


class EpochSaver:
    """The engine's ``EpochCheckpoint`` for a baseline: its loop saved at every epoch's end
    under the cache key, the validation accuracy reported."""

    def __init__(self, path: Path, key: str, model: nn.Module, data: DataBundle,
                 reporter: Reporter, keep: tuple[Path, dict[str, Any]] | None = None) -> None:
        self.path, self.key, self.model, self.data, self.reporter = path, key, model, data, reporter
        self.keep = keep  # (folder, meta): every epoch's weights kept there as a checkpoint

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            log.warning("%s training starts over: its saved epoch %s is unreadable (%s)",
                        self.reporter.kind, self.path, err)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            return None  # another baseline's (an explicit --out reused)
        steps = int(state["step"]) + self.reporter.offset
        self.reporter.resumed_from = steps // self.reporter.per_epoch
        log.info("%s: resuming after epoch %d from %s", self.reporter.kind,
                 self.reporter.resumed_from, self.path)
        return state

    def save(self, state: dict[str, Any], epoch: int, loss: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(self.path, {**state, "key": self.key})
        val = evaluate(self.model, self.data, "val", device=self.reporter.device) \
            if len(self.data.val) else None
        steps = int(state["step"]) + self.reporter.offset
        if self.keep is not None:
            self._keep(epoch, loss, val)
        self.reporter.report(steps, loss, val)
        inject_fault(f"{self.reporter.kind}-epoch-{-(-steps // self.reporter.per_epoch)}")

    def _keep(self, epoch: int, loss: float, val: float | None) -> None:
        """This epoch's weights as a checkpoint of their own (``epoch-NNN.pt``), loadable like
        the final one: what the model was at every epoch, for measurements along training."""
        assert self.keep is not None
        folder, meta = self.keep
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_atomic(folder / f"epoch-{epoch:03d}.pt", {"state_dict": state, "meta": {
            **meta, "epoch": epoch, "loss": loss,
            "val_accuracy": -1.0 if val is None else val}})


def inject_fault(point: str) -> None:
    """``$AUTORANK_INJECT_FAULT``: ``driver:baseline-epoch-K`` SIGKILLs the process after epoch
    K is saved, ``raise:baseline-epoch-K`` raises there (tests of the resume; ``transfer-``
    for a transfer's epochs)."""
    crash_point(point)
    if ("raise", point) in _env.injected_faults():
        raise RuntimeError(f"injected fault at {point}")
