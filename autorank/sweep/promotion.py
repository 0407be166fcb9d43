"""Multi-fidelity search: rungs of fine-tune steps and the asynchronous, multi-objective
promotion rule.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020): a
trial is judged after ``min_steps`` of fine-tuning; when a worker is free it continues the
best trial of a rung that has not gone on yet (the top ``1/eta`` of the rung) to ``eta``
times as many steps, and otherwise starts a new trial, so no worker waits for a rung to fill.
Unlike ASHA proper, no more than ``1/eta`` of a rung ever goes on, so the compute is
synchronous halving's at most (see :func:`promotable`).
With several objectives "best" is MO-ASHA's (Schmucker et al., "Multi-objective Asynchronous
Successive Halving", 2021, NSGA-II selection): non-dominated sorting of (rung accuracy, cost),
ties within a front broken by crowding distance. A plan's cost (params, FLOPs, latency) is
known before any training, so only the accuracy depends on the rung.

The rule is :func:`promotable`, a pure function of the results recorded so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .pareto import pareto_mask


@dataclass(frozen=True)
class RungResult:
    """One trial's result at one rung: its validation accuracy there and its cost vector (each
    entry minimised; the same at every rung)."""

    number: int
    rung: int
    accuracy: float
    cost: tuple[float, ...]


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance (Deb et al. 2002) of each row of ``values`` (n x k) within
    its front: the sum over objectives of the normalised gap between its neighbours; the ends
    of each objective get infinity."""
    n, k = values.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(values[:, j], kind="stable")
        span = values[order[-1], j] - values[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            gaps = (values[order[2:], j] - values[order[:-2], j]) / span
            distance[order[1:-1]] += gaps
    return distance


def rank_by_dominance(values: np.ndarray) -> list[int]:
    """Row indices of ``values`` (every column minimised), best first: non-dominated sorting
    into fronts, and within a front by crowding distance (larger first), then by index."""
    remaining = np.arange(len(values))
    order: list[int] = []
    while len(remaining):
        mask = pareto_mask(values[remaining])
        front = remaining[mask]
        crowd = crowding_distance(values[front])
        order += [int(front[i]) for i in sorted(range(len(front)), key=lambda i: (-crowd[i], front[i]))]
        remaining = remaining[~mask]
    return order


def promotable(results: Iterable[RungResult], *, eta: int, top: int,
               taken: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """The ``(trial number, next rung)`` pairs that may be started now, in the order to start
    them: the deepest rung first, best first within it.

    A trial at rung ``r < top`` is promotable when it is among the best
    ``k = floor(n_r / eta)`` of the ``n_r`` trials with a result at rung ``r`` (ranked by
    :func:`rank_by_dominance` on ``(-accuracy, *cost)``) and has not gone on to ``r + 1`` yet:
    no result there, and ``(number, r + 1)`` not in ``taken`` (running now, or claimed); and
    fewer than ``k`` of the rung's trials have gone on so far.

    The last condition bounds the compute. ASHA proper promotes every trial that is ever in a
    rung's top ``1/eta``; while a rung is small its top changes as it fills, so more than
    ``1/eta`` of it goes on (measured: a 47-plan ResNet-20 search with eta 4 took 14 plans to
    rung 1 and 5 to rung 2, 41.9 epochs where synchronous halving costs 30). Here at most
    ``floor(n_r / eta)`` go on at any time, so a search of ``n`` plans never costs more than
    ``n`` trials at rung 0, ``n / eta`` at rung 1, ...; a trial that enters the top after the
    slots are used waits until the rung grows.

    Pure: the same results give the same answer however often it is asked.
    """
    by_rung: dict[int, list[RungResult]] = {}
    for result in results:
        if math.isfinite(result.accuracy):
            by_rung.setdefault(result.rung, []).append(result)
    done = {(r.number, r.rung) for rs in by_rung.values() for r in rs}
    busy = set(taken) | done
    out: list[tuple[int, int]] = []
    for rung in sorted(by_rung, reverse=True):
        if rung >= top:
            continue
        members = sorted(by_rung[rung], key=lambda r: r.number)
        gone_on = sum((m.number, rung + 1) in busy for m in members)
        slots = len(members) // eta - gone_on
        if slots <= 0:
            continue
        values = np.array([(-m.accuracy, *m.cost) for m in members], dtype=np.float64)
        best = [members[i] for i in rank_by_dominance(values)[:len(members) // eta]]
        out += [(m.number, rung + 1) for m in best if (m.number, rung + 1) not in busy][:slots]
    return out


def rung_accuracies(results: Sequence[RungResult]) -> dict[int, dict[int, float]]:
    """``{trial number: {rung: accuracy}}`` of ``results``."""
    out: dict[int, dict[int, float]] = {}
    for r in results:
        out.setdefault(r.number, {})[r.rung] = r.accuracy
    return out
