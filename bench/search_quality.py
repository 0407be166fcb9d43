"""Does the search beat random sampling and the one-shot recipes? ResNet-20 on CIFAR-10.

Arms, all with the same per-trial fine-tune (steps, lr, distillation, BN recalibration) and in
one run:

- ``gp``: autorank's space (``cifar_resnet`` preset: a method and a rank offset per group of 6
  convs; ``--groups 0`` searches them per layer) with Optuna's Gaussian-process sampler (log
  expected hypervolume improvement), Ray Tune, ``--parallel 2``;
- ``tpe``: the same with multivariate TPE (constant liar);
- ``gp-c``, ``tpe-c``: the same, the sampler told the region of interest (``max_drop`` 0.10: a
  trial more than 10 pp below the baseline's validation accuracy is infeasible to it; the
  arms without ``-c`` run with ``max_drop: null``);
- ``random``: the same space and seeds with Optuna's RandomSampler, Ray Tune,
  ``--random-parallel`` (1 also gives trials/hour at parallel 1 vs 2);
- ``random-p1``: ``random`` at ``--parallel 1`` (2 threads), for trials/hour at 1 vs 2;
- ``gp-flops``: ``gp`` minimising FLOPs instead of params (``--objectives accuracy,flops``):
  the arm to hold against pruning at equal FLOPs;
- ``hybrid-flops``, ``factorize-flops``, ``prune-flops``: the search minimising FLOPs over a
  space with both ``prune`` and the factorizations, the factorizations only, and ``prune``
  only (the searched L1 pruning; ``prune`` in ``--arms`` adds the fixed uniform ratios);
- ``vbmf``: the one-shot Kim et al. recipe (Tucker-2 at EVBMF ranks), trial 0 of each search;
- ``uniform-*``: Tucker-2 keeping the same fraction of every layer's channels;
- ``prune-l1-*``: plain structured pruning, the baseline a factorization must beat at equal
  FLOPs: L1-norm filter pruning of the first conv of every residual block (Li et al., ICLR
  2017, "Pruning Filters for Efficient ConvNets"; their ResNet recipe leaves the convs that
  feed the residual sum alone, which the option-A shortcuts of these ResNets need too) at a
  uniform ratio, by torch-pruning's dependency graph (``pip install -e '.[bench]'``), then
  the same fine-tune.

Validation = a seeded part of the CIFAR-10 test split (the checkpoint saw all 50k training
images), test = the rest; test accuracy only for the front. Hypervolume in the plane
(params / baseline params, 1 - val accuracy), both minimised, reference point
(1.0, 1 - (baseline val accuracy - 0.10)): only models smaller than the baseline and within
10 pp of its accuracy count.

    python bench/search_quality.py                # needs AUTORANK_DATA_DIR, AUTORANK_WEIGHTS_DIR
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autorank.config import make_config, space_from_dict
from autorank.sweep import hypervolume_2d, pareto_front, search
from autorank.sweep.study import INTERRUPTED
from autorank.sweep.table import busy_seconds

RESULTS = Path(__file__).parent / "results"
# arm -> space overrides; every arm gets the same space, seeds, budget and fine-tune
SEARCH_ARMS: dict[str, dict] = {
    "gp": {"sampler": "gp", "max_drop": None},
    "gp-c": {"sampler": "gp", "max_drop": 0.10},
    "tpe": {"sampler": "tpe", "max_drop": None},
    "tpe-c": {"sampler": "tpe", "max_drop": 0.10},
    "random": {"sampler": "random", "max_drop": 0.10},
    # the search told to minimise FLOPs instead of params (--objectives accuracy,flops)
    "gp-flops": {"sampler": "gp", "max_drop": None, "objectives": ["accuracy", "flops"]},
    # random sampling one trial at a time with both threads: trials/hour at parallel 1 vs 2
    "random-p1": {"sampler": "random", "max_drop": 0.10},
    # prune or factorize, in the FLOPs plane: the hybrid space against each pure one
    "hybrid-flops": {"sampler": "gp", "max_drop": 0.10, "objectives": ["accuracy", "flops"],
                     "methods": ["tucker2", "tt", "svd", "spatial_svd", "prune", "keep"]},
    "factorize-flops": {"sampler": "gp", "max_drop": 0.10, "objectives": ["accuracy", "flops"],
                        "methods": ["tucker2", "tt", "svd", "spatial_svd", "keep"]},
    "prune-flops": {"sampler": "gp", "max_drop": 0.10, "objectives": ["accuracy", "flops"],
                    "methods": ["prune", "keep"]},
}
log = logging.getLogger("search_quality")


def arm_config(args: argparse.Namespace, out: Path, parallel: int,  # noqa: ANN201
               overrides: dict):
    cfg = make_config(
        space="cifar_resnet", model="resnet20", dataset="cifar10",
        checkpoint=str(Path(os.environ["AUTORANK_WEIGHTS_DIR"]) / "resnet20-12fca82f.th"),
        val_source="test", val_size=args.val_size, budget=args.budget, runner="ray",
        parallel=parallel, cpus_per_trial=max(1, 2 // parallel), out=str(out), seed=args.seed,
        finetune_steps=args.steps)
    overrides = dict(overrides)
    if args.groups is not None:
        overrides["groups"] = args.groups
    return dataclasses.replace(cfg, space=space_from_dict(overrides, base=cfg.space))


def hypervolumes(done: pd.DataFrame, baseline: dict) -> dict[str, float]:
    """Hypervolume of the completed trials in the (params, 1 - acc) and (FLOPs, 1 - acc) planes."""
    reference = (1.0, 1 - (baseline["val_accuracy"] - 0.10))
    return {f"hypervolume{suffix}": hypervolume_2d(np.stack(
        [done[cost] / baseline[cost], 1 - done["val_accuracy"]], axis=1), reference)
        for cost, suffix in (("params", ""), ("flops", "_flops"))}


def summarise(name: str, trials: pd.DataFrame, tested: pd.DataFrame, baseline: dict,
              wall_s: float | None, parallel: int) -> dict:
    """One arm's numbers; ``tested`` holds the test accuracy of the run's own front."""
    base_acc = baseline["val_accuracy"]
    done = trials[trials["state"] == "complete"]
    # the front's models as the search timed them at its end (one after another, beside the
    # dense model), where it did
    measured = ["number", "test_accuracy",
                *[c for c in ("latency_ms", "latency_batch_ms") if c in tested]]
    # the trials table has empty latency columns of its own: without dropping them the merge
    # would name the measured ones latency_ms_y
    fronts = {cost: pareto_front(done, ["val_accuracy", cost], ["max", "min"]).drop(
        columns=measured[1:], errors="ignore").merge(tested[measured], on="number", how="left")
        for cost in ("params", "flops")}
    best = {}
    for cost, front in fronts.items():
        ok = front[front["val_accuracy"] >= base_acc - 0.01].sort_values(cost)
        best[cost] = ok.iloc[0] if len(ok) else None
    inner = (done["finetune_s"] + done["evaluate_s"]).sum()
    trial_phase_s = busy_seconds(trials)  # a resumed run's pause is not trial time
    p, f = best["params"], best["flops"]
    # a trial whose driver stopped (a resumed run) is failed as interrupted, not by its plan
    failed = trials["state"] == "failed"
    interrupted = trials.get("error", pd.Series("", index=trials.index)).astype(str).str.startswith(
        INTERRUPTED)
    return {
        "arm": name, "trials": len(trials), "failed": int((failed & ~interrupted).sum()),
        "interrupted": int((failed & interrupted).sum()),
        **hypervolumes(done, baseline),
        "best_params_ratio_1pp": float(p["params_ratio"]) if p is not None else None,
        "its_flops_ratio": float(p["flops_ratio"]) if p is not None else None,
        "its_val": float(p["val_accuracy"]) if p is not None else None,
        "its_test": float(p["test_accuracy"]) if p is not None else None,
        "best_flops_ratio_1pp": float(f["flops_ratio"]) if f is not None else None,
        "its_val_flops": float(f["val_accuracy"]) if f is not None else None,
        "wall_s": wall_s, "trial_phase_s": trial_phase_s, "parallel": parallel,
        "trials_per_hour": 3600 * len(trials) / trial_phase_s,
        # the share of the trial slots' time (first trial start to last trial end, times the
        # parallel slots) spent outside fine-tune and evaluation: scheduling, plan building,
        # cost measurements, the driver's bookkeeping
        "overhead_pct": 100 * (1 - inner / (trial_phase_s * parallel)),
        "in_trial_overhead_s": float((done["duration_s"] - done["finetune_s"]
                                      - done["evaluate_s"]).mean()),
        "front": front_points(fronts["params"]),
        "flops_front": front_points(fronts["flops"]),
    }


def front_points(front: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("number", "params_ratio", "flops_ratio", "val_accuracy", "test_accuracy",
                        "latency_ms", "latency_batch_ms") if c in front]
    return [{c: float(v) for c, v in zip(cols, row, strict=True)}
            for row in front[cols].itertuples(index=False)]


def run_arm(args: argparse.Namespace, name: str, parallel: int,
            overrides: dict) -> tuple[dict, pd.DataFrame]:
    """Run one search arm, or read it back when ``--work`` already holds it finished."""
    import ray

    from autorank import load_run

    out = Path(args.work) / name
    start = time.time()
    wall: float | None = None  # None: read back, its wall time is that of the run that made it
    if (out / "pareto.csv").exists():
        result = load_run(out)
        parallel = result.config.parallel or parallel
    else:
        # a run stopped part-way (another session, a kill) goes on where it stopped
        result = search(arm_config(args, out, parallel, overrides),
                        resume=(out / "config.yaml").exists())
        ray.shutdown()
        wall = time.time() - start
    row = summarise(name, result.trials, result.pareto(), result.baseline, wall, parallel)
    return row, result.trials


def one_shot_rows(trials: pd.DataFrame, baseline: dict) -> list[dict]:
    seed = trials[trials["number"] == 0].iloc[0]
    musco = trials[trials["number"] == 1].iloc[0]
    r0, r1 = float(seed["w"]), float(musco["w"])
    return [{"arm": label, "params_ratio": float(r["params_ratio"]),
             "flops_ratio": float(r["flops_ratio"]), "val": float(r["val_accuracy"]),
             "drop_pp": 100 * (baseline["val_accuracy"] - float(r["val_accuracy"]))}
            for label, r in ((f"seed trial 0 (w={r0:.2f})", seed), (f"seed trial 1 (w={r1:.2f})", musco))]


def l1_pruned(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A copy of a CIFAR ResNet with ``ratio`` of every block's first-conv filters removed,
    those of least L1 norm (Li et al. 2017), through torch-pruning's dependency graph (the
    block's BatchNorm and second conv shrink with it)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    # what feeds the residual sums (stem, every block's second conv) and the classifier stay
    kept = [m for n, m in model.named_modules()
            if n.endswith("conv2") or n == "conv1" or isinstance(m, torch.nn.Linear)]
    tp.pruner.MagnitudePruner(model, torch.randn(1, 3, 32, 32),
                              importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=ratio, ignored_layers=kept).step()
    return model


PRUNE_RATIOS = (0.3, 0.5, 0.7, 0.8)


def fixed_rows(args: argparse.Namespace) -> list[dict]:
    """The published recipes, uniform Tucker-2 and L1 filter pruning, same fine-tune."""
    from autorank import LayerChoice, apply_plan, inventory
    from autorank.data import get_data
    from autorank.metrics import count_flops, count_params
    from autorank.models import get_model, get_model_spec
    from autorank.sweep.space import build_space
    from autorank.sweep.trial import TrialContext, run_trial, train_and_measure

    cfg = arm_config(args, Path(args.work) / "uniform", 1, {})
    spec = get_model_spec("resnet20")
    data = get_data("cifar10", data_dir=os.environ["AUTORANK_DATA_DIR"], val_source="test",
                    val_size=args.val_size, seed=args.seed, mean=spec.mean, std=spec.std)
    model = get_model("resnet20", checkpoint=cfg.checkpoint)
    space = build_space(model, inventory(model, (1, 3, 32, 32)), cfg.space)
    ctx = TrialContext(key="uniform", model_name="resnet20", num_classes=10, input_size=32,
                       baseline_state=model.state_dict(), baseline_params=count_params(model),
                       baseline_flops=count_flops(model, (1, 3, 32, 32)), data=data,
                       space=space, threads=2, seed=args.seed)
    models: dict[str, torch.nn.Module] = {}
    for label, w in (("vbmf one-shot tucker2 (w=1, Kim et al.)", 1.0), ("musco tucker2 (w=0.8)", 0.8)):
        models[label] = apply_plan(model, space.plan(space.seed_params(w)))
    for fraction in (0.25, 0.375, 0.5, 0.75):
        plan = {}
        for layer in space.layers:
            t, s = model.get_submodule(layer.name).weight.shape[:2]
            plan[layer.name] = LayerChoice("tucker2", (max(1, round(fraction * s)),
                                                       max(1, round(fraction * t))))
        models[f"uniform tucker2 {fraction:.3g} of channels"] = apply_plan(model, plan)
    if "prune" in args.arms.split(","):
        from final_quality import block_pruned  # DepGraph with group-norm importance, global

        for ratio in PRUNE_RATIOS:
            models[f"prune-l1 {ratio:.2g} of block filters (Li et al. 2017)"] = l1_pruned(model, ratio)
            models[f"prune-depgraph {ratio:.2g} of block channels (Fang et al. 2023)"] = \
                block_pruned(model, ratio, "depgraph")
    rows = []
    run_trial(ctx, None, {}, plan={})  # the teacher's logits, so that no row pays for them
    for label, compressed in models.items():
        out = train_and_measure(ctx, compressed, latency=True)
        rows.append({"arm": label, "params_ratio": out.params_ratio,
                     "flops_ratio": out.flops_ratio, "val": out.val_accuracy,
                     "latency_ms": out.latency_ms, "latency_batch_ms": out.latency_batch_ms})
        log.info("%s: %s", label, rows[-1])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50, help="fine-tune steps per trial")
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/autorank-search-quality")
    parser.add_argument("--arms", default="gp,gp-c,tpe-c,random,uniform,prune",
                        help=f"some of {sorted(SEARCH_ARMS)}, uniform, prune")
    parser.add_argument("--groups", type=int, default=None,
                        help="override the preset's groups (0: a method and offset per layer)")
    parser.add_argument("--out", default="search_quality.json", help="file name in bench/results/")
    parser.add_argument("--random-parallel", type=int, default=1,
                        help="parallel trials of the random arm (1 also gives trials/hour at 1)")
    args = parser.parse_args()
    if not (os.environ.get("AUTORANK_DATA_DIR") and os.environ.get("AUTORANK_WEIGHTS_DIR")):
        print("set AUTORANK_DATA_DIR (cifar10.npz) and AUTORANK_WEIGHTS_DIR (resnet20 checkpoint)")
        return 2
    arms = args.arms.split(",")
    rows, extra = [], []
    baseline = None
    for name, overrides in SEARCH_ARMS.items():
        if name in arms:
            parallel = 1 if name == "random-p1" else (
                args.random_parallel if overrides["sampler"] == "random" else 2)
            row, trials = run_arm(args, name, parallel, overrides)
            rows.append(row)
            baseline = json.loads((Path(args.work) / name / "baseline.json").read_text())
            if len(rows) == 1:
                extra += one_shot_rows(trials, baseline)  # the seeds as the search ran them
    if "uniform" in arms:
        # measured once per --work and seed (with "prune" in --arms), then read back
        cached = Path(args.work) / f"fixed-seed{args.seed}{'-prune' if 'prune' in arms else ''}.json"
        if not cached.exists():
            cached.write_text(json.dumps(fixed_rows(args), default=float))
        extra += json.loads(cached.read_text())
    report = {"settings": vars(args), "baseline": baseline, "arms": rows, "fixed_plans": extra}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
