"""``search``: baseline, space, trials (Ray Tune or in-process), Pareto front, run directory."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from ..errors import UserError
from ..types import plan_from_json
from .space import SpaceConfig, build_space, objective_metrics
from .store import (
    RunDir,
    crash_point,
    hide_password,
    open_storage,
    record,
    trials_frame,
    write_frame,
    write_json,
)
from .study import Gate, Heartbeat, ask_new, counts, fail_interrupted, open_study
from .trial import TrialContext, run_trial

if TYPE_CHECKING:
    from ..config import SearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a running search stands, handed to the ``progress`` callback after every trial."""

    done: int
    failed: int
    budget: int
    elapsed_s: float
    eta_s: float
    front: pd.DataFrame


@dataclass(frozen=True)
class Resources:
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
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def _prepare_run(cfg: SearchConfig, run: RunDir, resume: bool) -> SearchConfig:
    from ..config import load_config

    if resume:
        if not run.config.exists():
            raise UserError(f"--resume: {str(run.path)!r} holds no autorank run (no config.yaml)")
        saved = load_config(run.config)
        # What may change on resume: the budget and how trials are run, not what they compute.
        keep = {f: getattr(cfg, f) for f in ("budget", "parallel", "cpus_per_trial",
                                             "gpus_per_trial", "address", "runner", "heartbeat_s")}
        return dataclasses.replace(saved, out=str(run.path), storage=run_storage(saved.storage, cfg.storage),
                                   **keep)
    if run.config.exists():
        raise UserError(f"{str(run.path)!r} already holds a run; add --resume to continue it, or "
                        "choose another --out")
    return dataclasses.replace(cfg, out=str(run.path),
                               storage=cfg.storage or run.default_storage())


def run_storage(saved: str | None, given: str | None) -> str | None:
    """The storage URL of a run: the one saved in its directory (password hidden), or
    ``given`` (``--storage``) when it names the same storage, which it must when the saved URL
    hid a password.

    Raises:
        UserError: ``given`` names another storage, or a password is needed and not given.
    """
    if given is None:
        if saved and ":***@" in saved:
            raise UserError(f"the study of this run is in {saved!r}: pass --storage with its "
                            "password (or keep the password in ~/.pgpass)")
        return saved
    if saved is not None and hide_password(given) != saved:
        raise UserError(f"--storage {hide_password(given)!r} is not where this run's study is "
                        f"({saved!r})")
    return given


def _saved(cfg: SearchConfig) -> SearchConfig:
    """The configuration as saved in the run directory: no password in the storage URL."""
    return dataclasses.replace(cfg, storage=hide_password(cfg.storage) if cfg.storage else None)


def _load_baseline(cfg: SearchConfig) -> tuple[nn.Module, Any]:
    from ..baseline import BaselineSpec, load_baseline

    return load_baseline(BaselineSpec(
        cfg.model, cfg.dataset, checkpoint=cfg.checkpoint, data_dir=cfg.data_root(),
        val_source=cfg.val_source, seed=cfg.seed, baseline_epochs=cfg.baseline_epochs,
        input_size=cfg.input_size, device=_device(cfg), val_size=cfg.val_size,
        download=cfg.download, progress=True))


def _baseline_metrics(cfg: SearchConfig, run: RunDir, model: nn.Module, data: Any) -> dict[str, Any]:
    from ..engine import evaluate
    from ..metrics import count_flops, count_params, measure_latency

    if run.baseline.exists():
        import json

        return dict(json.loads(run.baseline.read_text()))
    shape = (1, *data.input_shape)
    info = {
        "model": cfg.model, "dataset": cfg.dataset, "val_source": data.val_source,
        "val_images": data.num_examples("val"), "test_images": data.num_examples("test"),
        "val_accuracy": evaluate(model, data, "val", device=_device(cfg)),
        "params": count_params(model), "flops": count_flops(model, shape),
        "latency_ms": measure_latency(model, shape, repeats=10, warmup=2),
        "latency_batch_ms": measure_latency(model, shape, batch_size=cfg.space.latency_batch,
                                            repeats=5, warmup=1),
        "test_accuracy": None,
    }
    crash_point("baseline")
    write_json(run.baseline, info)
    return info


def accuracy_floor(space: SpaceConfig, baseline_val: float | None) -> float | None:
    """The validation accuracy below which the sampler takes a trial as infeasible."""
    if space.max_drop is None or baseline_val is None:
        return None
    return float(baseline_val) - space.max_drop


