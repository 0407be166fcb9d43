"""``vbmf-tucker2``: one-shot Tucker-2 at EVBMF ranks, then fine-tuning.

Kim et al., "Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile
Applications", ICLR 2016: every k x k conv becomes 1x1 -> k x k core -> 1x1 at the EVBMF ranks
of its in- and out-channel unfoldings, 1x1 convs and linear layers a truncated SVD at the EVBMF
rank of their weight; the whole network is then fine-tuned (here with distillation from the
dense model, Hinton et al. 2015, unless switched off).
"""

from __future__ import annotations

import logging

from ..decompose import apply_plan
from ..errors import UserError
from ..types import Plan
from ._common import Compressed, Stage, StrategyContext, test_accuracy, train_compressed
from ._plans import eligible_rows, vbmf_plan
from ._registry import register_strategy

log = logging.getLogger(__name__)


def train_plan(ctx: StrategyContext, plan: Plan) -> Compressed:
    """Factorize ``plan`` at once, then BN recalibration and the fine-tune (Kim et al. 2016)."""
    model = apply_plan(ctx.baseline, plan)
    after = test_accuracy(model, ctx)
    train_compressed(model, ctx)
    return Compressed(model, [Stage(plan)], after, test_accuracy(model, ctx))


@register_strategy("vbmf-tucker2", train_plan=train_plan)
def vbmf_tucker2(ctx: StrategyContext) -> Compressed:
    """Factorize every eligible layer at its EVBMF rank at once, then fine-tune."""
    plan = vbmf_plan(ctx.baseline, eligible_rows(ctx.baseline, ctx.config, ctx.input_shape))
    if not plan:
        raise UserError("vbmf-tucker2: no eligible layer of this model pays off when factorized")
    log.info("vbmf-tucker2: %d layers factorized", len(plan))
    return train_plan(ctx, plan)
