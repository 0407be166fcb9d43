"""Writing what a strategy produced (as an export directory) and reading rank plans."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from .._card import model_card
from .._io import atomic_write
from ..bundle import (
    check_round_trip,
    describe,
    read_plan_file,
    sample_inputs,
    staged,
    write_bundle,
)
from ..data import DataBundle
from ..errors import UserError
from ..types import Plan
from ._common import CompressConfig, Compressed, ResultRow

log = logging.getLogger(__name__)

RESULTS_CSV, RESULTS_JSON, STAGES_CSV = "results.csv", "results.json", "stages.csv"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_compressed(out: str | os.PathLike[str], row: ResultRow, result: Compressed, *,
                    config: CompressConfig, baseline: nn.Module, data: DataBundle,
                    dataset: str, latency_batch: int = 32, **about: Any) -> Path:
    """Write a strategy's model as an export directory (``autorank.bundle``: ``plan.json``
    with every stage, ``model.safetensors``, ``export.json``, the model card ``README.md``;
    ``ar.load_exported`` loads it), plus ``results.csv`` / ``results.json`` (the row; stages,
    options and extras in the JSON) and, for multi-stage strategies, ``stages.csv``.

    Args:
        out: the output directory: new, empty, or an earlier export (replaced).
        row: the results row.
        result: the strategy's outcome.
        config: the options it ran with.
        baseline: the dense model it started from (its cost is measured beside the model's).
        data: the data it ran on (input shape, classes, test split).
        dataset: the data set's name, for the card.
        latency_batch: the second batch size latency is measured at.
        about: more to record in ``export.json`` (checkpoint, ...).

    Raises:
        UserError: ``out`` is a file or holds other files.
    """
    with staged(out) as folder:
        stages = [(s.plan, s.fuse) for s in result.stages]
        info = write_bundle(
            result.model.cpu(), stages[0][0], folder,
            describe(result.model, baseline, data, model_name=row.model, dataset=dataset,
                     latency_batch=latency_batch,
                     baseline_accuracy={"test_accuracy": row.accuracy_before},
                     strategy=row.strategy, test_accuracy=row.fine_tune,
                     accuracy_after=row.accuracy_after, test_images=row.test_images,
                     results=row.to_dict(), **about),
            stages=stages if len(stages) > 1 or stages[0][1] else None)
        check_round_trip(result.model, folder, sample_inputs(data))
        atomic_write(folder / "README.md", model_card(info, stages[0][0], stages))
        record = row.to_dict()
        _write_csv(folder / RESULTS_CSV, [record])
        (folder / STAGES_CSV).unlink(missing_ok=True)
        if result.table:
            _write_csv(folder / STAGES_CSV, result.table)
        payload = {"row": record, "stages": result.table, "extra": result.extra,
                   "config": dataclasses.asdict(config), "model": info.to_json()}
        (folder / RESULTS_JSON).write_text(json.dumps(_plain(payload), indent=1))
    return Path(out).expanduser().resolve()


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan from a JSON file: a plan object, or a one-stage ``plan.json`` this package wrote.

    Raises:
        UserError: missing file, bad JSON, or a multi-stage plan.
    """
    plan, stages = read_plan_file(path)
    if len(stages) != 1:
        raise UserError(f"plan file {str(path)!r} has {len(stages)} stages; "
                        "a rank plan has exactly one")
    return plan
