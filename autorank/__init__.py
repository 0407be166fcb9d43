"""autorank: per-layer low-rank decomposition search for trained CNNs.

``import autorank`` is light: it loads torch and tensorly-free decomposition code only; Ray and
Optuna are imported by the search when it runs.
"""

from __future__ import annotations

from .decompose import apply_plan, get_method, list_methods
from .errors import UserError
from .inventory import inventory
from .metrics import count_flops, count_params, measure_latency
from .rank import evbmf_rank, musco_weaken, rank_from_ratio, vbmf_rank_for
from .types import LayerChoice, LayerInfo, Plan, TrialResult, plan_from_json, plan_to_json

__version__ = "0.1.0"

_SUBMODULES = ("config", "data", "engine", "models", "search")


def __getattr__(name: str) -> object:
    # Submodules load on first use: `import autorank` stays light and never imports Ray.
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "LayerChoice",
    "LayerInfo",
    "Plan",
    "TrialResult",
    "UserError",
    "__version__",
    "apply_plan",
    "count_flops",
    "count_params",
    "evbmf_rank",
    "get_method",
    "inventory",
    "list_methods",
    "measure_latency",
    "musco_weaken",
    "plan_from_json",
    "plan_to_json",
    "rank_from_ratio",
    "vbmf_rank_for",
]
