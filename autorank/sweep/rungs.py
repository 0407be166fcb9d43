"""The multi-fidelity search in the study: what runs next (a promotion, a new trial, nothing),
claiming a promotion, and recording a rung's result.

The sampler's study holds one Optuna trial per plan, told its first-rung values only, so the
sampler always learns from one fidelity (Ray's OptunaSearch drops intermediate results of a
multi-objective study, and Optuna's pruners refuse one). Each promotion is a trial of a second
study in the same storage, ``<study name>:rungs``, with user attributes ``trial`` (the plan's
trial number) and ``rung``: it is claimed, beats and is failed as interrupted exactly like a
search trial, so a resume or a second driver sees every rung that finished and never runs one
twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Fidelity
from .promotion import RungResult, promotable
from .study import Heartbeat, counts, driver_id, fail_stale, is_interrupted, quiet_optuna

log = logging.getLogger(__name__)

RUNG_STUDY_SUFFIX = ":rungs"
CLAIM_WAIT_S = 10.0  # how long a claim waits for earlier promotions to record what they hold


def open_rung_study(storage: Any, name: str) -> Any:
    """The study of the promotions of study ``name`` (created on first use)."""
    import optuna

    try:
        return optuna.load_study(study_name=name + RUNG_STUDY_SUFFIX, storage=storage)
    except KeyError:
        with quiet_optuna():
            return optuna.create_study(storage=storage, study_name=name + RUNG_STUDY_SUFFIX,
                                       direction="maximize", load_if_exists=True)


@dataclass(frozen=True)
class Job:
    """What a free worker does next: ``new`` (a sampled trial), ``promote`` (trial ``number``
    to ``rung``), ``wait`` (the budget is held by running trials) or ``done``."""

    kind: str
    number: int | None = None
    rung: int = 0


def rung_results(study: Any, rung_study: Any | None, cost_metrics: Sequence[str]) -> tuple[
        list[RungResult], set[tuple[int, int]]]:
    """Every finished rung of the study's trials as :class:`RungResult` (cost: the trial's
    ``cost_metrics``), and the ``(trial, rung)`` pairs that are taken: running now, or failed
    on their own (never retried; an interrupted one may run again)."""
    from optuna.trial import TrialState

    results, cost = [], {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        cost[t.number] = tuple(float(t.user_attrs.get(m, float("nan"))) for m in cost_metrics)
        results.append(RungResult(t.number, 0, float(t.user_attrs.get("val_accuracy", float("nan"))),
                                  cost[t.number]))
    taken: set[tuple[int, int]] = set()
    if rung_study is None:
        return results, taken
    for t in rung_study.get_trials(deepcopy=False):
        if "trial" not in t.user_attrs or "rung" not in t.user_attrs:
            continue
        key = (int(t.user_attrs["trial"]), int(t.user_attrs["rung"]))
        if t.state == TrialState.COMPLETE and key[0] in cost:
            results.append(RungResult(key[0], key[1], float(t.values[0]), cost[key[0]]))
        elif t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and not is_interrupted(t)):
            taken.add(key)
    return results, taken


class Scheduler:
    """Asynchronous successive halving over a study: each call of :meth:`next` answers what a
    free worker does now. A promotion (:func:`autorank.sweep.promotion.promotable`) comes
    before a new trial; new trials stop at ``budget`` finished ones; the search is done when
    the budget is reached, no promotion is left and nothing runs. ``floor`` is the accuracy
    the sampler's ``max_drop`` asks for (None: no constraint).

    A "wait" answer is kept for ``poll_s`` so that a polling runner does not hammer the storage.
    """

    def __init__(self, study: Any, budget: int, *, rung_study: Any | None = None,
                 fidelity: Fidelity | None = None, cost_metrics: Sequence[str] = (),
                 floor: float | None = None, poll_s: float = 2.0) -> None:
        self.study = study
        self.rung_study = rung_study
        self.budget = budget
        self.fidelity = fidelity
        self.cost_metrics = tuple(cost_metrics)
        self.floor = floor
        self.poll_s = poll_s
        self._waiting_since = -float("inf")

    def next(self) -> Job:
        if time.monotonic() - self._waiting_since < self.poll_s:
            return Job("wait")
        fail_stale(self.study)
        if self.rung_study is not None:
            fail_stale(self.rung_study)
        if self.rung_study is not None and self.fidelity is not None and self.fidelity.top > 0:
            results, taken = rung_results(self.study, self.rung_study, self.cost_metrics)
            ready = promotable(results, eta=self.fidelity.eta, top=self.fidelity.top, taken=taken,
                               floor=self.floor)
            if ready:
                return Job("promote", *ready[0])
        finished, running = counts(self.study)
        if finished >= self.budget:
            if running or self._promotions_running():
                self._waiting_since = time.monotonic()
                return Job("wait")
            return Job("done")
        if finished + running >= self.budget:
            self._waiting_since = time.monotonic()
            return Job("wait")
        return Job("new")

    def _promotions_running(self) -> bool:
        return self.rung_study is not None and counts(self.rung_study)[1] > 0


def claim_promotion(rung_study: Any, number: int, rung: int,
                    heartbeat: Heartbeat | None = None) -> Any | None:
    """A running trial of the rung study for promoting trial ``number`` to ``rung``; None when
    an earlier claim (of this driver or another) holds it, which ends this one PRUNED.

    The earlier claim wins. A claim records what it holds right after it is created, so this
    one first waits (at most ``CLAIM_WAIT_S``) until every earlier running claim has done so:
    two drivers that promote the same trial at once agree on which one runs it.
    """
    import optuna

    with quiet_optuna():
        trial = rung_study.ask()
    if heartbeat is not None:
        heartbeat.add(trial._trial_id)
    try:
        held = _hold(rung_study, trial, number, rung)
    except optuna.exceptions.UpdateFinishedTrialError:
        # another driver took this claim for dead (late heartbeat) and failed it as
        # interrupted, which frees the promotion: the scheduler offers it again
        log.warning("promotion claim %d was failed as interrupted before it ran", trial.number)
        held = False
    if not held and heartbeat is not None:
        heartbeat.discard(trial._trial_id)
    return trial if held else None


def _hold(rung_study: Any, trial: Any, number: int, rung: int) -> bool:
    """Record what claim ``trial`` holds; False (and the claim told PRUNED) when an earlier
    claim holds the same promotion."""
    from optuna.trial import TrialState

    trial.set_user_attr("trial", number)
    trial.set_user_attr("rung", rung)
    trial.set_user_attr("driver", driver_id())
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        earlier = [t for t in rung_study.get_trials(deepcopy=False) if t.number < trial.number]
        pending = [t for t in earlier if t.state == TrialState.RUNNING and "rung" not in t.user_attrs]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for t in earlier:
        same = t.user_attrs.get("trial") == number and t.user_attrs.get("rung") == rung
        live = t.state in (TrialState.RUNNING, TrialState.COMPLETE) or (
            t.state == TrialState.FAIL and not is_interrupted(t))
        if same and live:
            trial.set_user_attr("error", f"duplicate of promotion {t.number}: not run")
            rung_study.tell(trial, state=TrialState.PRUNED)
            return False
    return True


def trial_params(study: Any, number: int) -> dict[str, Any]:
    """The sampled parameters of trial ``number`` of the study."""
    return dict(study.get_trials(deepcopy=False)[number].params)
