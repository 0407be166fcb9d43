"""``admm``: train the dense model under a low-rank constraint, then factorize and fine-tune.

Yin et al., "Towards Efficient Tensor Decomposition-Based DNN Model Compression with
Optimization Framework", CVPR 2021. The constraint "W has the chosen format and ranks" is
handled by ADMM: the loss gets the augmented-Lagrangian term ``rho/2 ||W - Z + U||^2`` with
``Z`` the projection of ``W + U`` onto the format (truncated HOSVD for Tucker-2, TT-SVD for
tensor-train, truncated SVD for 1x1 convs and linears) and ``U`` the scaled dual; Z and U are
updated every ``update_every`` steps while rho grows geometrically up to ``rho_max``. The
weights end close to the constraint, so the exact factorization that follows loses little.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

import torch
from torch import nn

from ..decompose import apply_plan, get_method, validate_plan
from ..decompose._base import weight_of
from ..engine import recover
from ..errors import UserError
from ..rank import rank_from_ratio
from ..types import LayerChoice, Plan
from ._common import (
    AdmmOptions,
    Compressed,
    Stage,
    StrategyContext,
    test_accuracy,
    train_compressed,
)
from ._plans import dense_weight, eligible_rows, pays_off
from ._registry import register_strategy

log = logging.getLogger(__name__)


def admm_plan(ctx: StrategyContext) -> Plan:
    """The ranks ADMM trains towards: ``admm.plan`` as given, else per eligible layer the
    largest uniform rank with params ratio ``admm.ratio`` (``rank_from_ratio``) in
    ``admm.method`` for k x k convs and SVD for 1x1 convs and linears."""
    opts = ctx.config.admm
    if opts.plan is not None:
        validate_plan(ctx.baseline, opts.plan)
        return dict(opts.plan)
    plan: Plan = {}
    for row in eligible_rows(ctx.baseline, ctx.config, ctx.input_shape):
        method = next((m for m in (opts.method, "svd") if m in row.max_rank), None)
        if method is None:
            continue
        layer = ctx.baseline.get_submodule(row.name)
        rank = rank_from_ratio(method, layer, opts.ratio)
        if pays_off(method, layer, rank, fused=False):
            plan[row.name] = LayerChoice(method, rank)
    return plan


def project(layer: nn.Module, weight: torch.Tensor, choice: LayerChoice) -> torch.Tensor:
    """``weight`` (shaped as ``layer``'s) brought into ``choice``'s format and ranks: the
    dense kernel of the factorization the method builds from it."""
    probe = copy.deepcopy(layer)
    with torch.no_grad():
        weight_of(probe).copy_(weight)
        factorized = get_method(choice.method).factorize(probe, choice.rank)
        return dense_weight(factorized).reshape(weight.shape).to(weight.device)


class AdmmPenalty:
    """The ADMM term of Yin et al. 2021 as a fine-tune hook (:class:`autorank.engine.TrainHook`).

    After every optimizer step on the task loss, each constrained weight takes a gradient step
    on ``rho/2 ||W - Z + U||^2`` with the same learning rate, decoupled from the momentum (as
    AdamW decouples weight decay, Loshchilov & Hutter 2019): inside the momentum, the
    quadratic pull made the weights oscillate around Z on short budgets. Build it with
    :meth:`start`. ``distances`` records, at the start and after every Z/U update, how far the
    weights are from the constraint: ``||W - P(W)|| / ||W||`` over all constrained layers,
    ``P`` the projection.
    """

    def __init__(self, layers: dict[str, nn.Module], plan: Plan, opts: AdmmOptions,
                 lr: float) -> None:
        self.layers = layers
        self.plan = plan
        self.opts = opts
        self.lr = lr
        self.rho = opts.rho
        self.z: dict[str, torch.Tensor] = {}
        self.u: dict[str, torch.Tensor] = {}
        self.distances: list[float] = []

    @classmethod
    def start(cls, model: nn.Module, plan: Plan, opts: AdmmOptions, *, lr: float) -> AdmmPenalty:
        """The penalty over ``model``'s layers named in ``plan``: Z = P(W), U = 0."""
        hook = cls({name: model.get_submodule(name) for name in plan}, plan, opts, lr)
        for name, layer in hook.layers.items():
            weight = weight_of(layer).detach()
            hook.z[name] = project(layer, weight, plan[name])
            hook.u[name] = torch.zeros_like(weight)
        hook.distances.append(hook.distance())
        return hook

    def penalty(self) -> float:
        """``rho/2 sum ||W - Z + U||^2``, the augmented-Lagrangian term now."""
        with torch.no_grad():
            return 0.5 * self.rho * sum(float(((weight_of(layer) - self.z[n] + self.u[n]) ** 2)
                                              .sum()) for n, layer in self.layers.items())

    def after_step(self, step: int) -> None:
        """The penalty's gradient step; every ``update_every`` steps, the Z/U update."""
        step_size = min(1.0, self.lr * self.rho)
        with torch.no_grad():
            for name, layer in self.layers.items():
                weight = weight_of(layer)
                weight -= step_size * (weight - self.z[name] + self.u[name])
        if (step + 1) % self.opts.update_every == 0:
            self.update()

    def update(self) -> None:
        """Z = P(W + U), U += W - Z; then rho grows and U is rescaled (U = dual / rho)."""
        with torch.no_grad():
            for name, layer in self.layers.items():
                weight = weight_of(layer).detach()
                self.z[name] = project(layer, weight + self.u[name], self.plan[name])
                self.u[name] = self.u[name] + weight - self.z[name]
            grown = min(self.rho * self.opts.rho_growth, self.opts.rho_max)
            for name in self.u:
                self.u[name] *= self.rho / grown
            self.rho = grown
        self.distances.append(self.distance())

    def distance(self) -> float:
        """``||W - P(W)|| / ||W||`` over all constrained layers (0: exactly in the format)."""
        gap = norm = 0.0
        with torch.no_grad():
            for name, layer in self.layers.items():
                weight = weight_of(layer).detach()
                gap += float(((weight - project(layer, weight, self.plan[name])) ** 2).sum())
                norm += float((weight**2).sum())
        return math.sqrt(gap / norm) if norm else 0.0


def admm_train(model: nn.Module, plan: Plan, ctx: StrategyContext) -> AdmmPenalty:
    """Train ``model`` (dense, in place) for ``admm.steps`` steps under the ADMM penalty.

    The learning rate is held constant: the pull towards Z grows with rho.
    """
    opts = ctx.config.admm
    model.to(ctx.config.device)
    hook = AdmmPenalty.start(model, plan, opts, lr=ctx.config.finetune.lr)
    # the dense model's BatchNorm statistics are trained already: no recalibration first
    recipe = dataclasses.replace(ctx.config.finetune, steps=opts.steps, epochs=None,
                                 schedule="constant", bn_batches=0)
    recover(model, ctx.data, recipe, teacher=ctx.baseline, device=ctx.config.device, hook=hook)
    log.info("admm: distance to the constraint %.4f -> %.4f, rho %.3g", hook.distances[0],
             hook.distances[-1], hook.rho)
    return hook


def train_plan(ctx: StrategyContext, plan: Plan) -> Compressed:
    """ADMM training of (a copy of) the dense baseline towards ``plan``, exact factorization,
    then BN recalibration and the fine-tune."""
    dense = copy.deepcopy(ctx.baseline)
    hook = admm_train(dense, plan, ctx)
    model = apply_plan(dense, plan)
    after = test_accuracy(model, ctx)
    train_compressed(model, ctx)
    extra: dict[str, Any] = {"distance_start": hook.distances[0],
                             "distance_end": hook.distances[-1], "rho_end": hook.rho,
                             "admm_steps": ctx.config.admm.steps}
    return Compressed(model, [Stage(plan)], after, test_accuracy(model, ctx), extra=extra)


@register_strategy("admm", train_plan=train_plan)
def admm(ctx: StrategyContext) -> Compressed:
    """ADMM training of the dense model towards the plan, exact factorization, fine-tune."""
    plan = admm_plan(ctx)
    if not plan:
        raise UserError("admm: no eligible layer of this model pays off when factorized")
    return train_plan(ctx, plan)
