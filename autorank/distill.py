"""Knowledge distillation from the dense baseline: the loss, and a teacher whose logits are
kept for a stream of batches that repeats (every trial of a search fine-tunes on the same one).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataBundle

if TYPE_CHECKING:
    from .engine import FinetuneConfig

__all__ = ["TeacherCache", "distillation_loss"]


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *, alpha: float, t: float
) -> torch.Tensor:
    """Knowledge-distillation loss of Hinton et al. 2015, "Distilling the Knowledge in a Neural
    Network": ``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, target)``,
    with ``p = softmax(logits / T)``; the ``T^2`` keeps gradient scale independent of ``T``.
    """
    soft = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True)
    return alpha * t * t * soft + (1.0 - alpha) * F.cross_entropy(student, target)


class TeacherCache:
    """A frozen teacher whose logits are kept per training step, for fine-tunes that repeat.

    Every trial of a search fine-tunes on the same seeded stream of batches (same data, seed,
    batch size and augmentation), so the dense teacher's logits at step k are the same in every
    trial: one process computes them once and later fine-tunes skip the teacher's forward pass.
    A stream is told apart by its data bundle, seed, batch size, augmentation and device, and
    each step's labels are checked, so a different stream is never served stale logits. The
    teacher must not change while the cache is in use.

    A multi-fidelity search fine-tunes each rung on a stream of its own (one seed per rung):
    the cache keeps the last ``max_streams`` streams.
    """

    def __init__(self, teacher: nn.Module, *, max_streams: int = 8) -> None:
        self.teacher = teacher
        self.max_streams = max_streams
        self._data: weakref.ref[DataBundle] | None = None
        self._streams: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (labels, logits)
        self.hits = 0  # steps served from the cache (for tests and benches)

    def start(self, data: DataBundle, cfg: FinetuneConfig, dev: torch.device) -> None:
        """Begin a fine-tune on ``data`` with ``cfg``: serve the stream's cached logits, if any."""
        stream = (cfg.seed, cfg.batch_size, cfg.augment, str(dev))
        if self._data is None or self._data() is not data:
            self._data, self._streams = weakref.ref(data), {}
        self._steps = self._streams.pop(stream, [])
        self._streams[stream] = self._steps  # the most recent last
        while len(self._streams) > self.max_streams:
            del self._streams[next(iter(self._streams))]
        self.teacher.eval().to(dev)

    def logits(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for batch ``x`` (labels ``y``) at ``step`` of the stream."""
        if step < len(self._steps) and torch.equal(self._steps[step][0], y):
            self.hits += 1
            return self._steps[step][1]
        with torch.no_grad():
            out = self.teacher(x)
        if step == len(self._steps):
            self._steps.append((y.detach().clone(), out.detach()))
        elif step < len(self._steps):  # labels differ: the stream is not the one cached
            del self._steps[step:]
            self._steps.append((y.detach().clone(), out.detach()))
        return out
