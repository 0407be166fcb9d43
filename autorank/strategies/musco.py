"""``musco``: multi-stage compression with weakened EVBMF ranks.

Gusak et al., "Automated Multi-Stage Compression of Neural Networks", ICCVW 2019. Each stage
factorizes at ranks ``R - w (R - r_vbmf)`` and fine-tunes. Stage 1 factorizes the dense layers
(Tucker-2 for k x k convs, SVD for 1x1 convs and linears); every later stage factorizes the
result again: the Tucker-2 core (1x1 -> k x k -> 1x1 -> k x k core' ...) and the second SVD
factor, whose new outer 1x1 factors are multiplied into the neighbouring ones, so a layer stays
1x1 -> k x k -> 1x1 (or two linears) with smaller ranks at every stage.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .._inventory import inventory
from ..errors import UserError
from ..metrics import count_flops, count_params
from ._common import (
    Compressed,
    Stage,
    StrategyContext,
    ratio,
    test_accuracy,
    train_compressed,
    val_accuracy,
)
from ._plans import apply_stage, eligible_rows, vbmf_plan
from ._registry import register_strategy

log = logging.getLogger(__name__)


def stage_plan(model: nn.Module, ctx: StrategyContext, factorized: list[str] | None) -> Stage:
    """The next stage over ``model``: its dense eligible layers (``factorized is None``), else
    the core / second factor (child ``1``) of each layer an earlier stage factorized."""
    w = ctx.config.musco.w
    if factorized is None:
        rows = eligible_rows(model, ctx.config, ctx.input_shape)
        return Stage(vbmf_plan(model, rows, w=w))
    targets = {f"{name}.1" for name in factorized}
    rows = [r for r in inventory(model, ctx.input_shape) if r.name in targets]
    return Stage(vbmf_plan(model, rows, w=w, fused=True), fuse=True)


def _row(stage: int, model: nn.Module, ctx: StrategyContext, after: float,
         val: float) -> dict[str, Any]:
    base = ctx.baseline
    return {"stage": stage,
            "params_ratio": ratio(count_params(base), count_params(model)),
            "flops_ratio": ratio(count_flops(base, ctx.input_shape),
                                 count_flops(model, ctx.input_shape)),
            "accuracy_after": after, "val_accuracy": val, "accuracy": test_accuracy(model, ctx)}


def _stop_reason(row: dict[str, Any], base_val: float, ctx: StrategyContext) -> str | None:
    opts = ctx.config.musco
    if opts.max_drop is not None and base_val - row["val_accuracy"] > opts.max_drop:
        return f"val accuracy {row['val_accuracy']:.4f} is more than {opts.max_drop} below " \
               f"the baseline's {base_val:.4f}"
    if opts.target_ratio is not None and row["params_ratio"] >= opts.target_ratio:
        return f"params ratio {row['params_ratio']:.3f} reached the target {opts.target_ratio}"
    return None


@register_strategy("musco")
def musco(ctx: StrategyContext) -> Compressed:
    """Stages of (factorize at weakened EVBMF ranks, fine-tune) until a limit is reached.

    Limits: ``stages``; ``target_ratio`` (params); ``max_drop`` (validation accuracy below the
    baseline's). A later stage that breaks ``max_drop`` is undone; stage 1 is always kept.
    """
    opts = ctx.config.musco
    base_val = val_accuracy(ctx.baseline, ctx) if opts.max_drop is not None else float("nan")
    model = ctx.baseline
    stages: list[Stage] = []
    table: list[dict[str, Any]] = []
    factorized: list[str] | None = None
    after = float("nan")
    reason = f"{opts.stages} stage(s) done"
    for number in range(1, opts.stages + 1):
        stage = stage_plan(model, ctx, factorized)
        if not stage.plan and number == 1:
            raise UserError("musco: no eligible layer of this model pays off when factorized")
        if not stage.plan:
            reason = f"stage {number}: no layer can be compressed further"
            break
        candidate = apply_stage(model, stage)
        stage_after = test_accuracy(candidate, ctx)
        train_compressed(candidate, ctx)
        row = _row(number, candidate, ctx, stage_after, val_accuracy(candidate, ctx))
        row["layers"] = len(stage.plan)
        stop = _stop_reason(row, base_val, ctx)
        undo = bool(stages) and opts.max_drop is not None and stop is not None and "val accuracy" in stop
        row["kept"] = not undo
        table.append(row)
        log.info("musco stage %d: %s", number, row)
        if not undo:
            model, after = candidate, stage_after
            stages.append(stage)
            factorized = factorized or list(stage.plan)
        if stop is not None:
            reason = f"stage {number}: {stop}" + ("; this stage was undone" if undo else "")
            break
    kept = [r for r in table if r["kept"]]
    return Compressed(model, stages, after, kept[-1]["accuracy"] if kept else float("nan"),
                      table=table, extra={"stop_reason": reason})
