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
        if outcome.failed:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial, [float(getattr(outcome, m)) for m in metrics], skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        # another driver took this one for dead (no heartbeat within the grace period), also
        # between tell's check and its write
        log.warning("trial %d was failed as interrupted meanwhile: its result is dropped",
                    trial.number)


def _rungs_by_trial(rung_study: Any | None) -> dict[int, dict[int, dict[str, Any]]]:
    """The finished promotions of the rung study: ``{trial: {rung: user attributes}}``."""
    from optuna.trial import TrialState

    out: dict[int, dict[int, dict[str, Any]]] = {}
    if rung_study is None:
        return out
    for t in rung_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "trial" in t.user_attrs and "rung" in t.user_attrs:
            attrs = {**t.user_attrs, "completed": t.datetime_complete}
            out.setdefault(int(t.user_attrs["trial"]), {})[int(t.user_attrs["rung"])] = attrs
    return out


def _promote_row(row: dict[str, Any], rungs: dict[int, dict[str, Any]]) -> None:
    """Make ``row`` speak of its highest finished rung, with every rung's accuracy beside it."""
    top = max(rungs)
    for rung, attrs in sorted(rungs.items()):
        row[f"val_accuracy_r{rung}"] = attrs.get("val_accuracy")
    for key in ("duration_s", "finetune_s", "evaluate_s"):
        row[key] = sum(float(a.get(key) or 0.0) for a in rungs.values()) + float(row.get(key) or 0.0)
    for key in ("val_accuracy", "latency_ms", "latency_batch_ms", "rung", "steps"):
        row[key] = rungs[top].get(key)
    row["completed"] = rungs[top]["completed"].isoformat() if rungs[top]["completed"] else None


def trials_frame(study: Any, rung_study: Any | None = None) -> pd.DataFrame:
    """One row per trial of the study: the columns of ``trials.csv``, the sampled ``w``, when
    the trial was started and completed (ISO 8601), and the driver that ran it (host:pid:start).

    With the ``rung_study`` of a multi-fidelity search, a promoted trial's row gives its
    highest finished rung (``rung``, ``steps``, ``val_accuracy``, latency), the time of all its
    rungs, and each rung's accuracy as ``val_accuracy_r0``, ``val_accuracy_r1``, ...
    """
    from .study import INTERRUPTED, is_interrupted

    promoted = _rungs_by_trial(rung_study)

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
        row["rung"] = row["rung"] or 0
        if promoted:
            row["val_accuracy_r0"] = row["val_accuracy"]
        if t.number in promoted and row["state"] == "complete":
            _promote_row(row, promoted[t.number])
        rows.append(row)
    extra = sorted({k for r in rows for k in r if k.startswith("val_accuracy_r")})
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, "w", "started", "completed", "driver", *extra])
    for col in ("val_accuracy", "latency_ms", "latency_batch_ms", "params_ratio", "flops_ratio",
                "duration_s", "finetune_s", "evaluate_s", "w", *extra):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in ("params", "flops", "rung", "steps"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["error"] = frame["error"].fillna("")
    frame["plan"] = frame["plan"].fillna("{}")
    return frame.sort_values("number").reset_index(drop=True)


def busy_seconds(frame: pd.DataFrame) -> float:
    """Seconds during which at least one trial of a ``trials_frame`` ran: the length of the
    union of its rows' ``[started, completed]`` spans. Unlike last end minus first start, a
    pause between a stopped search and its ``--resume`` does not count (except inside a
    promoted trial whose rungs ran on both sides of it: its row spans all its rungs)."""
    spans = frame[["started", "completed"]].dropna()
    if spans.empty:
        return 0.0
    starts = pd.to_datetime(spans["started"], format="ISO8601").sort_values()
    ends = pd.to_datetime(spans["completed"], format="ISO8601")[starts.index]
    total, cur_start, cur_end = 0.0, starts.iloc[0], ends.iloc[0]
    for start, end in zip(starts.iloc[1:], ends.iloc[1:], strict=True):
        if start > cur_end:
            total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return total + (cur_end - cur_start).total_seconds()


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as CSV, written atomically."""
    atomic_write(path, frame.to_csv(index=False))
