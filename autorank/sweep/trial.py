"""One search trial: factorize, recalibrate, fine-tune, evaluate, measure. Used by every runner."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._env import injected_faults
from ..data import DataBundle
from ..decompose import apply_plan
from ..engine import FinetuneConfig, TeacherCache, TrainHook, evaluate, recover
from ..errors import NonFiniteLossError
from ..latency import LatencyModel, Target
from ..metrics import count_flops, count_params, measure_cost
from ..models import get_model
from ..runtime import num_threads
from ..types import Plan, TrialOutcome, plan_to_json
from .space import SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs, shipped once to every worker (Ray's object store).

    ``key`` identifies the baseline, so a worker process that runs many trials rebuilds it once.
    """

    key: str
    model_name: str
    num_classes: int
    input_size: int
    baseline_state: dict[str, torch.Tensor]
    baseline_params: int
    baseline_flops: int
    data: DataBundle
    space: SearchSpace
    threads: int = 1
    device: str = "cpu"
    weights_dir: str | None = None
    seed: int = 0
    accuracy_floor: float | None = None  # the sampler's feasibility floor (``record``)


# One rebuilt baseline per worker process and run: a reused Ray actor runs many trials. Its
# teacher cache holds the baseline's logits for the fine-tune's batches, which are the same in
# every trial of a run (one seed), so only a process's first trial runs the teacher.
_BASELINES: dict[str, TeacherCache] = {}


def _teacher(ctx: TrialContext) -> TeacherCache:
    """The dense baseline of ``ctx`` as a teacher, built once per process."""
    if ctx.key not in _BASELINES:
        _BASELINES.clear()
        _BASELINES[ctx.key] = TeacherCache(get_model(
            ctx.model_name, num_classes=ctx.num_classes, checkpoint=ctx.baseline_state,
            input_size=ctx.input_size))
    return _BASELINES[ctx.key]


_LATENCY: dict[str, LatencyModel] = {}


def predicted_latency(ctx: TrialContext, plan: Plan) -> float | None:
    """The plan's latency from the latency table of the trial's device and threads, at the
    space's ``latency_objective_batch`` on its ``latency_backend`` (measured lazily, shared on
    disk), when latency is one of the search's objectives."""
    if "latency" not in ctx.space.config.objectives:
        return None
    if ctx.key not in _LATENCY:
        _LATENCY.clear()
        config = ctx.space.config
        target = Target(device=ctx.device, threads=ctx.threads,
                        batch=config.latency_objective_batch, backend=config.latency_backend)
        _LATENCY[ctx.key] = LatencyModel(_teacher(ctx).teacher, ctx.data.input_shape, target)
    return _LATENCY[ctx.key].predict(plan)


def recipe(ctx: TrialContext, rung: int = 0, *, restart: bool = False) -> FinetuneConfig:
    """The fine-tune of ``rung``: the space's recipe, seeded by the search's seed.

    With a multi-fidelity space, rung 0 trains ``rungs[0]`` steps and a promoted trial
    continues from its own weights for ``rungs[r] - rungs[r-1]`` steps: a warm restart of the
    cosine schedule (SGDR, Loshchilov & Hutter 2017) with fresh momentum, no BN recalibration
    (its statistics are trained), on a batch stream of the rung's own (seed + r), the same for
    every trial of that rung. ``restart``: the trial's weights are gone, so the rung starts over
    from the baseline with all ``rungs[r]`` steps.

    Why a warm restart rather than carrying the optimiser state and one schedule across rungs:
    on ResNet-20 (12 plans, 100 / 400 steps) one schedule over all the steps ended +0.05 pp
    higher on average (sd 0.60 pp) while its accuracy at the first rung, read before the lr
    anneals, ranked the plans worse (Kendall's tau 0.82 against 0.94)
    (``bench/final_quality.py --arm continuation``).
    """
    base = dataclasses.replace(ctx.space.config.finetune, seed=ctx.seed)
    fidelity = ctx.space.config.fidelity
    if fidelity is None:
        return base
    rungs = fidelity.rungs
    if rung == 0 or restart:
        return dataclasses.replace(base, steps=rungs[rung], epochs=None, seed=ctx.seed + rung)
    return dataclasses.replace(base, steps=rungs[rung] - rungs[rung - 1], epochs=None,
                               seed=ctx.seed + rung, bn_batches=0)


def rung_steps(ctx: TrialContext, rung: int) -> int | None:
    """Total fine-tune steps behind a rung's accuracy (None: an epoch budget, one rung)."""
    fidelity = ctx.space.config.fidelity
    return fidelity.rungs[rung] if fidelity is not None else ctx.space.config.finetune.steps


def train_and_measure(ctx: TrialContext, model: nn.Module,
                      finetune: FinetuneConfig | None = None, *,
                      latency: bool = False, hook: TrainHook | None = None) -> TrialOutcome:
    """A trial's recipe on any compressed ``model``: :func:`autorank.engine.recover` (BN
    recalibration, the fine-tune with distillation from the baseline), validation accuracy,
    then params and FLOPs, and with ``latency`` its measured latency.

    A search leaves ``latency`` off: trials running side by side on shared cores time each
    other's load, not the model. The search times its front's models at the end, one after
    another and interleaved with the dense model (``runner._finalize``).

    ``run_trial`` calls it on the plan's model; benches call it on models compressed another
    way (pruning, say), so that both are measured by exactly the same recipe; ``hook`` runs
    after every fine-tune step (a bench's look inside the fine-tune).
    """
    teacher = _teacher(ctx)
    model = model.to(ctx.device)
    start = time.perf_counter()
    recover(model, ctx.data, finetune or recipe(ctx), teacher=teacher, device=ctx.device,
            hook=hook)
    finetune_s = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = evaluate(model, ctx.data, "val", device=ctx.device)
    evaluate_s = time.perf_counter() - start
    model = model.to("cpu") if ctx.device == "cpu" else model
    params, flops = count_params(model), count_flops(model, (1, *ctx.data.input_shape))
    timed = (measure_cost(model, ctx.data.input_shape,
                          latency_batch=ctx.space.config.latency_batch) if latency else None)
    return TrialOutcome(
        val_accuracy=accuracy, params=params, flops=flops,
        latency_ms=timed.latency_ms if timed else None,
        latency_batch_ms=timed.latency_batch_ms if timed else None,
        params_ratio=ctx.baseline_params / params,
        flops_ratio=ctx.baseline_flops / flops if flops else math.inf,
        finetune_s=finetune_s, evaluate_s=evaluate_s)


