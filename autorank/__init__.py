"""autorank: per-layer low-rank decomposition search for trained CNNs.

``import autorank`` is light: it loads torch and the decomposition code only; Ray and Optuna
are imported by the search when it runs. The public names are those of ``__all__``; the
submodules ``config``, ``data``, ``engine``, ``exporter``, ``models`` and ``sweep`` (the search)
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .decompose import apply_plan, get_method, list_methods
from .deploy import deploy
from .errors import AutorankError, UserError
from .inventory import inventory
from .metrics import count_flops, count_params, measure_latency
from .rank import evbmf_rank, musco_weaken, rank_from_ratio, vbmf_rank_for
from .types import (
    Baseline,
    LayerChoice,
    LayerInfo,
    Plan,
    TrialOutcome,
    plan_from_json,
    plan_to_json,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from torch import nn

    from .bundle import Exported
    from .config import SearchConfig
    from .sweep import Progress, SearchResult

__version__ = "0.1.0"

_SUBMODULES = ("config", "data", "engine", "exporter", "models", "sweep")


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
    # Submodules load on first use: `import autorank` stays light and never imports Ray.
    if name in _SUBMODULES:
        import importlib

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
