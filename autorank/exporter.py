"""Take one trial of a run away as a model directory (the format: :mod:`autorank.bundle`).

:func:`export` loads the trial's fine-tuned weights onto its plan, or trains the plan again
from the dense baseline by a strategy's recipe (:mod:`autorank.strategies`), optionally
fine-tunes longer, measures the model against the baseline and writes the bundle.

This module is not ``autorank/export.py`` so that ``ar.export`` stays a function: importing
a submodule named ``export`` would rebind that attribute of the package.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ._card import model_card
from ._io import atomic_write, write_json
from .baseline import load_baseline
from .bundle import (
    ONNX_ATOL,
    ONNX_RTOL,
    Exported,
    check_onnx_available,
    check_out,
    check_round_trip,
    describe,
    export_onnx,
    load_exported,
    sample_inputs,
    staged,
    write_bundle,
)
from .config import SearchConfig, save_config
from .data import DataBundle
from .engine import evaluate, recover
from .errors import UserError
from .runtime import resolve_device
from .types import Plan, plan_from_json

if TYPE_CHECKING:
    import pandas as pd

    from .sweep import SearchResult

__all__ = ["Exported", "export", "load_exported"]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def _trial_row(result: SearchResult, trial: int, need_weights: bool = True) -> pd.Series:
    """The trials-table row of ``trial``, refused unless it completed and (``need_weights``) its
    weights were kept."""
    from .sweep.rundir import RunDir

    trials, weights = result.trials, RunDir(result.path).weights
    kept = sorted(int(p.stem.split("-")[1]) for p in weights.glob("trial-*.pt")) \
        if weights.exists() else []
    choose = f"trials with weights: {kept}" if kept else "no trial's weights are kept in this run"
    if not need_weights:
        done = sorted(int(n) for n in trials.loc[trials["state"] == "complete", "number"])
        choose = f"completed trials: {done}" if done else "no trial completed in this run"
    if not len(trials) or trial not in set(trials["number"]):
        top = f"0..{int(trials['number'].max())}" if len(trials) else "none yet"
        raise UserError(f"run {str(result.path)!r} has no trial {trial} (its trials: {top}); {choose}")
    row = trials[trials["number"] == trial].iloc[0]
    if row["state"] != "complete":
        why = f": {row['error']}" if row.get("error") else ""
        raise UserError(f"trial {trial} did not complete ({row['state']}{why}); export a completed "
                        f"one, {choose}")
    if need_weights and trial not in kept:
        raise UserError(f"the weights of trial {trial} were not kept (a finished search keeps only "
                        f"the Pareto front's; --strategy trains any completed trial's plan from "
                        f"the baseline); {choose}")
    return row


def _longer_finetune(model: nn.Module, teacher: nn.Module, data: DataBundle, cfg: SearchConfig,
                     epochs: float, device: str) -> float:
    """Fine-tune the trial's trained model ``epochs`` more by the run's recipe (its BatchNorm
    statistics kept: they are trained already); seconds."""
    recipe = dataclasses.replace(cfg.space.finetune, steps=None, epochs=epochs, seed=cfg.seed,
                                 bn_batches=0)
    _, seconds = _timed(lambda: recover(model, data, recipe, teacher=teacher, device=device))
    return float(seconds)


def _retrain(strategy: str, plan: Plan, baseline: nn.Module, data: DataBundle, cfg: SearchConfig,
             epochs: float, admm_steps: int, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """``plan`` trained from the dense baseline by ``strategy``'s recipe (autorank.strategies),
    with the run's fine-tune recipe for ``epochs``."""
    from .strategies import AdmmOptions, CompressConfig, StrategyContext, train_plan

    recipe = dataclasses.replace(cfg.space.finetune, steps=None, epochs=epochs, seed=cfg.seed)
    config = CompressConfig(finetune=recipe, device=device,
                            admm=AdmmOptions(steps=admm_steps, plan=plan))
    ctx = StrategyContext(baseline.eval(), data, config, (1, *data.input_shape))
    out, seconds = _timed(lambda: train_plan(strategy, ctx, plan))
    return out.model, {"strategy": strategy, "accuracy_after": out.accuracy_after,
                       "finetune_s": float(seconds), "strategy_extra": out.extra,
                       **({"admm_steps": admm_steps} if strategy == "admm" else {})}


def _check_options(finetune_epochs: float, strategy: str | None, admm_steps: int) -> None:
    from .strategies import plan_strategies

    if finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if strategy is not None and strategy not in plan_strategies():
        raise UserError(f"--strategy {strategy!r} cannot train a chosen plan; expected one of "
                        f"{plan_strategies()} (musco picks its own ranks: autorank compress)")
    if strategy is not None and not finetune_epochs:
        raise UserError(f"--strategy {strategy} trains the plan from the dense baseline: give "
                        "--finetune-epochs > 0")
    if admm_steps < 0:
        raise UserError(f"--admm-steps must be >= 0, got {admm_steps}")


