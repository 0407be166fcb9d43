"""The study's samplers, by the name a preset gives (``sampler:``): a registry, no if/elif.

TPE, GP and NSGA-II also read each trial's constraint (the accuracy floor that
``table.record`` sets): Optuna's constrained optimisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._registry import Registry

# name -> fn(seed, budget) -> an Optuna sampler
SamplerFactory = Callable[[int, int], Any]

_SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _startup(budget: int) -> int:
    """Random draws before a model-based sampler starts: a fifth of the budget, 4 to 10."""
    return max(4, min(10, budget // 5))


def _random(seed: int, budget: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(seed: int, budget: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, budget // 5))


def _gp(seed: int, budget: int) -> Any:
    import optuna

    # Gaussian-process Bayesian optimisation (log expected hypervolume improvement for several
    # objectives); it conditions on running trials, so parallel trials spread out. About a
    # second per draw, negligible beside a fine-tune.
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup(budget))


def _tpe(seed: int, budget: int) -> Any:
    import optuna

    # Multivariate TPE models the strength and the per-layer choices jointly; the constant liar
    # keeps parallel trials (of this driver or another on the study) from sampling the same
    # region while they run.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                      n_startup_trials=_startup(budget), constant_liar=True)


for _name, _factory in (("tpe", _tpe), ("gp", _gp), ("random", _random), ("nsga2", _nsga2)):
    _SAMPLERS.add(_name, _factory)


def make_sampler(name: str, *, seed: int, budget: int) -> Any:
    """The Optuna sampler registered as ``name``, seeded, sized for ``budget`` trials.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _SAMPLERS.get(name)(seed, budget)


def list_samplers() -> list[str]:
    """The registered sampler names, sorted."""
    return _SAMPLERS.names()
