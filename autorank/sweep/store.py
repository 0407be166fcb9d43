"""The run directory and the Optuna study behind it: one source of truth for every trial."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UserError

log = logging.getLogger(__name__)

TRIAL_COLUMNS = [
    "number", "state", "val_accuracy", "params", "flops", "latency_ms", "latency_batch_ms",
    "params_ratio", "flops_ratio", "duration_s", "finetune_s", "evaluate_s", "error", "plan",
]
_METRIC_ATTRS = TRIAL_COLUMNS[2:]
_STATES = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting",
           "PRUNED": "pruned"}


@dataclass(frozen=True)
class RunDir:
    """Paths of a run directory (see the README's "Run directory")."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def baseline(self) -> Path:
        return self.path / "baseline.json"

    @property
    def trials(self) -> Path:
        return self.path / "trials.csv"

    @property
    def pareto(self) -> Path:
        return self.path / "pareto.csv"

    @property
    def plot(self) -> Path:
        return self.path / "pareto.png"

    @property
    def weights(self) -> Path:
        return self.path / "weights"

    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / 'study.db').resolve()}"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run for the block; a second search on it is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another autorank process is using {str(self.path)!r}; wait for "
                                "it to finish or choose another --out") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``$AUTORANK_INJECT_FAULT`` holds ``driver:<name>``.

    Tests use it to kill the driver at an exact point (during the baseline, between writing a
    results file and renaming it in place) and check that ``--resume`` loses nothing; it is
    unset in normal use.
    """
    if f"driver:{name}" in os.environ.get("AUTORANK_INJECT_FAULT", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    crash_point(path.name)
    os.replace(tmp, path)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def open_storage(url: str, *, heartbeat_s: int | None = None) -> Any:
    """An Optuna storage object for a URL: any SQLAlchemy URL (``sqlite:///``, ``postgresql://``),
    or ``journal:PATH`` for Optuna's journal file.

    Args:
        url: where the study lives.
        heartbeat_s: for an SQL storage, seconds between the heartbeats of a running trial; a
            trial silent for three times as long is failed as interrupted (see ``study.py``).

    Raises:
        UserError: the storage cannot be opened (the message names the URL without password).
    """
    import optuna

    from .study import log_stale, quiet_optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
        with quiet_optuna():
            return optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s if heartbeat_s else None,
                heartbeat_stale_trial_callback=log_stale if heartbeat_s else None)
    except ModuleNotFoundError as err:
        raise UserError(f"cannot open study storage {hide_password(url)!r}: its driver is not "
                        f"installed ({err}); pip install 'autorank[postgres]'") from err
    except Exception as err:  # SQLAlchemy raises many types, all meaning "cannot open"
        raise UserError(f"cannot open study storage {hide_password(url)!r}: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from err


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}}
    return {}


def hide_password(url: str) -> str:
    """The storage URL as it may be shown and saved: its password replaced by ``***``."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


CONSTRAINT = "accuracy_floor"


def record(study: Any, trial: Any, outcome: Mapping[str, Any], metrics: Sequence[str],
           floor: float | None = None) -> None:
    """Store a trial's outcome in the study: its metrics and plan as user attributes, then tell.

    A failed trial is told FAIL (never NaN values, which Optuna would leave running). With a
    ``floor``, a completed trial also gets the constraint ``floor - val_accuracy`` (feasible
    when <= 0), which Optuna's samplers read: they learn to avoid the region below it.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        for key in _METRIC_ATTRS:
            if key in outcome:
                value = outcome[key]
                trial.set_user_attr(key, value.item() if isinstance(value, np.generic) else value)
        if floor is not None and not outcome.get("failed"):
            trial.set_constraint(CONSTRAINT, floor - float(outcome["val_accuracy"]))
    except optuna.exceptions.UpdateFinishedTrialError:
        # another driver took this one for dead (no heartbeat within the grace period)
        log.warning("trial %d was failed as interrupted meanwhile: its result is dropped",
                    trial.number)
        return
    if outcome.get("failed"):
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    else:
        study.tell(trial, [float(outcome[m]) for m in metrics], skip_if_finished=True)


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial of the study: the columns of ``trials.csv``, the sampled ``w``, when
    the trial was started and completed (ISO 8601), and the driver that ran it (host:pid:start)."""
    from .study import INTERRUPTED, is_interrupted

    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": _STATES.get(t.state.name, t.state.name)}
        row.update({k: t.user_attrs.get(k) for k in _METRIC_ATTRS})
        if is_interrupted(t) and not row["error"]:
            row["error"] = f"{INTERRUPTED}: its driver stopped (no heartbeat)"
        row["driver"] = t.user_attrs.get("driver")
        row["w"] = t.params.get("w")
        row["started"] = t.datetime_start.isoformat() if t.datetime_start else None
        row["completed"] = t.datetime_complete.isoformat() if t.datetime_complete else None
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, "w", "started", "completed", "driver"])
    for col in ("val_accuracy", "latency_ms", "latency_batch_ms", "params_ratio", "flops_ratio",
                "duration_s", "finetune_s", "evaluate_s", "w"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in ("params", "flops"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["error"] = frame["error"].fillna("")
    frame["plan"] = frame["plan"].fillna("{}")
    return frame.sort_values("number").reset_index(drop=True)


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, frame.to_csv(index=False))
