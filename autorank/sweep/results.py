"""A run read back from its directory: the trials, the front, the baseline, trained models."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..config import Fidelity, SearchConfig, load_config, objective_metrics
from ..decompose import apply_plan
from ..errors import UserError
from ..types import Baseline, plan_from_json
from .pareto import pareto_front
from .rundir import RunDir


def judged(trials: pd.DataFrame, fidelity: Fidelity | None) -> pd.DataFrame:
    """The trials a front is taken from: with a multi-fidelity search, those whose accuracy is
    from the top rung (or, until a trial has reached it, the highest rung reached), so that
    the front compares models trained alike; otherwise all of them."""
    if fidelity is None or "rung" not in trials or trials.empty:
        return trials
    done = trials[trials["state"] == "complete"]
    if done.empty:
        return trials
    reached = min(fidelity.top, int(done["rung"].fillna(0).max()))
    return trials[trials["rung"].fillna(0) == reached]


def front_of(trials: pd.DataFrame, config: SearchConfig) -> pd.DataFrame:
    """The Pareto front of a run's trials under its objectives, from :func:`judged` trials."""
    metrics, modes = objective_metrics(config.space)
    return pareto_front(judged(trials, config.space.fidelity), metrics, modes)


MEASURED_AT_END = ("test_accuracy", "latency_ms", "latency_batch_ms")
"""The front's columns the search measures when it finishes, kept in ``pareto.csv``."""


@dataclass(frozen=True)
class SearchResult:
    """A finished (or partly finished) run, read back from its directory."""

    path: Path
    config: SearchConfig
    trials: pd.DataFrame
    baseline: Baseline

    def pareto(self) -> pd.DataFrame:
        """The front of the trials, with the test accuracy and latency the search measured when
        it finished (NaN for a front trial it did not measure: one run later, or by another
        driver)."""
        pareto_csv = RunDir(self.path).pareto
        if self.trials.empty:
            return pd.read_csv(pareto_csv) if pareto_csv.exists() else self.trials
        measured = pd.read_csv(pareto_csv) if pareto_csv.exists() else pd.DataFrame()
        # runs written before the front was timed at the end keep their trials' latency
        cols = ["number", *(c for c in MEASURED_AT_END if c in measured)]
        front = front_of(self.trials, self.config).drop(columns=cols[1:], errors="ignore")
        if "test_accuracy" not in cols:
            front = front.assign(test_accuracy=float("nan"))
        return front.merge(measured.reindex(columns=cols), on="number", how="left")

    def trial_model(self, baseline: nn.Module, number: int) -> nn.Module | None:
        """Trial ``number``'s plan applied to (a copy of) ``baseline`` with the fine-tuned
        weights the run kept; None when it kept none for that trial."""
        side = self.config.input_size or 32  # a run saves the size it resolved
        shape = (1, 3, side, side)
        rows = self.trials[self.trials["number"] == number] if len(self.trials) else self.trials
        if not len(rows):
            return None
        return trained_model(baseline, str(rows.iloc[0]["plan"]),
                             RunDir(self.path).weights / f"trial-{number}.pt", input_shape=shape)


def trained_model(baseline: nn.Module, plan_json: str, weights: Path, *,
                  input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> nn.Module | None:
    """``plan_json`` applied to (a copy of) ``baseline`` (a plan that prunes is traced at
    ``input_shape``) with the state dict in ``weights`` (loaded as data: ``weights_only``); None
    when that file does not exist."""
    if not weights.exists():
        return None
    model = apply_plan(baseline, plan_from_json(plan_json), input_shape=input_shape)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def load_run(path: str | os.PathLike[str]) -> SearchResult:
    """Read a run directory written by :func:`search`.

    Raises:
        UserError: the directory holds no run.
    """
    run = RunDir(Path(path).expanduser().resolve())
    if not run.config.exists():
        raise UserError(f"{str(run.path)!r} holds no autorank run (no config.yaml)")
    trials = (pd.read_csv(run.trials, dtype={"error": str, "plan": str})
              if run.trials.exists() else pd.DataFrame())
    if "error" in trials:
        trials["error"] = trials["error"].fillna("")
    baseline = Baseline.from_json(json.loads(run.baseline.read_text())) if run.baseline.exists() \
        else Baseline()
    return SearchResult(run.path, load_config(run.config), trials, baseline)
