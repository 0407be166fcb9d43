"""The founding methods as complete single runs ("strategies"), each a registered function.

- ``vbmf-tucker2``: one-shot Tucker-2 / SVD at EVBMF ranks, then fine-tune (Kim et al. 2016).
- ``musco``: stages of factorizing at weakened EVBMF ranks and fine-tuning, later stages
  compressing the factorized layers again (Gusak et al. 2019).
- ``admm``: ADMM training of the dense model towards Tucker-2 / TT ranks, exact factorization,
  fine-tune (Yin et al. 2021).

``compress(name, model_name, baseline, data, config)`` runs one and returns the results row
(the reference slides' columns) with the compressed model; ``train_plan(name, ctx, plan)``
gives a plan chosen elsewhere (a search's pick) its final training by a strategy's recipe.
"""

from __future__ import annotations

from ..baseline import BaselineSpec, load_baseline
from . import admm, musco, vbmf_tucker2  # noqa: F401  (registers the strategies)
from ._common import (
    AdmmOptions,
    CompressConfig,
    Compressed,
    MuscoOptions,
    ResultRow,
    Stage,
    StrategyContext,
    compress,
)
from ._io import read_plan, save_compressed
from ._plans import apply_stage, dense_weight, merge_into_neighbours, rebuild, vbmf_plan
from ._registry import (
    get_strategy,
    list_strategies,
    plan_strategies,
    register_strategy,
    train_plan,
)
from .admm import AdmmPenalty, admm_plan, admm_train

__all__ = [
    "AdmmOptions",
    "AdmmPenalty",
    "BaselineSpec",
    "CompressConfig",
    "Compressed",
    "MuscoOptions",
    "ResultRow",
    "Stage",
    "StrategyContext",
    "admm_plan",
    "admm_train",
    "apply_stage",
    "compress",
    "dense_weight",
    "get_strategy",
    "list_strategies",
    "load_baseline",
    "merge_into_neighbours",
    "plan_strategies",
    "read_plan",
    "rebuild",
    "register_strategy",
    "save_compressed",
    "train_plan",
    "vbmf_plan",
]