def _sampler(cfg: SearchConfig, seed: int) -> Any:
    """The study's sampler. TPE, GP and NSGA-II also read each trial's constraint (the
    accuracy floor that ``record`` sets), Optuna's constrained optimisation."""
    import optuna

    if cfg.space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, cfg.budget // 5))
    startup = max(4, min(10, cfg.budget // 5))
    if cfg.space.sampler == "gp":
        # Gaussian-process Bayesian optimisation (log expected hypervolume improvement for
        # several objectives); it conditions on running trials, so parallel trials spread out.
        # About a second per draw, negligible beside a fine-tune.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    # Multivariate TPE models the strength and the per-layer choices jointly; the constant liar
    # keeps parallel trials (of this driver or another on the study) from sampling the same
    # region while they run.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup,
                                      constant_liar=True)


def _open_study(cfg: SearchConfig, storage: Any) -> tuple[Any, bool]:
    """Create or join the study; the creator samples with ``--seed``, a driver that joins (a
    resume, or a second driver) with a fresh seed so that it does not replay the same draws."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert cfg.storage is not None
    _, modes = objective_metrics(cfg.space)
    directions: list[Any] = ["maximize" if m == "max" else "minimize" for m in modes]

    def sampler_for(created: bool) -> Any:
        return _sampler(cfg, cfg.seed if created else int.from_bytes(os.urandom(4), "little"))

    study, created = open_study(storage, cfg.study_name, directions, sampler_for)
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study {cfg.study_name!r} in {hide_password(cfg.storage)!r} has other "
                        "objectives; use another --study-name")
    return study, created


def _notify(study: Any, run: RunDir, cfg: SearchConfig, start: float, done_before: int,
            progress: Callable[[Progress], None] | None) -> Callable[[int], None]:
    from .pareto import pareto_front

    metrics, modes = objective_metrics(cfg.space)

    def on_done(number: int) -> None:
        frame = trials_frame(study)
        write_frame(run.trials, frame)
        if progress is None:
            return
        finished = int((frame["state"].isin(["complete", "failed"])).sum())
        ran = max(1, finished - done_before)
        elapsed = time.time() - start
        progress(Progress(done=finished, failed=int((frame["state"] == "failed").sum()),
                          budget=cfg.budget, elapsed_s=elapsed,
                          eta_s=elapsed / ran * max(0, cfg.budget - finished),
                          front=pareto_front(frame, metrics, modes)))

    return on_done


def _check_names(cfg: SearchConfig) -> None:
    """Refuse an unknown model or data set before anything is written."""
    from ..data import list_datasets
    from ..models import get_model_spec

    get_model_spec(cfg.model)
    if cfg.dataset.partition(":")[0] not in list_datasets():
        raise UserError(f"unknown data set {cfg.dataset!r}; expected one of {list_datasets()} "
                        "or npz:PATH / imagefolder:PATH")


def search(cfg: SearchConfig, *, resume: bool = False,
           progress: Callable[[Progress], None] | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search; returns its results.

    Raises:
        UserError: bad input; nothing of an existing run is overwritten.
    """
    from ..config import save_config

    _check_names(cfg)
    run = RunDir(cfg.out_dir())
    with run.lock():
        cfg = _prepare_run(cfg, run, resume)
        assert cfg.storage is not None
        storage = open_storage(cfg.storage, heartbeat_s=cfg.heartbeat_s)  # before writing anything
        save_config(_saved(cfg), run.config)
        model, data = _load_baseline(cfg)
        baseline = _baseline_metrics(cfg, run, model, data)
        res = resolve_resources(cfg)
        from ..inventory import inventory

        space = build_space(model, inventory(model, (1, *data.input_shape)), cfg.space)
        study, created = _open_study(cfg, storage)
        if created:
            for params in space.seeds():
                study.enqueue_trial(params, skip_if_exists=True)
        else:
            fail_interrupted(study)
        done_before, running = counts(study)
        log.info("%d layers searched; %d trial(s) finished, %d running, budget %d",
                 len(space.layers), done_before, running, cfg.budget)
        ctx = TrialContext(
            key=uuid.uuid4().hex, model_name=cfg.model, num_classes=data.num_classes,
            input_size=cfg.input_size, baseline_state=model.state_dict(),
            baseline_params=baseline["params"], baseline_flops=baseline["flops"], data=data,
            space=space, threads=res.cpus_per_trial if cfg.runner == "ray" else os.cpu_count() or 1,
            device="cuda" if res.gpus_per_trial > 0 else _device(cfg),
            weights_dir=str(run.weights), seed=cfg.seed,
            accuracy_floor=accuracy_floor(cfg.space, baseline.get("val_accuracy")))
        on_done = _notify(study, run, cfg, time.time(), done_before, progress)
        if done_before < cfg.budget:
            _run_trials(cfg, ctx, study, res, run, on_done)
        _finalize(cfg, run, study, model, data, baseline)
    return load_run(run.path)


def _run_local(cfg: SearchConfig, ctx: TrialContext, study: Any,
               on_done: Callable[[int], None]) -> None:
    """Trials in this process, one at a time, until the study holds ``budget`` finished ones."""
    metrics, _ = objective_metrics(cfg.space)
    gate = Gate(study, cfg.budget)
    with Heartbeat(study) as beat:
        while (step := gate.step()) != "done":
            if step == "wait":
                time.sleep(gate.poll_s)
                continue
            asked = ask_new(study, ctx.space, beat)
            if asked is None:
                return
            trial, params = asked
            record(study, trial, run_trial(ctx, params), metrics, ctx.accuracy_floor)
            beat.discard(trial._trial_id)
            on_done(trial.number)


def _run_trials(cfg: SearchConfig, ctx: TrialContext, study: Any, res: Resources,
                run: RunDir, on_done: Callable[[int], None]) -> None:
    if cfg.runner == "local":
        _run_local(cfg, ctx, study, on_done)
        return
    from .ray_runner import init_ray, run_ray

    gpus = math.ceil(res.parallel * res.gpus_per_trial) if res.gpus_per_trial else None
    init_ray(cfg.address, res.parallel * res.cpus_per_trial, gpus)
    resources = {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    storage_path = Path(cfg.storage_path).expanduser() if cfg.storage_path else run.path / "ray"
    run_ray(ctx, study=study, sampler=study.sampler, budget=cfg.budget, parallel=res.parallel,
            resources=resources, storage_path=storage_path, on_done=on_done)


def _front_model(baseline: nn.Module, plan_json: str, weights: Path) -> nn.Module | None:
    from ..decompose import apply_plan

    if not weights.exists():
        return None
    model = apply_plan(baseline, plan_from_json(plan_json))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def _finalize(cfg: SearchConfig, run: RunDir, study: Any, model: nn.Module, data: Any,
              baseline: dict[str, Any]) -> None:
    """Trials table, the front with its test accuracy, the baseline's, the plot; prune weights."""
    from ..engine import evaluate
    from .pareto import pareto_front
    from .report import plot_front

    device = _device(cfg)
    frame = trials_frame(study)
    write_frame(run.trials, frame)
    metrics, modes = objective_metrics(cfg.space)
    front = pareto_front(frame, metrics, modes)
    if baseline.get("test_accuracy") is None:
        baseline["test_accuracy"] = evaluate(model, data, "test", device=device)
        write_json(run.baseline, baseline)
    tests = []
    for row in front.itertuples():
        trained = _front_model(model, str(row.plan), run.weights / f"trial-{row.number}.pt")
        tests.append(evaluate(trained, data, "test", device=device) if trained else float("nan"))
    front = front.assign(test_accuracy=tests)
    write_frame(run.pareto, front)
    keep = {f"trial-{n}.pt" for n in front["number"]}
    if run.weights.exists():
        for path in run.weights.glob("trial-*.pt"):
            if path.name not in keep:
                path.unlink()
    plot_front(frame, front, baseline, run.plot)


@dataclass(frozen=True)
class SearchResult:
    """A finished (or partly finished) run, read back from its directory."""

    path: Path
    config: SearchConfig
    trials: pd.DataFrame
    baseline: dict[str, Any]

    def pareto(self) -> pd.DataFrame:
        """The front of the trials, with the test accuracy the search measured when it finished
        (NaN for a front trial it did not measure: one run later, or by another driver)."""
        pareto_csv = RunDir(self.path).pareto
        if self.trials.empty:
            return pd.read_csv(pareto_csv) if pareto_csv.exists() else self.trials
        from .pareto import pareto_front

        metrics, modes = objective_metrics(self.config.space)
        front = pareto_front(self.trials, metrics, modes).drop(columns="test_accuracy",
                                                                errors="ignore")
        measured = (pd.read_csv(pareto_csv, usecols=["number", "test_accuracy"])
                    if pareto_csv.exists() else pd.DataFrame(columns=["number", "test_accuracy"]))
        return front.merge(measured, on="number", how="left")


def load_run(path: str | os.PathLike[str]) -> SearchResult:
    """Read a run directory written by :func:`search`.

    Raises:
        UserError: the directory holds no run.
    """
    import json

    from ..config import load_config

    run = RunDir(Path(path).expanduser().resolve())
    if not run.config.exists():
        raise UserError(f"{str(run.path)!r} holds no autorank run (no config.yaml)")
    trials = (pd.read_csv(run.trials, dtype={"error": str, "plan": str})
              if run.trials.exists() else pd.DataFrame())
    if "error" in trials:
        trials["error"] = trials["error"].fillna("")
    baseline = json.loads(run.baseline.read_text()) if run.baseline.exists() else {}
    return SearchResult(run.path, load_config(run.config), trials, baseline)
