"""One search trial: factorize, recalibrate, fine-tune, evaluate, measure. Used by every runner."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..decompose import apply_plan
from ..engine import NonFiniteLossError, TeacherCache, evaluate, finetune, recalibrate_bn
from ..metrics import count_flops, count_params, measure_latency, num_threads
from ..models import get_model
from ..types import Plan, plan_to_json
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


def train_and_measure(ctx: TrialContext, model: nn.Module) -> dict[str, Any]:
    """A trial's recipe on any compressed ``model``: BatchNorm recalibration, the fine-tune
    with distillation from the baseline, validation accuracy, params, FLOPs, latency.

    ``run_trial`` calls it on the plan's model; benches call it on models compressed another
    way (pruning, say), so that both are measured by exactly the same recipe.
    """
    teacher = _teacher(ctx)
    model = model.to(ctx.device)
    cfg = ctx.space.config.finetune
    shape = (1, *ctx.data.input_shape)
    times: dict[str, float] = {}
    start = time.perf_counter()
    if cfg.bn_batches:
        recalibrate_bn(model, ctx.data, batches=cfg.bn_batches, batch_size=cfg.batch_size,
                       device=ctx.device)
    if cfg.steps:
        finetune(model, ctx.data, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                 teacher=teacher if cfg.distill else None, kd_alpha=cfg.kd_alpha,
                 kd_temperature=cfg.kd_temperature, device=ctx.device, seed=ctx.seed)
    times["finetune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = evaluate(model, ctx.data, "val", device=ctx.device)
    times["evaluate_s"] = time.perf_counter() - start
    model = model.to("cpu") if ctx.device == "cpu" else model
    params, flops = count_params(model), count_flops(model, shape)
    return {
        "val_accuracy": accuracy,
        "params": params,
        "flops": flops,
        "params_ratio": ctx.baseline_params / params,
        "flops_ratio": ctx.baseline_flops / flops if flops else math.inf,
        "latency_ms": measure_latency(model, shape, repeats=10, warmup=2),
        "latency_batch_ms": measure_latency(model, shape, batch_size=ctx.space.config.latency_batch,
                                            repeats=5, warmup=1),
        **times,
    }


FAULT_ENV = "AUTORANK_INJECT_FAULT"


def injected_fault(number: int | None) -> str | None:
    """The fault ``$AUTORANK_INJECT_FAULT`` asks for at trial ``number``, if any.

    The variable holds ``kind:N`` pairs separated by commas (kinds: ``raise``, ``nan``, ``oom``,
    ``kill``). It exists so that the fault-handling guarantees (README, "Guarantees") are tested
    through the real runners; it is unset in normal use.
    """
    import os

    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(",")):
        kind, _, at = item.partition(":")
        if at.strip().isdigit() and int(at) == number:
            return kind.strip()
    return None


def _apply_fault(kind: str | None, ctx: TrialContext) -> TrialContext:
    import os

    if kind == "raise":
        raise RuntimeError("injected fault")
    if kind == "oom":
        raise torch.OutOfMemoryError("injected fault: simulated out of memory")
    if kind == "kill":
        os._exit(13)  # the worker process dies mid-trial, as under the OOM killer
    if kind == "nan":
        # a learning rate that makes the fine-tune diverge for real
        cfg = dataclasses.replace(ctx.space.config.finetune, lr=1e12, steps=max(
            ctx.space.config.finetune.steps, 5))
        space = dataclasses.replace(ctx.space, config=dataclasses.replace(ctx.space.config,
                                                                          finetune=cfg))
        return dataclasses.replace(ctx, space=space)
    return ctx


def run_trial(ctx: TrialContext, params: Mapping[str, Any], *, plan: Plan | None = None
              ) -> dict[str, Any]:
    """Run one trial and return its metrics; never raises for a trial's own failure.

    The plan is ``ctx.space.plan(params)``, or ``plan`` when given (a fixed recipe measured
    under exactly the same fine-tune and measurements, as the benches do).

    Returns:
        A flat dict: ``failed`` (0/1), ``error`` (the reason, when failed), ``plan`` (JSON),
        ``val_accuracy``, ``params``, ``flops``, ``params_ratio``, ``flops_ratio``,
        ``latency_ms`` (batch 1), ``latency_batch_ms``, ``finetune_s``, ``evaluate_s``,
        ``duration_s``.
    """
    start = time.perf_counter()
    out: dict[str, Any] = {"failed": 1, "error": "", "plan": "{}"}
    try:
        with num_threads(ctx.threads):
            ctx = _apply_fault(injected_fault(params.get("trial_number")), ctx)
            plan = ctx.space.plan(params) if plan is None else plan
            out["plan"] = plan_to_json(plan)
            model = apply_plan(_teacher(ctx).teacher, plan)
            out.update(train_and_measure(ctx, model))
            if not math.isfinite(out["val_accuracy"]):
                raise NonFiniteLossError("validation accuracy is not finite")
            if ctx.weights_dir is not None and "trial_number" in params:
                _save_weights(model, Path(ctx.weights_dir), int(params["trial_number"]))
        out["failed"] = 0
    except Exception as err:
        # A plan that cannot be built, a diverging fine-tune, an out-of-memory or any other
        # fault is a result of this trial, not of the search: record why and go on.
        out["error"] = f"{type(err).__name__}: {err}"
        log.warning("trial failed: %s", out["error"])
        log.debug("%s", traceback.format_exc())
    out["duration_s"] = time.perf_counter() - start
    release_memory()
    return out


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
