"""Trials in the study and out of it: recording an outcome, and the trials table
(``trials.csv``) read back from the study."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..types import TRIAL_COLUMNS, TrialOutcome

log = logging.getLogger(__name__)

_METRIC_ATTRS = TRIAL_COLUMNS[2:]
_STATES = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting",
           "PRUNED": "pruned"}


CONSTRAINT = "accuracy_floor"


def record(study: Any, trial: Any, outcome: TrialOutcome, metrics: Sequence[str],
           floor: float | None = None) -> None:
    """Store a trial's outcome in the study: its metrics and plan as user attributes, then tell.

    A failed trial is told FAIL (never NaN values, which Optuna would leave running). With a
    ``floor``, a completed trial also gets the constraint ``floor - val_accuracy`` (feasible
    when <= 0), which Optuna's samplers read: they learn to avoid the region below it.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        for key, value in outcome.stored().items():
            trial.set_user_attr(key, value.item() if isinstance(value, np.generic) else value)
        if floor is not None and not outcome.failed:
            trial.set_constraint(CONSTRAINT, floor - float(outcome.val_accuracy or 0.0))
    except optuna.exceptions.UpdateFinishedTrialError:
        # another driver took this one for dead (no heartbeat within the grace period)
        log.warning("trial %d was failed as interrupted meanwhile: its result is dropped",
                    trial.number)
        return
    if outcome.failed:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    else:
        study.tell(trial, [float(getattr(outcome, m)) for m in metrics], skip_if_finished=True)


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
    """``frame`` as CSV, written atomically."""
    atomic_write(path, frame.to_csv(index=False))
