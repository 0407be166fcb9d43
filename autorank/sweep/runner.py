"""``search``: baseline, space, trials (Ray Tune or in-process), Pareto front, run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import nn

from .._inventory import inventory
from .._io import check_writable, crash_point, write_json
from ..baseline import PreparedBaseline, ProgressCallback, finish_baseline, prepare_baseline
from ..config import (
    Fidelity,
    SearchConfig,
    SpaceConfig,
    objective_metrics,
    save_config,
)
from ..data import DataBundle, list_datasets
from ..engine import evaluate
from ..errors import UserError
from ..metrics import count_flops, count_params
from ..models import get_model_spec, load_checkpoint
from ..runtime import resolve_device
from ..samplers import make_sampler
from ..types import Baseline
from .finalize import finalize
from .interrupt import held_interrupts, record_interrupt
from .report import chance_warning
from .results import SearchResult, front_of, load_run
from .rundir import RunDir, check_resumable, saved_config, unstarted_run
from .rungs import Scheduler, claim_promotion, open_rung_study, trial_params
from .space import build_space
from .storage import hide_password, open_storage, run_storage
from .study import (
    INTERRUPTED,
    Heartbeat,
    ask_new,
    counts,
    fail_interrupted,
    open_study,
    requeue_interrupted_seeds,
)
from .table import record, trials_frame, write_frame
from .trial import TrialContext, run_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a running search stands, handed to the ``progress`` callback: once when the
    trials start (``phase`` "start"), after every trial ("trials"), and once when the last
    trial has ended and the front is measured ("final": test accuracy and latency, which
    ``eta_s`` then estimates). ``message`` says in words what a "start" or "final" does."""

    done: int
    failed: int
    budget: int
    elapsed_s: float
    eta_s: float
    front: pd.DataFrame
    per_rung: tuple[int, ...] = ()  # multi-fidelity: trials that finished each rung
    phase: str = "trials"
    message: str = ""


class Studies(NamedTuple):
    """The sampler's study and, for a multi-fidelity search, the study of its promotions."""

    trials: Any
    rungs: Any | None = None


class Resources(NamedTuple):
    """How many trials run at once, and each one's CPUs and (fraction of a) GPU."""

    parallel: int
    cpus_per_trial: int
    gpus_per_trial: float


