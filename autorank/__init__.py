"""autorank: per-layer low-rank decomposition search for trained CNNs.

``import autorank`` is light: it imports neither torch nor Ray. Every public name of ``__all__``
and every submodule (``config``, ``data``, ``decompose``, ``engine``, ``exporter``, ``latency``,
``metrics``, ``models``, ``rank``, ``sweep``, ``types``) loads on first use, so that the command
line answers ``--help`` and ``models`` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import AutorankError, UserError

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from torch import nn

    from ._deploy import deploy
    from ._inventory import inventory
    from .bundle import Exported
    from .config import SearchConfig
    from .decompose import apply_plan, get_method, list_methods
    from .metrics import count_flops, count_params, measure_latency
    from .rank import evbmf_rank, musco_weaken, rank_from_ratio, vbmf_rank_for
    from .sweep import Progress, SearchResult
    from .types import (
        Baseline,
        LayerChoice,
        LayerInfo,
        Plan,
        TrialOutcome,
        plan_from_json,
        plan_to_json,
    )

__version__ = "0.1.0"

_SUBMODULES = ("config", "data", "decompose", "engine", "exporter", "latency", "metrics",
               "models", "rank", "sweep", "types")

# Public name -> the module that defines it, imported on first use (PEP 562).
_LAZY = {
    "deploy": "_deploy", "inventory": "_inventory",
    "apply_plan": "decompose", "get_method": "decompose", "list_methods": "decompose",
    "count_flops": "metrics", "count_params": "metrics", "measure_latency": "metrics",
    "evbmf_rank": "rank", "musco_weaken": "rank", "rank_from_ratio": "rank",
    "vbmf_rank_for": "rank",
    "Baseline": "types", "LayerChoice": "types", "LayerInfo": "types", "Plan": "types",
    "TrialOutcome": "types", "plan_from_json": "types", "plan_to_json": "types",
}


def search(config: SearchConfig, *, resume: bool = False,
           progress: Callable[[Progress], None] | None = None) -> SearchResult:
    """Run a search (see :func:`autorank.sweep.search`); Ray is imported only here."""
    from .sweep import search as run

    return run(config, resume=resume, progress=progress)


def load_run(path: str | os.PathLike[str]) -> SearchResult:
    """Read a run directory back (see :func:`autorank.sweep.load_run`)."""
    from .sweep import load_run as load

    return load(path)


def export(run_dir: str | os.PathLike[str], trial: int, out: str | os.PathLike[str], *,
           finetune_epochs: float = 0, onnx: bool = False, strategy: str | None = None,
           admm_steps: int = 200) -> Exported:
    """Export one trial of a run to a model directory (see :func:`autorank.exporter.export`)."""
    from .exporter import export as run

    return run(run_dir, trial, out, finetune_epochs=finetune_epochs, onnx=onnx,
               strategy=strategy, admm_steps=admm_steps)


def load_exported(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild an exported model as plain torch (see :func:`autorank.bundle.load_exported`)."""
    from .bundle import load_exported as load

    return load(path)


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The curated surface (PEP 562), not the helpers this module imports for itself.
    return sorted([*__all__, *_SUBMODULES])


__all__ = [
    "AutorankError",
    "Baseline",
    "LayerChoice",
    "LayerInfo",
    "Plan",
    "TrialOutcome",
    "UserError",
    "__version__",
    "apply_plan",
    "count_flops",
    "count_params",
    "deploy",
    "evbmf_rank",
    "export",
    "get_method",
    "inventory",
    "list_methods",
    "load_exported",
    "load_run",
    "measure_latency",
    "musco_weaken",
    "plan_from_json",
    "plan_to_json",
    "rank_from_ratio",
    "search",
    "vbmf_rank_for",
]
