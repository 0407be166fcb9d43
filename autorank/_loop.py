"""The state of a training loop: optimizer, LR schedule, batch generator and RNG, saved at
an epoch's end and restored to resume (see :func:`autorank.engine.finetune`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from .errors import UserError

SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "cosine": lambda step, total: 0.5 * (1.0 + math.cos(math.pi * step / total)),
    "constant": lambda step, total: 1.0,
}


class Recipe(Protocol):
    """The options :class:`TrainLoop` reads (those of ``engine.FinetuneConfig``)."""

    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def schedule(self) -> str: ...
    @property
    def seed(self) -> int: ...


class EpochCheckpoint(Protocol):
    """Where :func:`finetune` keeps its loop at the end of every epoch (one pass over the
    training images), and the state a stopped fine-tune resumes from."""

    def load(self) -> dict[str, Any] | None:
        """The state saved last (as :meth:`save` got it), or None to start at step 0."""

    def save(self, state: dict[str, Any], epoch: int, loss: float) -> None:
        """Keep ``state``: ``epoch`` epochs are done, ``loss`` is the last one's mean loss."""


@dataclass(frozen=True)
class TrainLoop:
    """The optimizer, LR schedule and batch generator of one fine-tune: with the model's
    weights and the global RNG, everything a resume restores to continue bit for bit."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    dev: torch.device
    total: int

    @classmethod
    def make(cls, model: nn.Module, cfg: Recipe, total: int, dev: torch.device) -> TrainLoop:
        """SGD with momentum and weight decay, the recipe's LR schedule over ``total`` steps,
        and a batch generator seeded with the recipe's seed."""
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        factor = SCHEDULES[cfg.schedule]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: factor(step, total))
        return cls(opt, sched, torch.Generator().manual_seed(cfg.seed), dev, total)

    def state(self, model: nn.Module, step: int) -> dict[str, Any]:
        """The loop after ``step`` steps, on the CPU (it loads with ``weights_only=True``)."""
        state = {"step": step, "total": self.total,
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.dev)
        return state

    def resume(self, model: nn.Module, state: dict[str, Any], per_epoch: int) -> int:
        """Restore ``state`` (from :meth:`state`); returns the step to go on from.

        Raises:
            UserError: the state is of another schedule, or not at the end of an epoch.
        """
        step = int(state["step"])
        if state["total"] != self.total or (step % per_epoch and step != self.total):
            raise UserError(f"cannot resume the fine-tune: its saved state is at step {step} of "
                            f"{state['total']}, not at an epoch's end of this {self.total}-step one")
        model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.dev.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.dev)
        return step