TRIAL_FAULTS = ("raise", "nan", "oom", "kill")


def injected_fault(number: int | None, rung: int = 0) -> str | None:
    """The fault ``$AUTORANK_INJECT_FAULT`` asks for at trial ``number`` (``raise:3``), or at
    its rung ``r`` (``kill:3@1``; ``kill:*@1``: any trial's rung 1), if any.

    It exists so that the fault-handling guarantees (README, "Guarantees") are tested through
    the real runners; it is unset in normal use.
    """
    for kind, where in injected_faults():
        at, _, at_rung = where.partition("@")
        if (kind in TRIAL_FAULTS and (at == "*" or (at.isdigit() and int(at) == number))
                and int(at_rung or 0) == rung):
            return kind
    return None


def _apply_fault(kind: str | None, ctx: TrialContext) -> TrialContext:
    if kind == "raise":
        raise RuntimeError("injected fault")
    if kind == "oom":
        raise torch.OutOfMemoryError("injected fault: simulated out of memory")
    if kind == "kill":
        os._exit(13)  # the worker process dies mid-trial, as under the OOM killer
    if kind == "nan":
        # a learning rate that makes the fine-tune diverge for real
        finetune = ctx.space.config.finetune
        cfg = dataclasses.replace(finetune, lr=1e12, steps=max(finetune.steps or 0, 5), epochs=None)
        space = dataclasses.replace(ctx.space, config=dataclasses.replace(ctx.space.config,
                                                                          finetune=cfg))
        return dataclasses.replace(ctx, space=space)
    return ctx


def run_trial(ctx: TrialContext, number: int | None, params: Mapping[str, Any], *,
              plan: Plan | None = None, rung: int = 0) -> TrialOutcome:
    """Run trial ``number`` at ``rung`` and return its outcome; never raises for a trial's own
    failure.

    The plan is ``ctx.space.plan(params)``, or ``plan`` when given (a fixed recipe measured
    under exactly the same fine-tune and measurements, as the benches do). The trained
    weights are kept in ``ctx.weights_dir`` as ``trial-<number>.pt`` when both are set; a
    promotion (``rung > 0``) continues from them (see :func:`recipe`).
    """
    start = time.perf_counter()
    plan_json = "{}"
    try:
        with num_threads(ctx.threads):
            ctx = _apply_fault(injected_fault(number, rung), ctx)
            plan = ctx.space.plan(params) if plan is None else plan
            plan_json = plan_to_json(plan)
            predicted = predicted_latency(ctx, plan)
            model = apply_plan(_teacher(ctx).teacher, plan, input_shape=(1, *ctx.data.input_shape),
                               importance=ctx.space.config.prune_importance)
            weights = Path(ctx.weights_dir) / f"trial-{number}.pt" if ctx.weights_dir else None
            restart = rung > 0 and (weights is None or not weights.exists())
            if rung > 0 and not restart:
                assert weights is not None
                model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            elif restart:
                log.warning("trial %s: no weights to continue from; rung %d starts over", number, rung)
            outcome = train_and_measure(ctx, model, recipe(ctx, rung, restart=restart))
            if outcome.val_accuracy is None or not math.isfinite(outcome.val_accuracy):
                raise NonFiniteLossError("validation accuracy is not finite")
            if weights is not None and number is not None:
                _save_weights(model, weights.parent, number)
        outcome = dataclasses.replace(outcome, plan=plan_json, rung=rung,
                                      steps=rung_steps(ctx, rung), predicted_latency_ms=predicted)
    except Exception as err:
        # A plan that cannot be built, a diverging fine-tune, an out-of-memory or any other
        # fault is a result of this trial, not of the search: record why and go on.
        outcome = TrialOutcome(failed=True, error=f"{type(err).__name__}: {err}", plan=plan_json,
                               rung=rung)
        log.warning("trial failed: %s", outcome.error)
        log.debug("%s", traceback.format_exc())
    outcome = dataclasses.replace(outcome, duration_s=time.perf_counter() - start)
    release_memory()
    return outcome


def release_memory() -> None:
    """Hand the heap a trial freed back to the OS before the next trial in this process.

    Measured on this stack (Ray 2.60, reuse_actors, CIFAR-10, ResNet-20): without it a worker's
    resident memory grew with every trial until Ray's OOM killer stopped the search at 11 GB
    after 16 trials; glibc keeps the freed batch and activation buffers in its arenas. With
    ``malloc_trim`` after each trial the growth fell from ~120 MB to ~25 MB per trial in a
    40k-image test (ten trials of tiny_cnn).
    """
    import contextlib
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(libc).malloc_trim(0)


def _save_weights(model: nn.Module, folder: Path, number: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".trial-{number}.pt.tmp"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(folder / f"trial-{number}.pt")
