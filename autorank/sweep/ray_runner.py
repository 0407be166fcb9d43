"""Trials run in parallel by Ray Tune, sampled by Optuna through Tune's ``OptunaSearch``.

Measured on Ray 2.60 / Optuna 5.0: ``Tuner.restore`` with a persistent Optuna storage leaves
stuck and duplicated trials, while a fresh Tuner + OptunaSearch on the same study resumes
cleanly, so a resume always builds a new Tuner. A reported NaN leaves the Optuna trial
"running": failures are reported with a flag and told FAIL here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import objective_metrics
from ..errors import UserError
from ..types import TrialOutcome
from .rungs import Scheduler, claim_promotion, trial_params
from .study import Heartbeat, ask_new
from .table import record
from .trial import TrialContext, run_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ContextHandle:
    """A trial context in Ray's object store, named by its key: small enough to ship per trial."""

    key: str
    ref: Any  # ray.ObjectRef of a TrialContext


# The context each worker process has fetched, by key: tune.with_parameters would deserialize
# the whole context (the data set included) again for every trial a reused worker runs.
_CONTEXTS: dict[str, TrialContext] = {}


def _context(handle: _ContextHandle) -> TrialContext:
    import ray

    if handle.key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[handle.key] = ray.get(handle.ref)
    return _CONTEXTS[handle.key]


def _trainable(config: dict[str, Any], handle: _ContextHandle) -> None:
    """One Tune trial: ``config`` is ``{"number": the Optuna trial's number, "params": its
    draws, "rung": the rung to train to}`` (see ``StudySearch.suggest``)."""
    from ray import tune

    outcome = run_trial(_context(handle), config["number"], config["params"],
                        rung=config.get("rung", 0))
    # A failed trial's metrics go as 0 (Tune checks the searcher's metrics are in every
    # result); the searcher sees the flag and tells Optuna FAIL.
    tune.report(outcome.report())


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that shares its study with other drivers (the budget is the study's, a
        plan another trial holds is not run, running trials beat), starts the promotions of a
        multi-fidelity search before new trials, and records every outcome in the study
        (metrics, plan, failure reason) or, for a promotion, in the rung study."""

        def __init__(self, *args: Any, metrics: list[str], on_done: Callable[[int], None],
                     jobs: Scheduler, heartbeats: tuple[Heartbeat, Heartbeat],
                     search_space: Any, floor: float | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._objective_metrics = metrics
            self._on_done = on_done
            self._jobs = jobs
            self._heartbeat, self._rung_heartbeat = heartbeats
            self._search_space = search_space
            self._floor = floor
            self._promotions: dict[str, tuple[Any, int]] = {}  # Tune id -> (rung trial, number)

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            """A new trial's parameters; None: not now (the budget is held by trials running
            elsewhere); ``Searcher.FINISHED`` (Tune's sentinel string): the study is done."""
            from ray.tune.search import Searcher

            finished: Any = Searcher.FINISHED
            job = self._jobs.next()
            if job.kind in ("done", "wait"):
                return finished if job.kind == "done" else None
            if job.kind == "promote":
                assert job.number is not None
                claimed = claim_promotion(self._jobs.rung_study, job.number, job.rung,
                                          self._rung_heartbeat)
                if claimed is None:
                    return None
                self._promotions[trial_id] = (claimed, job.number)
                return {"number": job.number, "rung": job.rung,
                        "params": trial_params(self._ot_study, job.number)}
            asked = ask_new(self._ot_study, self._search_space, self._heartbeat)
            if asked is None:
                return finished
            ot_trial, params = asked
            self._ot_trials[trial_id] = ot_trial
            return {"number": ot_trial.number, "rung": 0, "params": params}

        def save(self, checkpoint_path: str) -> None:
            # The Optuna study in its storage is the searcher's state, and a resume builds a
            # fresh Tuner on it (never Tuner.restore): Tune's pickled copy is not needed.
            return None

        def restore(self, checkpoint_path: str) -> None:
            return None

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                              error: bool = False) -> None:
            reported = dict(result or {})
            outcome = TrialOutcome.from_report(reported) if reported and not error else \
                TrialOutcome(failed=True, error=reported.get("error") or
                             "the trial's worker process died or raised outside the trial")
            if trial_id in self._promotions:
                rung_trial, number = self._promotions.pop(trial_id)
                record(self._jobs.rung_study, rung_trial, outcome, ["val_accuracy"])
                self._rung_heartbeat.discard(rung_trial._trial_id)
                self._on_done(number)
                return
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or trial_id in self._completed_trials:
                return
            record(self._ot_study, ot_trial, outcome, self._objective_metrics, self._floor)
            self._heartbeat.discard(ot_trial._trial_id)
            self._completed_trials.add(trial_id)
            self._on_done(ot_trial.number)

    return StudySearch


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def _keep_loopback() -> None:
    """Keep Ray on loopback: no server of a local search listens on a network interface.

    Measured on Ray 2.60: even with ``_node_ip_address="127.0.0.1"`` the GCS, raylet and
    workers listen on all interfaces and the runtime-env agent on the machine's IP; with Ray's
    multi-node mode off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, inherited by the processes
    ``ray.init`` starts) all of them listen on 127.0.0.1 only. The same setting stops Ray from
    rewriting a loopback ``--address`` to the machine's network IP, where a loopback head does
    not listen.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # already imported: the variable came too late


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail within ``timeout_s`` when nothing listens at ``host:port``.

    Ray itself retries a dead GCS address for minutes before giving up; one TCP connect says
    at once that no cluster is there. (``auto`` is left to Ray, which fails fast without one.)
    """
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address != "auto":
            raise UserError(f"--address {address!r}: expected 'auto', 'host:port' or 'ray://host:port'")
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UserError(f"no Ray cluster answers at --address {address!r} ({err}); start one with "
                        "`ray start --head` or leave --address out for a local search") from err


