"""Writing and reading what a strategy produced (the baseline comes from ``autorank.baseline``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..types import Plan, plan_from_json, plan_to_json
from ._common import CompressConfig, Compressed, ResultRow, Stage
from ._plans import rebuild

log = logging.getLogger(__name__)

PLAN_FILE, WEIGHTS_FILE = "plan.json", "weights.pt"
RESULTS_CSV, RESULTS_JSON, STAGES_CSV = "results.csv", "results.json", "stages.csv"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def save_compressed(out: str | os.PathLike[str], row: ResultRow, result: Compressed, *,
                    config: CompressConfig, model_info: dict[str, Any]) -> Path:
    """Write ``plan.json`` (architecture: model + stages), ``weights.pt`` (state dict),
    ``results.csv`` / ``results.json`` (the row; stages, options and extras in the JSON) and,
    for multi-stage strategies, ``stages.csv``.

    Args:
        out: the output directory (created).
        row: the results row.
        result: the strategy's outcome.
        config: the options it ran with.
        model_info: ``model``, ``num_classes``, ``input_size`` (what :func:`load_compressed`
            needs to rebuild the architecture), plus anything worth keeping.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    stages = [{"plan": json.loads(plan_to_json(s.plan)), "fuse": s.fuse} for s in result.stages]
    (folder / PLAN_FILE).write_text(json.dumps({**model_info, "strategy": row.strategy,
                                                "stages": stages}, indent=1))
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    record = row.to_dict()
    _write_csv(folder / RESULTS_CSV, [record])
    if result.table:
        _write_csv(folder / STAGES_CSV, result.table)
    payload = {"row": record, "stages": result.table, "extra": result.extra,
               "config": dataclasses.asdict(config), "model": model_info}
    (folder / RESULTS_JSON).write_text(json.dumps(_plain(payload), indent=1))
    return folder


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def load_compressed(folder: str | os.PathLike[str]) -> nn.Module:
    """The model :func:`save_compressed` wrote, rebuilt from its plan and loaded weights.

    Raises:
        UserError: the folder holds no ``plan.json`` / ``weights.pt``.
    """
    from ..models import get_model

    path = Path(folder)
    if not (path / PLAN_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise UserError(f"{str(path)!r} holds no compressed model ({PLAN_FILE} + {WEIGHTS_FILE})")
    info = json.loads((path / PLAN_FILE).read_text())
    dense = get_model(info["model"], num_classes=info["num_classes"],
                      input_size=info["input_size"])
    stages = [Stage(plan_from_json(s["plan"]), bool(s["fuse"])) for s in info["stages"]]
    model = rebuild(dense, stages)
    model.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval()


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan from a JSON file: a plan object, or a one-stage ``plan.json`` this package wrote.

    Raises:
        UserError: missing file, bad JSON, or a multi-stage plan.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"plan file {str(file)!r} does not exist")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"plan file {str(file)!r} is not JSON ({err})") from None
    if isinstance(data, dict) and "stages" in data:
        if len(data["stages"]) != 1:
            raise UserError(f"plan file {str(file)!r} has {len(data['stages'])} stages; "
                            "a rank plan has exactly one")
        data = data["stages"][0]["plan"]
    return plan_from_json(data)
