"""The Optuna study one or more drivers share: join it, keep a heartbeat, count its trials,
never run a plan twice.

Several drivers (``autorank search`` processes, e.g. on two machines) may work on one study in
one storage. Each driver asks a trial only while the study's finished plus running trials are
under the budget, and ends when the study holds ``budget`` finished trials (and, in a
multi-fidelity search, no promotion is left: ``rungs.Scheduler``), so both see the same trials
at the end. A driver records a heartbeat for each trial it runs (Optuna's
``RDBStorage(heartbeat_interval=...)``); a trial whose heartbeat stops is failed by any driver
through ``optuna.storages.fail_stale_trials``. A trial of a driver on this machine whose process
is gone is failed at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from ..types import plan_to_json

log = logging.getLogger(__name__)

DUPLICATE = "duplicate of trial"
INTERRUPTED = "interrupted"
_HOST = socket.gethostname()


def driver_id() -> str:
    """This process as a driver: ``host:pid:start`` (the start time tells a reused pid apart)."""
    return f"{_HOST}:{os.getpid()}:{int(psutil.Process().create_time())}"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's notes that heartbeats are meant for ``Study.optimize`` (autorank records
    them itself around ask and tell) and that ``fail_stale_trials`` is experimental."""
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


def open_study(storage: Any, name: str, directions: list[Any],
               sampler_for: Callable[[bool], Any]) -> tuple[Any, bool]:
    """Create the study, or join it when it exists; returns it and whether this call created it.

    Creation is one insert under the storage's unique study name, so of two drivers started
    together exactly one creates (and seeds) the study. ``sampler_for(created)`` builds the sampler.
    """
    import optuna

    try:
        return optuna.create_study(storage=storage, study_name=name, directions=directions,
                                   sampler=sampler_for(True)), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler_for(False)), False


def heartbeat_enabled(study: Any) -> bool:
    """Whether the study's storage records heartbeats (an ``RDBStorage`` given an interval)."""
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None


def is_interrupted(trial: Any) -> bool:
    """A failed trial that did not end on its own: its driver stopped (no result was recorded)."""
    from optuna.trial import TrialState

    error = trial.user_attrs.get("error")
    return trial.state == TrialState.FAIL and (error is None or str(error).startswith(INTERRUPTED))


def _driver_gone(driver: str) -> bool:
    host, _, rest = driver.partition(":")
    pid, _, start = rest.partition(":")
    if host != _HOST or not pid.isdigit():
        return False
    try:
        return int(psutil.Process(int(pid)).create_time()) != int(start or 0)
    except psutil.NoSuchProcess:
        return True


def _fail(study: Any, trial: Any, why: str) -> None:
    import optuna
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial._trial_id, "error", f"{INTERRUPTED}: {why}")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another driver ended it first
    log.warning("trial %d failed as interrupted: %s", trial.number, why)


def log_stale(study: Any, trial: Any) -> None:
    """Called by Optuna for each trial it failed because its heartbeat stopped."""
    log.warning("trial %d failed as interrupted: its driver %s stopped beating", trial.number,
                trial.user_attrs.get("driver", "?"))


def _grace_s(study: Any) -> float:
    storage = study._storage
    interval = storage.get_heartbeat_interval()
    return float(getattr(storage, "grace_period", None) or 2 * interval)


def fail_stale(study: Any) -> None:
    """Fail the running trials whose driver stopped: heartbeat older than the grace period
    (Optuna's ``fail_stale_trials``), a driver process on this machine that is gone, or (with
    heartbeats) a trial older than the grace period that no driver ever claimed: its driver
    died between asking for it and its first heartbeat, which :func:`ask_new` records at once,
    before the claim."""
    import datetime

    import optuna
    from optuna.trial import TrialState

    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    beats = heartbeat_enabled(study)
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = str(t.user_attrs.get("driver", ""))
        if driver and _driver_gone(driver):
            _fail(study, t, f"its driver {driver} is gone")
        elif (not driver and beats and t.datetime_start is not None
              and (now - t.datetime_start).total_seconds() > _grace_s(study)):
            _fail(study, t, "its driver stopped before claiming it")


def fail_interrupted(study: Any) -> None:
    """On start: fail the trials a killed driver left running.

    With a heartbeat only the stale ones (another driver may be alive on the same study);
    without one (journal storage) every running trial, as nothing tells a live driver apart.
    """
    from optuna.trial import TrialState

    if heartbeat_enabled(study):
        fail_stale(study)
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _fail(study, t, "the search was killed")