def export(run_dir: str | os.PathLike[str], trial: int, out: str | os.PathLike[str], *,
           finetune_epochs: float = 0, onnx: bool = False, strategy: str | None = None,
           admm_steps: int = 200) -> Exported:
    """Export trial ``trial`` of the run in ``run_dir`` to the directory ``out``.

    By default the trial's fine-tuned weights are loaded onto its plan; with
    ``finetune_epochs`` the model is then fine-tuned that much longer by the run's recipe
    (distilling from the dense baseline when it does). With ``strategy`` the trial's plan is
    instead trained from the dense baseline by that strategy's recipe
    (``autorank.strategies.train_plan``): ``vbmf-tucker2`` factorizes at once and fine-tunes
    ``finetune_epochs``; ``admm`` first trains the dense model ``admm_steps`` steps towards the
    plan's ranks (Yin et al. 2021). Test accuracy, params, FLOPs and latency of the model and
    the baseline are measured now and written to ``export.json`` and the model card.

    Args:
        run_dir: a run directory written by ``ar.search``.
        trial: a completed trial whose weights the run kept (the front's, once it finished);
            with ``strategy``, any completed trial.
        out: a new or empty directory, or one holding an earlier export (replaced).
        finetune_epochs: epochs of extra fine-tuning (0: none; > 0 with ``strategy``).
        onnx: also write ``model.onnx`` and check onnxruntime against torch.
        strategy: a name from ``autorank.strategies.plan_strategies()``, or None.
        admm_steps: ADMM training steps of the dense model (``strategy="admm"`` only).

    Raises:
        UserError: unknown, failed or pruned trial; ``out`` holds other files; negative epochs;
            an unknown strategy, or one without fine-tune epochs.
    """
    from .sweep import load_run

    _check_options(finetune_epochs, strategy, admm_steps)
    if onnx:
        check_onnx_available()  # before minutes of work, not after
    result = load_run(run_dir)
    row = _trial_row(result, trial, need_weights=strategy is None)
    check_out(out)
    cfg, device = result.config, str(resolve_device(result.config.device))
    baseline, data = load_baseline(cfg.baseline_spec(progress=True))
    plan = plan_from_json(str(row["plan"]))
    model = result.trial_model(baseline, trial)
    accuracy: dict[str, Any] = {"val_accuracy_search": float(row["val_accuracy"]),
                                "finetune_epochs": finetune_epochs}
    if model is not None and finetune_epochs:
        accuracy["test_accuracy_trial"] = evaluate(model, data, "test", device=device)
    if strategy is not None:
        model, how = _retrain(strategy, plan, baseline, data, cfg, finetune_epochs, admm_steps,
                              device)
        accuracy.update(how)
    elif finetune_epochs:
        assert model is not None  # _trial_row checked the weights exist
        accuracy["finetune_s"] = _longer_finetune(model, baseline, data, cfg, finetune_epochs, device)
    assert model is not None
    accuracy["test_accuracy"] = evaluate(model, data, "test", device=device)
    accuracy.update(run=str(result.path), trial=int(row["number"]))
    return _write(model, plan, out, result, baseline, data, accuracy, onnx=onnx)


def _write(model: nn.Module, plan: Plan, out: str | os.PathLike[str], result: SearchResult,
           baseline: nn.Module, data: DataBundle, extra: dict[str, Any], *,
           onnx: bool) -> Exported:
    """The bundle, the run's config, the model card (and ONNX) of the trial's model in ``out``."""
    cfg = result.config
    with staged(out) as target:
        info = write_bundle(model.cpu(), plan, target, describe(
            model, baseline, data, model_name=cfg.model, dataset=cfg.dataset,
            latency_batch=cfg.space.latency_batch,
            baseline_accuracy={"val_accuracy": result.baseline.get("val_accuracy"),
                               "test_accuracy": result.baseline.get("test_accuracy")},
            **extra))
        save_config(cfg, target / "config.yaml")
        x = sample_inputs(data)
        check_round_trip(model, target, x)
        if onnx:
            info = info.with_extra(onnx={"file": "model.onnx", "atol": ONNX_ATOL, "rtol": ONNX_RTOL,
                                         "max_abs_diff": export_onnx(model, target / "model.onnx", x)})
            write_json(target / "export.json", info.to_json())
        atomic_write(target / "README.md", model_card(info, plan))
    return Exported(Path(out).expanduser().resolve(), info)
