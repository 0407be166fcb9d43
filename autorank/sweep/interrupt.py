"""A search stopped by the user (Ctrl-C, or SIGTERM forwarded by the CLI): what it records, and
the exception that tells the caller.

On an interrupt the trials this driver runs are failed as interrupted (``study.INTERRUPTED``),
the state in which a resume samples anew in their place; finished trials and rungs stay as
they are. A finished trial's result is recorded with SIGINT held (:func:`held_interrupts`), so
an interrupt never lands between its metrics and its state.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .rundir import RunDir
from .rungs import RUNG_STUDY_SUFFIX
from .study import INTERRUPTED, counts, driver_id
from .table import trials_frame, write_frame

log = logging.getLogger(__name__)


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped on an interrupt; what finished is recorded and ``resume`` goes on.

    Attributes:
        path: the run directory.
        finished: trials of the study that ran to an end (complete, or failed on their own).
        budget: the search's budget.
        runner: the runner it used (``ray`` or ``local``).
    """

    def __init__(self, path: Path, finished: int, budget: int, runner: str) -> None:
        super().__init__(f"interrupted: {finished} of {budget} trials finished")
        self.path = path
        self.finished = finished
        self.budget = budget
        self.runner = runner


@contextmanager
def held_interrupts(*, deliver: bool = True) -> Iterator[None]:
    """Hold SIGINT for the block; one that came is raised as ``KeyboardInterrupt`` at its end
    (with ``deliver``), or dropped.

    Off the main thread (where no handler can be set) the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and deliver:
        raise KeyboardInterrupt


def fail_own_running(study: Any, why: str) -> list[int]:
    """Fail as interrupted the trials of the study that this driver left running; their numbers.

    Trials of other drivers on the same study are left alone: they may still be alive.
    """
    import optuna
    from optuna.trial import TrialState

    me, failed = driver_id(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("driver") != me:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", f"{INTERRUPTED}: {why}")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it ended meanwhile
        failed.append(t.number)
    return failed


def _studies(storage: Any, name: str) -> tuple[Any | None, Any | None]:
    """The search's study and its rung study, those of them that exist."""
    import optuna

    found: list[Any | None] = []
    for study_name in (name, name + RUNG_STUDY_SUFFIX):
        try:
            found.append(optuna.load_study(study_name=study_name, storage=storage))
        except KeyError:
            found.append(None)
    return found[0], found[1]


def record_interrupt(storage: Any, study_name: str, *, run: RunDir, budget: int,
                     runner: str) -> SearchInterrupted:
    """After an interrupt: fail this driver's running trials and promotions as interrupted and
    rewrite ``trials.csv`` (a second Ctrl-C is dropped meanwhile); returns the exception that
    reports the stop."""
    with held_interrupts(deliver=False):
        study, rung_study = _studies(storage, study_name)
        if study is None:  # stopped before the study was opened (e.g. training the baseline)
            return SearchInterrupted(run.path, 0, budget, runner)
        failed = [n for s in (study, rung_study) if s is not None
                  for n in fail_own_running(s, "the search was interrupted")]
        write_frame(run.trials, trials_frame(study, rung_study))
        finished = counts(study)[0]
    if failed:
        log.info("trial(s) %s failed as interrupted", sorted(set(failed)))
    return SearchInterrupted(run.path, finished, budget, runner)