@contextmanager
def _keep_sigterm_handler(*, shield: bool = False) -> Iterator[None]:
    """Keep a SIGTERM handler the caller set (the CLI's: stop like Ctrl-C) over ``ray.init``,
    which replaces it with an exit; without one, Ray's stays.

    With ``shield`` (a local cluster ``ray.init`` starts) and such a handler, SIGTERM is
    blocked while Ray starts its processes, which inherit the blocked mask as they inherit
    Ray's own blocked SIGINT: a SIGTERM sent to the whole process group (``kill -TERM
    -PGID``, systemd's stop) then reaches only the driver, which records the interrupt and
    stops them. Unshielded, the raylet died first and took the driver with it (exit 1).
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    blocked = shield and callable(previous)
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def init_ray(address: str | None, num_cpus: int | None, num_gpus: int | None) -> None:
    """Start Ray in-process on loopback with no dashboard, or join the cluster at ``address``."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # autorank prints its own progress
    if ray.is_initialized():
        return
    if address:
        check_reachable(address)
        if address.rsplit(":", 1)[0] in _LOOPBACK:
            _keep_loopback()
        try:
            with _keep_sigterm_handler():
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as err:
            raise UserError(f"no Ray cluster at --address {address!r}: {err}") from err
        return
    _keep_loopback()
    with _keep_sigterm_handler(shield=True):
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")


def run_ray(
    ctx: TrialContext,
    *,
    studies: tuple[Any, Any | None],
    jobs: Scheduler,
    parallel: int,
    resources: dict[str, float],
    storage_path: Path,
    on_done: Callable[[int], None],
) -> None:
    """Run trials and promotions, ``parallel`` at a time, through Ray Tune + OptunaSearch, until
    the scheduler ``jobs`` (over the studies shared with any other driver) is done."""
    from ray import tune

    metrics, modes = objective_metrics(ctx.space.config)
    study, rung_study = studies
    with Heartbeat(study) as heartbeat, Heartbeat(rung_study or study) as rung_heartbeat:
        searcher = _searcher_class()(
            space=ctx.space.suggest, metric=metrics, mode=modes, sampler=study.sampler,
            study_name=study.study_name, storage=study._storage, seed=ctx.seed,
            metrics=metrics, on_done=on_done, jobs=jobs,
            heartbeats=(heartbeat, rung_heartbeat), search_space=ctx.space,
            floor=ctx.accuracy_floor)
        import ray

        handle = _ContextHandle(ctx.key, ray.put(ctx))
        trainable = tune.with_resources(tune.with_parameters(_trainable, handle=handle), resources)
        tuner = tune.Tuner(
            trainable,
            # no sample count: the searcher says when the study's budget is reached
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1,
                                        max_concurrent_trials=parallel, reuse_actors=True),
            # a fresh experiment name per driver: a resume builds a new Tuner (see module doc)
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                      storage_path=str(storage_path.resolve()),
                                      verbose=0, log_to_file=True),
        )
        with _tune_interrupt() as interrupted:
            tuner.fit()
            if interrupted():
                raise KeyboardInterrupt


class _DropTuneHints(logging.Filter):
    """Tune's notes on an interrupt name ``Tuner.restore``, which does not resume an autorank
    search (``autorank search --resume`` does): left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Stop signal received", "Experiment has been interrupted"))


@contextmanager
def _tune_interrupt() -> Iterator[Callable[[], bool]]:
    """Around ``Tuner.fit``: yields whether a Ctrl-C stopped it.

    Tune's own SIGINT handler (set inside ``fit``) stops the experiment gracefully (its trials'
    actors ended, its state saved) and then puts back the handler it found: this one, which
    raises ``KeyboardInterrupt`` on a second Ctrl-C. Finding it back after ``fit`` means the
    first one came. Tune leaves its handler set after a normal end; the previous one is put back.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None

    def second_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if previous is not None:
        signal.signal(signal.SIGINT, second_interrupt)
    tune_handles_sigint = previous is not None and not int(
        os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    tune_logger, hints = logging.getLogger("ray.tune.tune"), _DropTuneHints()
    tune_logger.addFilter(hints)
    try:
        yield lambda: tune_handles_sigint and signal.getsignal(signal.SIGINT) is second_interrupt
    finally:
        tune_logger.removeFilter(hints)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