def requeue_interrupted_seeds(study: Any) -> list[int]:
    """On resume: enqueue again the seed plans (enqueued trials: EVBMF, MUSCO, uniform
    pruning, uniform Tucker-2) whose trial was interrupted, unless a trial of the same parameters is waiting,
    running or has ended on its own. A sampled trial is not requeued: the sampler draws anew.
    Returns the numbers of the interrupted trials whose plans were requeued."""
    def fixed(t: Any) -> dict[str, Any] | None:
        params = t.system_attrs.get("fixed_params")
        return dict(params) if params is not None else None

    trials = study.get_trials(deepcopy=False)
    alive = [fixed(t) or t.params for t in trials if not is_interrupted(t)]
    out = []
    for t in trials:
        params = fixed(t)
        if params is None or not is_interrupted(t) or params in alive:
            continue
        study.enqueue_trial(params)
        alive.append(params)
        out.append(t.number)
    if out:
        log.info("seed plan(s) of interrupted trial(s) %s enqueued again", out)
    return out


def counts(study: Any) -> tuple[int, int]:
    """(finished, running): trials that ran to an end (complete, or failed on their own), and
    trials running now in any driver."""
    from optuna.trial import TrialState

    finished = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            running += 1
        elif t.state in (TrialState.COMPLETE, TrialState.FAIL) and not is_interrupted(t):
            finished += 1
    return finished, running


def claim(study: Any, trial: Any, plan_json: str) -> int | None:
    """Store a new trial's plan and driver; returns the number of an earlier trial with the same
    plan (complete or running, in any driver), or None when this trial should run.

    The earlier trial wins, so two drivers that drew the same plan agree on which one runs it.
    """
    from optuna.trial import TrialState

    trial.set_user_attr("plan", plan_json)
    trial.set_user_attr("driver", driver_id())
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number < trial.number and t.user_attrs.get("plan") == plan_json:
            return int(t.number)
    return None


def tell_duplicate(study: Any, trial: Any, of: int) -> None:
    """End a trial whose plan another trial holds: PRUNED (not run, not counted in the budget)."""
    from optuna.trial import TrialState

    trial.set_user_attr("error", f"{DUPLICATE} {of}: not run")
    study.tell(trial, state=TrialState.PRUNED)
    log.info("trial %d draws the plan of trial %d: not run", trial.number, of)


# Draws in a row that repeat a plan already run before a driver gives up: the space is spent.
MAX_DUPLICATES = 20


def ask_new(study: Any, space: Any, heartbeat: Heartbeat | None = None
            ) -> tuple[Any, dict[str, Any]] | None:
    """Ask a trial whose plan no other trial of the study holds; None after ``MAX_DUPLICATES``
    draws in a row that repeat one (each told PRUNED, "duplicate of trial N").

    ``heartbeat`` starts beating for the trial as soon as it exists, before its plan is drawn;
    the caller ends it with ``heartbeat.discard`` once the trial is told.
    """
    import optuna

    for _ in range(MAX_DUPLICATES):
        with quiet_optuna():
            trial = study.ask()
        if heartbeat is not None:
            heartbeat.add(trial._trial_id)
        try:
            space.suggest(trial)
            params = dict(trial.params)
            try:
                plan_json = plan_to_json(space.plan(params))
            except Exception:  # the trial records why its plan cannot be built
                plan_json = ""
            earlier = claim(study, trial, plan_json)
            if earlier is None:
                return trial, params
            tell_duplicate(study, trial, earlier)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another driver took it for dead (its heartbeat came late, e.g. on a loaded
            # machine) and failed it as interrupted; it does not count: ask another
            log.warning("trial %d was failed as interrupted before it started: asking another",
                        trial.number)
        if heartbeat is not None:
            heartbeat.discard(trial._trial_id)
    log.warning("%d draws in a row repeat plans already run: the search stops", MAX_DUPLICATES)
    return None


class Heartbeat:
    """A thread that records the heartbeat of every trial this driver runs, every interval.

    A no-op for storages without heartbeat (Optuna's journal storage).
    """

    def __init__(self, study: Any) -> None:
        self._storage = study._storage
        self._interval = study._storage.get_heartbeat_interval() if heartbeat_enabled(study) else None
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autorank-heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        if self._interval is None:
            return
        with self._lock:
            self._ids.add(trial_id)
        self._beat({trial_id})

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _beat(self, ids: set[int]) -> None:
        for trial_id in ids:
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as err:  # a storage hiccup must not end the search; the next beat retries
                log.warning("heartbeat of trial id %d not recorded: %s", trial_id, err)

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = set(self._ids)
            self._beat(ids)

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its searcher, which holds this: the copy gets its own (idle) thread
        return {"_storage": self._storage, "_interval": self._interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ids = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autorank-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self._interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
