"""Does the search beat random sampling and the one-shot recipes? ResNet-20 on CIFAR-10.

Arms, all with the same per-trial fine-tune (steps, lr, distillation, BN recalibration) and in
one run:

- ``search``: autorank's space with multivariate TPE (``cifar_resnet`` preset: a method and a
  rank offset per group of 6 convs; ``--groups 0`` searches them per layer), Ray Tune,
  ``--parallel 2``;
- ``gp``: the same space with Optuna's Gaussian-process sampler (log EHVI), ``--parallel 2``;
- ``tpe-c``: ``search`` with the sampler told the region of interest (``max_drop`` 0.10, the
  preset's default: a trial more than 10 pp below the baseline's validation accuracy is
  infeasible to it); ``search`` and ``gp`` run with ``max_drop: null``;
- ``random``: the same space and seeds with Optuna's RandomSampler, Ray Tune, ``--parallel 1``
  (so the two arms also give trials/hour at parallel 1 vs 2);
- ``vbmf``: the one-shot Kim et al. recipe (Tucker-2 at EVBMF ranks), trial 0 of each search;
- ``uniform-*``: Tucker-2 keeping the same fraction of every layer's channels.

Validation = a seeded part of the CIFAR-10 test split (the checkpoint saw all 50k training
images), test = the rest; test accuracy only for the front. Hypervolume in the plane
(params / baseline params, 1 - val accuracy), both minimised, reference point
(1.0, 1 - (baseline val accuracy - 0.10)): only models smaller than the baseline and within
10 pp of its accuracy count.

    python bench/search_quality.py                # needs AUTORANK_DATA_DIR, AUTORANK_WEIGHTS_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from autorank.config import make_config
from autorank.sweep import hypervolume_2d, search
from autorank.sweep.space import space_from_dict

RESULTS = Path(__file__).parent / "results"


def arm_config(args: argparse.Namespace, out: Path, sampler: str, parallel: int,  # noqa: ANN201
               overrides: dict | None = None):
    cfg = make_config(
        space="cifar_resnet", model="resnet20", dataset="cifar10",
        checkpoint=str(Path(os.environ["AUTORANK_WEIGHTS_DIR"]) / "resnet20-12fca82f.th"),
        val_source="test", val_size=args.val_size, budget=args.budget, runner="ray",
        parallel=parallel, cpus_per_trial=max(1, 2 // parallel), out=str(out), seed=args.seed,
        finetune_steps=args.steps)
    overrides = {"sampler": sampler, **(overrides or {})}
    if args.groups is not None:
        overrides["groups"] = args.groups
    return dataclasses.replace(cfg, space=space_from_dict(overrides, base=cfg.space))


def summarise(name: str, trials: pd.DataFrame, front: pd.DataFrame, baseline: dict,
              wall_s: float, parallel: int) -> dict:
    base_acc = baseline["val_accuracy"]
    done = trials[trials["state"] == "complete"]
    points = np.stack([done["params"] / baseline["params"], 1 - done["val_accuracy"]], axis=1)
    hv = hypervolume_2d(points, (1.0, 1 - (base_acc - 0.10)))
    ok = front[front["val_accuracy"] >= base_acc - 0.01]
    best = ok.sort_values("params").iloc[0] if len(ok) else None
    inner = (done["finetune_s"] + done["evaluate_s"]).sum()
    started = pd.to_datetime(trials["started"]).min()
    completed = pd.to_datetime(trials["completed"]).max()
    trial_phase_s = (completed - started).total_seconds()
    return {
        "arm": name, "trials": len(trials), "failed": int((trials["state"] == "failed").sum()),
        "hypervolume": hv,
        "best_params_ratio_1pp": float(best["params_ratio"]) if best is not None else None,
        "its_flops_ratio": float(best["flops_ratio"]) if best is not None else None,
        "its_val": float(best["val_accuracy"]) if best is not None else None,
        "its_test": float(best["test_accuracy"]) if best is not None else None,
        "wall_s": wall_s, "trial_phase_s": trial_phase_s, "parallel": parallel,
        "trials_per_hour": 3600 * len(trials) / trial_phase_s,
        # the share of the trial slots' time (first trial start to last trial end, times the
        # parallel slots) spent outside fine-tune and evaluation: scheduling, plan building,
        # cost measurements, the driver's bookkeeping
        "overhead_pct": 100 * (1 - inner / (trial_phase_s * parallel)),
        "in_trial_overhead_s": float((done["duration_s"] - done["finetune_s"]
                                      - done["evaluate_s"]).mean()),
    }


def run_arm(args: argparse.Namespace, name: str, sampler: str, parallel: int,
            overrides: dict) -> tuple[dict, pd.DataFrame]:
    """Run one search arm, or read it back when ``--work`` already holds it finished."""
    import ray

    from autorank import load_run

    out = Path(args.work) / name
    start = time.time()
    if (out / "pareto.csv").exists():
        result = load_run(out)
        parallel = result.config.parallel or parallel
    else:
        result = search(arm_config(args, out, sampler, parallel, overrides))
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


def uniform_rows(args: argparse.Namespace) -> list[dict]:
    """Tucker-2 at a uniform fraction of channels on the searched layers, same fine-tune."""
    from autorank import LayerChoice, inventory
    from autorank.data import get_data
    from autorank.metrics import count_flops, count_params
    from autorank.models import get_model, get_model_spec
    from autorank.sweep.space import build_space
    from autorank.sweep.trial import TrialContext, run_trial

    cfg = arm_config(args, Path(args.work) / "uniform", "tpe", 1)
    spec = get_model_spec("resnet20")
    data = get_data("cifar10", data_dir=os.environ["AUTORANK_DATA_DIR"], val_source="test",
                    val_size=args.val_size, seed=args.seed, mean=spec.mean, std=spec.std)
    model = get_model("resnet20", checkpoint=cfg.checkpoint)
    space = build_space(model, inventory(model, (1, 3, 32, 32)), cfg.space)
    ctx = TrialContext(key="uniform", model_name="resnet20", num_classes=10, input_size=32,
                       baseline_state=model.state_dict(), baseline_params=count_params(model),
                       baseline_flops=count_flops(model, (1, 3, 32, 32)), data=data,
                       space=space, threads=2, seed=args.seed)
    rows = []
    for label, w in (("vbmf one-shot tucker2 (w=1, Kim et al.)", 1.0), ("musco tucker2 (w=0.8)", 0.8)):
        out = run_trial(ctx, {}, plan=space.plan(space.seed_params(w)))
        rows.append({"arm": label, "params_ratio": out.get("params_ratio"),
                     "flops_ratio": out.get("flops_ratio"), "val": out.get("val_accuracy"),
                     "error": out.get("error", "")})
    for fraction in (0.25, 0.375, 0.5, 0.75):
        plan = {}
        for layer in space.layers:
            t, s = model.get_submodule(layer.name).weight.shape[:2]
            plan[layer.name] = LayerChoice("tucker2", (max(1, round(fraction * s)),
                                                       max(1, round(fraction * t))))
        out = run_trial(ctx, {}, plan=plan)
        rows.append({"arm": f"uniform tucker2 {fraction:.3g} of channels",
                     "params_ratio": out.get("params_ratio"), "flops_ratio": out.get("flops_ratio"),
                     "val": out.get("val_accuracy"), "error": out.get("error", "")})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--steps", type=int, default=50, help="fine-tune steps per trial")
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/autorank-search-quality")
    parser.add_argument("--arms", default="search,gp,tpe-c,random,uniform")
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
    off = {"max_drop": None}
    for name, sampler, parallel, overrides in (
            ("search", "tpe", 2, off), ("gp", "gp", 2, off), ("tpe-c", "tpe", 2, {}),
            ("random", "random", args.random_parallel, {})):
        if name in arms:
            row, trials = run_arm(args, name, sampler, parallel, overrides)
            rows.append(row)
            baseline = json.loads((Path(args.work) / name / "baseline.json").read_text())
            if name == "search":
                extra += one_shot_rows(trials, baseline)  # the seeds as the search ran them
    if "uniform" in arms:
        extra += uniform_rows(args)
    report = {"settings": vars(args), "baseline": baseline, "arms": rows, "fixed_plans": extra}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
