"""The end of a search: the trials table, the front's test accuracy and latency, the
baseline's, the plot, and the weights of trials off the front removed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._io import write_json
from ..config import SearchConfig
from ..data import DataBundle
from ..decompose import apply_plan
from ..engine import evaluate
from ..runtime import resolve_device
from ..types import Baseline, plan_from_json
from .report import front_objective, plot_front
from .results import front_of, trained_model
from .rundir import RunDir
from .table import trials_frame, write_frame


def finalize(cfg: SearchConfig, run: RunDir, studies: tuple[Any, Any | None], model: nn.Module,
             data: DataBundle, baseline: Baseline,
             announce: Callable[[float, str], Any] | None = None) -> None:
    """Trials table; the front's test accuracy and latency (timed here, one model after another,
    interleaved with the dense model, at batch 1 and the space's latency batch), the baseline's,
    the plot; prune weights. ``announce(eta_s, message)`` is told first what this will do."""
    device = str(resolve_device(cfg.device))
    frame = trials_frame(*studies)
    write_frame(run.trials, frame)
    front = front_of(frame, cfg)
    if announce is not None:
        per_model = float(frame["evaluate_s"].median()) if frame["evaluate_s"].notna().any() else 0.0
        announce(per_model * (len(front) + 1) + 2.0 * len(front),
                 f"measuring the front's {len(front)} model(s): test accuracy, then latency")
    if baseline.test_accuracy is None:
        baseline = dataclasses.replace(baseline, test_accuracy=evaluate(model, data, "test",
                                                                          device=device))
    tests, models = [], {}
    shape = (1, *data.input_shape)
    for row in front.itertuples():
        trained = trained_model(model, str(row.plan), run.weights / f"trial-{row.number}.pt",
                                input_shape=shape)
        tests.append(evaluate(trained, data, "test", device=device) if trained else float("nan"))
        # latency depends on the structure only: a trial whose weights are gone is timed too
        models[int(row.number)] = trained if trained is not None else apply_plan(
            model, plan_from_json(str(row.plan)), input_shape=shape, structure_only=True)
    timed = time_models(model, models, data.input_shape, device, cfg.space.latency_batch,
                        backend=cfg.space.latency_backend)
    baseline = dataclasses.replace(baseline, latency_ms=timed["baseline"][0],
                                   latency_batch_ms=timed["baseline"][1])
    write_json(run.baseline, baseline.to_json())
    front = front.assign(test_accuracy=tests,
                         latency_ms=[timed[n][0] for n in front["number"]],
                         latency_batch_ms=[timed[n][1] for n in front["number"]])
    write_frame(run.pareto, front)
    keep = {f"trial-{n}.pt" for n in front["number"]}
    if run.weights.exists():
        for path in run.weights.glob("trial-*.pt"):
            if path.name not in keep:
                path.unlink()
    plot_front(frame, front, baseline, run.plot, objective=front_objective(cfg.space))


def time_models(dense: nn.Module, models: dict[int, nn.Module], input_shape: tuple[int, ...],
                device: str, latency_batch: int, *,
                backend: str = "torch") -> dict[Any, tuple[float, float]]:
    """Median latency (ms) at batch 1 and ``latency_batch`` of each of ``models`` and of the
    ``dense`` one (key "baseline"), timed in turn on this process's threads by the latency
    table's protocol (:func:`autorank.latency.measure_models`), so that the front's speed-ups
    are read against a dense model timed under the same load."""
    from ..latency import Target, measure_models

    named: dict[Any, nn.Module] = {"baseline": dense, **models}
    out: dict[Any, list[float]] = {key: [] for key in named}
    for batch in (1, latency_batch):
        target = Target(device=device, threads=torch.get_num_threads(), batch=batch,
                        backend=backend)
        ms = measure_models({str(k): m.eval() for k, m in named.items()}, input_shape, target)
        for key in named:
            out[key].append(ms[str(key)])
    return {key: (v[0], v[1]) for key, v in out.items()}
