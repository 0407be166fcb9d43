"""Dense against compressed on one target: predicted by the table, measured, and deployed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .._deploy import deploy
from ..decompose import apply_plan
from ..metrics import count_flops
from ..types import Plan
from .table import LatencyModel, Target, measure_models

__all__ = ["compare", "format_comparison"]


def compare(model: nn.Module, plan: Plan, input_shape: Sequence[int], target: Target, *,
            cache_dir: str | Path | None = None, repeats: int = 15) -> dict[str, Any]:
    """Latency (ms) of ``model`` and of ``apply_plan(model, plan)`` on ``target``: predicted
    by the latency table, measured (all four models interleaved), and measured after
    :func:`autorank.deploy`; with the FLOPs of both. ``input_shape`` is (C, H, W)."""
    lm = LatencyModel(model, input_shape, target, cache_dir)
    compressed = apply_plan(model, plan, input_shape=(1, *input_shape), structure_only=True)
    measured = measure_models({"dense": model, "compressed": compressed,
                               "dense_deployed": deploy(model, (1, *input_shape)),
                               "compressed_deployed": deploy(compressed, (1, *input_shape))},
                              input_shape, target, repeats=repeats)
    return {"target": target.about(), "predicted": {"dense": lm.predict({}), "compressed": lm.predict(plan)},
            "measured": {"dense": measured["dense"], "compressed": measured["compressed"]},
            "deployed": {"dense": measured["dense_deployed"],
                         "compressed": measured["compressed_deployed"]},
            "flops": {"dense": count_flops(model, (1, *input_shape)),
                      "compressed": count_flops(compressed, (1, *input_shape))},
            "table": str(lm.table.path), "table_entries_measured": lm.table.measured}


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a small text table."""
    t = result["target"]
    lines = [f"target: {t['device']} ({t['hardware']}), {t['threads']} thread(s), batch {t['batch']}, "
             f"{t['backend']}", f"{'':12}{'predicted':>12}{'measured':>12}{'deployed':>12}"]
    for row in ("dense", "compressed"):
        lines.append(f"{row:12}" + "".join(f"{result[col][row]:>9.3f} ms"
                                           for col in ("predicted", "measured", "deployed")))
    speed = "".join(f"{result[col]['dense'] / result[col]['compressed']:>11.2f}x"
                    for col in ("predicted", "measured", "deployed"))
    flops = result["flops"]["dense"] / result["flops"]["compressed"]
    lines.append(f"{'speed-up':12}{speed}   (FLOPs {flops:.2f}x)")
    lines.append(f"latency table: {result['table']} "
                 f"({result['table_entries_measured']} entries measured now)")
    return "\n".join(lines)