def resolve_resources(cfg: SearchConfig) -> Resources:
    """Concurrent trials and each one's share: parallel defaults to the CPUs (or GPUs) here.

    More parallel trials than local CPUs are capped, with a warning.
    """
    cpus = os.cpu_count() or 1
    if cfg.gpus_per_trial > 0:
        gpus = torch.cuda.device_count() if not cfg.address else None
        if gpus == 0:
            raise UserError("--gpus-per-trial > 0 but no GPU is visible here")
        default_parallel = max(1, int(gpus / cfg.gpus_per_trial)) if gpus else 1
    else:
        default_parallel = cpus // (cfg.cpus_per_trial or 1) or 1
    parallel = cfg.parallel or default_parallel
    if not cfg.address and cfg.runner == "ray" and parallel > cpus:
        log.warning("--parallel %d is more than the %d CPUs here: capped at %d", parallel, cpus, cpus)
        parallel = cpus
    if cfg.runner == "local":
        parallel = 1
    cpus_per_trial = cfg.cpus_per_trial or max(1, cpus // parallel)
    return Resources(parallel, cpus_per_trial, cfg.gpus_per_trial)


def _device(cfg: SearchConfig) -> str:
    return str(resolve_device(cfg.device))


def _prepare_run(cfg: SearchConfig, run: RunDir, resume: bool) -> SearchConfig:
    if resume:
        saved = saved_config(run)
        check_resumable(saved, cfg, run.path)
        return dataclasses.replace(cfg, out=str(run.path),
                                   storage=run_storage(saved.storage, cfg.storage))
    if run.config.exists():
        raise UserError(f"{str(run.path)!r} already holds a run; add --resume to continue it, or "
                        "choose another --out")
    return dataclasses.replace(cfg, out=str(run.path),
                               storage=cfg.storage or run.default_storage())


def _saved(cfg: SearchConfig) -> SearchConfig:
    """The configuration as saved in the run directory: no password in the storage URL."""
    return dataclasses.replace(cfg, storage=hide_password(cfg.storage) if cfg.storage else None)


def _baseline_record(cfg: SearchConfig, run: RunDir, model: nn.Module,
                     data: DataBundle, transfer: dict[str, Any] | None = None) -> Baseline:
    """The run's baseline record: read back from ``baseline.json``, or measured and written.
    Its latency is timed at the end, beside the front's models (``finalize``)."""
    if run.baseline.exists():
        return Baseline.from_json(json.loads(run.baseline.read_text()))
    baseline = Baseline(
        model=cfg.model, dataset=cfg.dataset, val_source=data.val_source,
        val_images=data.num_examples("val"), test_images=data.num_examples("test"),
        val_accuracy=evaluate(model, data, "val", device=_device(cfg)),
        params=count_params(model), flops=count_flops(model, (1, *data.input_shape)),
        num_classes=data.num_classes, transfer=transfer)
    crash_point("baseline")
    write_json(run.baseline, baseline.to_json())
    return baseline


def accuracy_floor(space: SpaceConfig, baseline_val: float | None) -> float | None:
    """The validation accuracy below which the sampler takes a trial as infeasible."""
    if space.max_drop is None or baseline_val is None:
        return None
    return float(baseline_val) - space.max_drop


def _open_study(cfg: SearchConfig, storage: Any) -> tuple[Any, bool]:
    """Create or join the study; the creator samples with ``--seed``, a driver that joins (a
    resume, or a second driver) with a fresh seed so that it does not replay the same draws."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert cfg.storage is not None
    _, modes = objective_metrics(cfg.space)
    directions: list[Any] = ["maximize" if m == "max" else "minimize" for m in modes]

    def sampler_for(created: bool) -> Any:
        seed = cfg.seed if created else int.from_bytes(os.urandom(4), "little")
        return make_sampler(cfg.space.sampler, seed=seed, budget=cfg.budget)

    study, created = open_study(storage, cfg.study_name, directions, sampler_for)
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study {cfg.study_name!r} in {hide_password(cfg.storage)!r} has other "
                        "objectives; use another --study-name")
    return study, created


def _notify(studies: Studies, run: RunDir, cfg: SearchConfig, start: float, done_before: int,
            progress: Callable[[Progress], None] | None) -> Callable[[int], None]:
    fidelity = cfg.space.fidelity

    def on_done(number: int) -> None:
        frame = trials_frame(*studies)
        write_frame(run.trials, frame)
        if progress is None:
            return
        # an interrupted trial is "failed" in the table but did not end: not in the budget
        ended = ~frame["error"].str.startswith(INTERRUPTED)
        finished = int((ended & frame["state"].isin(["complete", "failed"])).sum())
        ran = max(1, finished - done_before)
        elapsed = time.time() - start
        progress(Progress(done=finished, failed=int((ended & (frame["state"] == "failed")).sum()),
                          budget=cfg.budget, elapsed_s=elapsed,
                          eta_s=elapsed / ran * max(0, cfg.budget - finished),
                          front=front_of(frame, cfg), per_rung=_per_rung(frame, fidelity)))

    return on_done


def _per_rung(frame: pd.DataFrame, fidelity: Fidelity | None) -> tuple[int, ...]:
    if fidelity is None or fidelity.top == 0:
        return ()
    done = frame.loc[frame["state"] == "complete", "rung"].fillna(0)
    return tuple(int((done >= r).sum()) for r in range(fidelity.top + 1))


def _check_names(cfg: SearchConfig) -> None:
    """Refuse an unknown model or data set, a checkpoint that cannot be used (unreadable,
    NaN weights), or resources that are not here (a GPU), before anything is written."""
    get_model_spec(cfg.model)
    resolve_resources(cfg)
    if cfg.address and cfg.runner == "ray":
        from .ray_runner import check_reachable

        check_reachable(cfg.address)
    if cfg.checkpoint is not None:
        load_checkpoint(cfg.checkpoint)
    if cfg.dataset.partition(":")[0] not in list_datasets():
        raise UserError(f"unknown data set {cfg.dataset!r}; expected one of {list_datasets()} "
                        "or npz:PATH / imagefolder:PATH")


def search(cfg: SearchConfig, *, resume: bool = False,
           progress: Callable[[Progress], None] | None = None,
           baseline_progress: ProgressCallback | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search; returns its results.

    With ``resume``, ``cfg`` must compute what the run's saved configuration does (only the
    fields of ``rundir.RESUME_MAY_CHANGE``, e.g. the budget, may differ; ``rundir.
    resume_config`` makes such a ``cfg`` from the saved one). Without ``out``, a directory
    that an earlier search of the same configuration left under ``runs/`` before any trial
    finished (say, stopped while training its baseline) is continued, not made anew.

    Args:
        cfg: the search.
        resume: continue the run in ``cfg.out``.
        progress: called with a :class:`Progress` after every trial.
        baseline_progress: told of resized images, and while a baseline is trained first (no
            checkpoint) or transferred: at its start, then every epoch (else these are logged).

    Raises:
        UserError: bad input; nothing of an existing run is overwritten.
        SearchInterrupted: a ``KeyboardInterrupt`` stopped it; what finished is recorded, the
            trials it was running are failed as interrupted, and ``resume`` goes on.
    """
    _check_names(cfg)
    prepared = prepare_baseline(dataclasses.replace(  # all refusals before the run is written
        cfg.baseline_spec(progress=True), device=_device(cfg)), on_progress=baseline_progress)
    cfg = dataclasses.replace(cfg, input_size=prepared.input_size)
    if not resume and (earlier := unstarted_run(cfg)) is not None:
        log.warning("continuing %s, which the same search left before its first trial ended",
                    earlier)
        cfg, resume = dataclasses.replace(cfg, out=str(earlier)), True
    run = RunDir(cfg.out_dir())
    check_writable(run.path)
    with run.lock():
        cfg = _prepare_run(cfg, run, resume)
        assert cfg.storage is not None
        storage = open_storage(cfg.storage, heartbeat_s=cfg.heartbeat_s)  # before writing anything
        save_config(_saved(cfg), run.config)
        try:
            _search_run(cfg, run, storage, progress, baseline_progress, prepared)
        except KeyboardInterrupt as err:
            raise record_interrupt(storage, cfg.study_name, run=run, budget=cfg.budget,
                                   runner=cfg.runner) from err
    return load_run(run.path)


def _search_run(cfg: SearchConfig, run: RunDir, storage: Any,
                progress: Callable[[Progress], None] | None,
                baseline_progress: ProgressCallback | None, prepared: PreparedBaseline) -> None:
    """The search in its run directory, once its configuration is saved."""
    loaded = finish_baseline(prepared, on_progress=baseline_progress)
    model, data = loaded.model, loaded.data
    baseline = _baseline_record(cfg, run, model, data, loaded.transfer)
    if baseline.at_chance():
        log.warning(chance_warning(baseline))
    res = resolve_resources(cfg)
    shape = (1, *data.input_shape)
    space = build_space(model, inventory(model, shape), cfg.space, input_shape=shape)
    study, created = _open_study(cfg, storage)
    fidelity = cfg.space.fidelity
    studies = Studies(study, open_rung_study(storage, cfg.study_name)
                      if fidelity is not None and fidelity.top > 0 else None)
    if created:  # as many seed plans as the budget runs: none left waiting in trials.csv
        for params in space.seeds()[:cfg.budget]:
            study.enqueue_trial(params, skip_if_exists=True)
    else:
        fail_interrupted(study)
        requeue_interrupted_seeds(study)
        if studies.rungs is not None:
            fail_interrupted(studies.rungs)
    done_before, running = counts(study)
    log.info("%d layers searched; %d trial(s) finished, %d running, budget %d",
             len(space.layers), done_before, running, cfg.budget)
    ctx = TrialContext(
        key=uuid.uuid4().hex, model_name=cfg.model, num_classes=data.num_classes,
        input_size=prepared.input_size, baseline_state=model.state_dict(),
        baseline_params=baseline.params, baseline_flops=baseline.flops, data=data,
        space=space, threads=res.cpus_per_trial if cfg.runner == "ray" else os.cpu_count() or 1,
        device="cuda" if res.gpus_per_trial > 0 else _device(cfg),
        weights_dir=str(run.weights), seed=cfg.seed,
        accuracy_floor=accuracy_floor(cfg.space, baseline.val_accuracy))
    start = time.time()
    on_done = _notify(studies, run, cfg, start, done_before, progress)
    if scheduler(cfg, studies, ctx.accuracy_floor).next().kind != "done":
        if progress is not None:
            progress(Progress(
                done=done_before, failed=0, budget=cfg.budget, elapsed_s=0.0, eta_s=0.0,
                front=pd.DataFrame(), phase="start",
                message=f"{len(space.layers)} layers searched, {res.parallel} trial(s) at a time "
                        f"({cfg.runner}); each line below is one trial ended"))
        _run_trials(cfg, ctx, studies, res, run, on_done)
    finalize(cfg, run, studies, model, data, baseline,
             lambda eta, message: progress and progress(Progress(
                 done=cfg.budget, failed=0, budget=cfg.budget, elapsed_s=time.time() - start,
                 eta_s=eta, front=pd.DataFrame(), phase="final", message=message)))


def scheduler(cfg: SearchConfig, studies: Studies, floor: float | None) -> Scheduler:
    """What runs next in this search: promotions first (none of a plan that cannot reach
    ``floor``), then new trials up to the budget."""
    metrics, _ = objective_metrics(cfg.space)
    return Scheduler(studies.trials, cfg.budget, rung_study=studies.rungs,
                     fidelity=cfg.space.fidelity, cost_metrics=metrics[1:], floor=floor)


def _run_local(cfg: SearchConfig, ctx: TrialContext, studies: Studies,
               on_done: Callable[[int], None]) -> None:
    """Trials and promotions in this process, one at a time, until the scheduler is done."""
    metrics, _ = objective_metrics(cfg.space)
    jobs = scheduler(cfg, studies, ctx.accuracy_floor)
    study, rung_study = studies
    with Heartbeat(study) as beat, Heartbeat(rung_study or study) as rung_beat:
        while (job := jobs.next()).kind != "done":
            if job.kind == "wait":
                time.sleep(jobs.poll_s)
                continue
            if job.kind == "promote":
                assert job.number is not None
                with held_interrupts():
                    claimed = claim_promotion(rung_study, job.number, job.rung, rung_beat)
                if claimed is not None:
                    outcome = run_trial(ctx, job.number, trial_params(study, job.number),
                                        rung=job.rung)
                    with held_interrupts():  # Ctrl-C: after the result is recorded whole
                        record(rung_study, claimed, outcome, ["val_accuracy"])
                        rung_beat.discard(claimed._trial_id)
                        on_done(job.number)
                continue
            with held_interrupts():
                asked = ask_new(study, ctx.space, beat)
            if asked is None:
                return
            trial, params = asked
            outcome = run_trial(ctx, trial.number, params)
            with held_interrupts():
                record(study, trial, outcome, metrics, ctx.accuracy_floor)
                beat.discard(trial._trial_id)
                on_done(trial.number)


def _run_trials(cfg: SearchConfig, ctx: TrialContext, studies: Studies, res: Resources,
                run: RunDir, on_done: Callable[[int], None]) -> None:
    if cfg.runner == "local":
        _run_local(cfg, ctx, studies, on_done)
        return
    from .ray_runner import init_ray, run_ray

    gpus = math.ceil(res.parallel * res.gpus_per_trial) if res.gpus_per_trial else None
    init_ray(cfg.address, res.parallel * res.cpus_per_trial, gpus)
    resources = {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    storage_path = Path(cfg.storage_path).expanduser() if cfg.storage_path else run.path / "ray"
    run_ray(ctx, studies=studies, jobs=scheduler(cfg, studies, ctx.accuracy_floor), parallel=res.parallel,
            resources=resources, storage_path=storage_path, on_done=on_done)
