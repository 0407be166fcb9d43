"""The search: per-layer method and rank, sampled by Optuna, trials run by Ray Tune.

(The package is not named ``search``: that is the public function ``autorank.search``, and
importing a subpackage of the same name would rebind it.)

- ``space``: the define-by-run space over one model's layers;
- ``trial``: one trial (apply the plan, fine-tune, measure), the same in every runner;
- ``runner`` (in process) and ``ray_runner`` (Ray Tune + OptunaSearch): the search itself;
- ``study``, ``storage``, ``table``: the Optuna study, its storage, the trials table;
- ``rundir``, ``results``: the run directory, and a run read back from it;
- ``pareto``, ``report``, ``html_report``: the front, and how it is shown.
"""

from __future__ import annotations

from ..config import SpaceConfig, list_presets, load_space
from .pareto import hypervolume_2d, pareto_front, pareto_mask
from .results import SearchResult, load_run
from .runner import Progress, search
from .space import SearchSpace, build_space
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
