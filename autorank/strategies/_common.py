"""What every strategy shares: its config, its context, its outcome, the results row, and the
measuring and training steps (evaluate; recover: BN recalibration, fine-tune with distillation).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..data import DataBundle
from ..engine import FinetuneConfig, FinetuneResult, evaluate, recover
from ..errors import UserError
from ..metrics import count_flops, count_params
from ..types import Plan
from ._registry import get_strategy

ADMM_METHODS = ("tucker2", "tt")


@dataclass(frozen=True)
class MuscoOptions:
    """Options of ``musco`` (Gusak et al. 2019); it stops at whichever limit comes first."""

    stages: int = 2
    w: float = 0.8  # weakening factor: rank = R - w (R - r_vbmf); 1 is EVBMF, 0 the full rank
    target_ratio: float | None = None  # stop once params before / after reaches this
    max_drop: float | None = None  # stop when val accuracy falls more than this below baseline


@dataclass(frozen=True)
class AdmmOptions:
    """Options of ``admm`` (Yin et al. 2021): ranks, and the augmented-Lagrangian schedule."""

    steps: int = 200  # training steps of the dense model under the penalty
    method: str = "tucker2"  # format of the k x k convs: "tucker2" or "tt" (1x1/linear: svd)
    ratio: float = 4.0  # per-layer params ratio the ranks are chosen for (rank_from_ratio)
    plan: Plan | None = None  # explicit ranks; overrides method and ratio
    rho: float = 1.0  # initial penalty weight
    rho_growth: float = 1.3  # rho *= growth at every Z/U update ...
    rho_max: float = 20.0  # ... up to this (the pull per step is lr x rho, at most 1)
    update_every: int = 10  # steps between Z/U updates


@dataclass(frozen=True)
class CompressConfig:
    """Options shared by every strategy; the strategy-specific ones are nested."""

    # every fine-tune's recipe, BN recalibration and distillation from the baseline included
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(steps=200))
    eval_limit: int | None = None  # evaluate on the first N images of a split only
    keep_ends: bool = True  # the first conv and the classifier stay dense
    exclude: tuple[str, ...] = ()  # more layers to keep dense, by dotted-name glob
    device: str = "cpu"
    musco: MuscoOptions = field(default_factory=MuscoOptions)
    admm: AdmmOptions = field(default_factory=AdmmOptions)

    def __post_init__(self) -> None:
        m, a = self.musco, self.admm
        checks = [
            (m.stages >= 1, f"stages must be >= 1, got {m.stages}"),
            (0.0 <= m.w <= 1.0, f"w must be in [0, 1], got {m.w}"),
            (m.target_ratio is None or m.target_ratio > 1, "target ratio must be > 1"),
            (m.max_drop is None or 0 <= m.max_drop <= 1, "max drop must be in [0, 1]"),
            (a.method in ADMM_METHODS, f"ADMM format must be one of {list(ADMM_METHODS)}, "
             f"got {a.method!r}"),
            (a.steps >= 0 and a.ratio > 1, "ADMM steps must be >= 0 and its ratio > 1"),
            (a.rho > 0 and a.rho_max >= a.rho and a.rho_growth >= 1,
             "need rho > 0, rho_max >= rho and rho_growth >= 1"),
            (a.update_every >= 1, f"update_every must be >= 1, got {a.update_every}"),
            (self.eval_limit is None or self.eval_limit > 0, "eval limit must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy works from: the dense baseline (never modified), data, options."""

    baseline: nn.Module
    data: DataBundle
    config: CompressConfig
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class Stage:
    """One factorization step: a plan over the model as it was, then (``fuse``) the new
    outer 1x1 convs / linears multiplied into their neighbours (MUSCO's later stages)."""

    plan: Plan
    fuse: bool = False


@dataclass
class Compressed:
    """A strategy's outcome: the final model, how to rebuild it, and its test accuracies."""

    model: nn.Module
    stages: list[Stage]
    accuracy_after: float  # right after the (last) factorization, before its fine-tune
    fine_tune: float  # after the final fine-tune
    table: list[dict[str, Any]] = field(default_factory=list)  # per-stage rows (musco)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultRow:
    """The reference slides' columns, plus wall time and the raw counts behind the ratios.

    ``params_ratio`` and ``flops_ratio`` are before / after (FLOPs: multiply-add = 2); accuracies are
    top-1 on the test split (or its first ``test_images``), in [0, 1].
    """

    model: str
    strategy: str
    params_ratio: float
    flops_ratio: float
    accuracy_before: float
    accuracy_after: float
    fine_tune: float
    wall_s: float
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    test_images: int
    finetune_steps: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def test_accuracy(model: nn.Module, ctx: StrategyContext) -> float:
    """Top-1 on the test split (reporting only: nothing is chosen by it)."""
    return evaluate(model, ctx.data, "test", device=ctx.config.device, limit=ctx.config.eval_limit)


def val_accuracy(model: nn.Module, ctx: StrategyContext) -> float:
    """Top-1 on the validation split, which stopping rules may look at."""
    return evaluate(model, ctx.data, "val", device=ctx.config.device, limit=ctx.config.eval_limit)


def train_compressed(model: nn.Module, ctx: StrategyContext) -> FinetuneResult | None:
    """``ctx.config.finetune`` applied to ``model`` by :func:`autorank.engine.recover` (BN
    recalibration, then the fine-tune, distilling from the baseline unless switched off).

    Returns None when the fine-tune has no steps.
    """
    return recover(model, ctx.data, ctx.config.finetune, teacher=ctx.baseline,
                   device=ctx.config.device)


def ratio(before: int, after: int) -> float:
    """``before / after``; infinite for an empty ``after``."""
    return before / after if after else math.inf


def compress(strategy: str, model_name: str, baseline: nn.Module, data: DataBundle,
             config: CompressConfig | None = None) -> tuple[ResultRow, Compressed]:
    """Run one strategy end to end on ``baseline`` and measure it.

    Args:
        strategy: a name from :func:`list_strategies`.
        model_name: the registry name of the baseline's architecture (for the row).
        baseline: the trained dense model; left unchanged.
        data: fine-tuning images come from ``train``, accuracies from ``test``.
        config: options (default :class:`CompressConfig`).

    Returns:
        The results row and the strategy's outcome.

    Raises:
        ValueError: unknown strategy, or options the model cannot take.
    """
    fn = get_strategy(strategy)
    cfg = config or CompressConfig()
    start = time.perf_counter()
    baseline.eval()
    ctx = StrategyContext(baseline, data, cfg, (1, *data.input_shape))
    before = test_accuracy(baseline, ctx)
    out = fn(ctx)
    wall = time.perf_counter() - start
    model = out.model.to("cpu")
    params = (count_params(baseline), count_params(model))
    flops = (count_flops(baseline.to("cpu"), ctx.input_shape), count_flops(model, ctx.input_shape))
    test_images = min(data.num_examples("test"), cfg.eval_limit or data.num_examples("test"))
    row = ResultRow(model_name, strategy, ratio(*params), ratio(*flops), before,
                    out.accuracy_after, out.fine_tune, wall, *params, *flops, test_images,
                    int(cfg.finetune.steps or 0))
    return row, out
