"""The search: per-layer method and rank, sampled by Optuna, trials run by Ray Tune."""

from __future__ import annotations

from .pareto import hypervolume_2d, pareto_front, pareto_mask
from .runner import Progress, SearchResult, load_run, search
from .space import SearchSpace, SpaceConfig, build_space, list_presets, load_space
from .trial import TrialContext, run_trial

__all__ = [
    "Progress",
    "SearchResult",
    "SearchSpace",
    "SpaceConfig",
    "TrialContext",
    "build_space",
    "hypervolume_2d",
    "list_presets",
    "load_run",
    "load_space",
    "pareto_front",
    "pareto_mask",
    "run_trial",
    "search",
]
