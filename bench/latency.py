"""Does the latency table predict what a compressed model measures, and how much does deploying
(BatchNorm folded, factors merged) buy?

For each model (CIFAR ResNet-20, torchvision resnet18 at 32x32; weights random: latency does
not depend on their values), ``--plans`` plans drawn at random from the ``cifar_resnet``
search space (every method, pruning included), and each target (batch 1 and 32, torch eager
and onnxruntime, ``--threads``):

- ``predicted``: :class:`autorank.latency.LatencyModel` (a fresh table for the bench, in
  ``--work``), measured lazily as the plans ask;
- ``measured``: the plan's model (``apply_plan(structure_only=True)``) timed by the table's
  own protocol, all plans and the dense model interleaved in one
  :func:`autorank.latency.measure_models` call;
- ``deployed``: the same after :func:`autorank.deploy`, interleaved with it.

Reported per (model, batch, backend): Spearman's rho and the median / 90th percentile of
|predicted - measured| / measured over the plans; the median measured speed-up against the
plans' FLOPs reduction; and the median speed-up of deploying. Results go to
``bench/results/latency/<model>-b<batch>-<backend>.json`` as each target finishes, and
``--report`` writes ``bench/results/latency.md``.

    python bench/latency.py                 # all targets (~15 min on 2 quiet cores)
    python bench/latency.py --report
    python bench/latency.py --smoke         # tiny_cnn, 6 plans, seconds

Time it on a quiet machine: other processes on the same cores are what the table's
interleaving is built against, but they still widen the spread.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

import autorank as ar
from autorank._deploy import deploy
from autorank.config import load_space, space_from_dict
from autorank.latency import LatencyModel, Target, measure_models
from autorank.models import get_model
from autorank.sweep.space import build_space

RESULTS = Path(__file__).parent / "results"
MODELS = ("resnet20", "resnet18")
log = logging.getLogger("latency_bench")


def random_plans(model: torch.nn.Module, n: int, seed: int) -> list[Any]:
    """``n`` plans drawn uniformly from the ``cifar_resnet`` space over ``model``."""
    cfg = space_from_dict({"max_drop": None}, base=load_space("cifar_resnet"))
    space = build_space(model, ar.inventory(model, (1, 3, 32, 32)), cfg)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    plans = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        plans.append(space.plan(trial.params))
    return plans


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_target(args: argparse.Namespace, name: str, batch: int, backend: str) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = get_model(name, num_classes=10).eval()
    plans = random_plans(model, args.plans, args.seed)
    target = Target(threads=args.threads, batch=batch, backend=backend)
    start = time.time()
    lm = LatencyModel(model, (3, 32, 32), target, Path(args.work) / "tables")
    predicted = [lm.predict(p) for p in plans]
    table_s = time.time() - start
    built = {f"plan{i}": ar.apply_plan(model, p, structure_only=True) for i, p in enumerate(plans)}
    deployed = {f"deployed{key[4:]}": deploy(m) for key, m in built.items()}
    start = time.time()
    measured = measure_models({"dense": model, "dense_deployed": deploy(model), **built, **deployed},
                              (3, 32, 32), target, repeats=args.repeats)
    measure_s = time.time() - start
    dense_flops = ar.count_flops(model)
    rows: list[dict[str, Any]] = []
    for i, plan in enumerate(plans):
        m, d = measured[f"plan{i}"], measured[f"deployed{i}"]
        rows.append({"predicted_ms": predicted[i], "measured_ms": m, "deployed_ms": d,
                     "flops_ratio": dense_flops / ar.count_flops(built[f"plan{i}"]),
                     "speedup": measured["dense"] / m, "deploy_speedup": m / d,
                     "methods": sorted({c.method for c in plan.values()})})
    errors = [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in rows]
    return {
        "model": name, "batch": batch, "backend": backend, "threads": args.threads,
        "repeats": args.repeats,
        "plans": len(plans), "table_entries_measured": lm.table.measured, "table_s": table_s,
        "measure_s": measure_s, "dense_ms": measured["dense"],
        "dense_deployed_ms": measured["dense_deployed"],
        "dense_predicted_ms": lm.predict({}),
        "spearman": spearman([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]),
        "median_rel_error": statistics.median(errors),
        "p90_rel_error": sorted(errors)[int(0.9 * (len(errors) - 1))],
        "median_speedup": statistics.median(r["speedup"] for r in rows),
        "median_flops_ratio": statistics.median(r["flops_ratio"] for r in rows),
        "median_speedup_per_flops_ratio": statistics.median(r["speedup"] / r["flops_ratio"] for r in rows),
        "median_deploy_speedup": statistics.median(r["deploy_speedup"] for r in rows),
        "target": target.about(), "rows": rows,
    }


def results_dir(args: argparse.Namespace) -> Path:
    return RESULTS / ("latency_smoke" if args.smoke else "latency")


def speedup_errors(result: dict[str, Any]) -> dict[str, list[float]]:
    """Signed relative errors of the predicted speed-up over the dense model (predicted dense /
    predicted plan against measured dense / measured plan), for plans with and without a
    pruned layer. Unlike the latency's own error, this one does not carry the machine's drift
    between the table's readings and the bench's."""
    out: dict[str, list[float]] = {"prune": [], "no prune": []}
    for r in result["rows"]:
        predicted = result["dense_predicted_ms"] / r["predicted_ms"]
        measured = result["dense_ms"] / r["measured_ms"]
        out["prune" if "prune" in r["methods"] else "no prune"].append(predicted / measured - 1)
    return out


def speedup_error_lines(found: list[dict[str, Any]]) -> list[str]:
    """The report's table of :func:`speedup_errors`."""
    if not found:
        return []
    lines = ["", "The predicted speed-up over the dense model against the measured one: |error| "
             "over all plans, and the mean signed error (predicted too fast: +) over the plans "
             "with a pruned layer and those without -- the table charges a pruned layer's "
             "BatchNorm, activation and residual add at their dense cost (in the remainder), so "
             "a bias there would show in the first.", "",
             "| model | batch | backend | median abs err | p90 abs err | mean signed, with prune (n) "
             "| mean signed, without (n) |", "|---|---|---|---|---|---|---|"]
    for r in found:
        errs = speedup_errors(r)
        both = sorted(abs(e) for e in errs["prune"] + errs["no prune"])
        signed = [f"{100 * statistics.mean(errs[k]):+.1f} % ({len(errs[k])})" if errs[k] else "-"
                  for k in ("prune", "no prune")]
        lines.append(f"| {r['model']} | {r['batch']} | {r['backend']} | "
                     f"{100 * statistics.median(both):.1f} % | "
                     f"{100 * both[int(0.9 * (len(both) - 1))]:.1f} % | {signed[0]} | {signed[1]} |")
    return lines


def report(args: argparse.Namespace) -> str:
    folder = results_dir(args)
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    lines = ["# Latency: predicted vs measured, and what deploying buys", "",
             "Written by `bench/latency.py --report`; protocol in the script's docstring. Random "
             "plans of the `cifar_resnet` space (pruning included), random weights.", ""]
    if found:
        about = found[0]["target"]
        lines += [f"Hardware: {about['hardware']}; torch {about['torch']}, threads "
                  f"{found[0]['threads']}.", ""]
    lines += ["| model | batch | backend | plans x rounds | Spearman rho | median abs err | p90 abs err | "
              "dense ms (predicted) | median speed-up | median FLOPs ratio | "
              "speed-up / FLOPs ratio | deploy speed-up (plans) | deploy speed-up (dense) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['backend']} | {r['plans']} x {r.get('repeats', 11)} | "
            f"{r['spearman']:.3f} | "
            f"{100 * r['median_rel_error']:.1f} % | {100 * r['p90_rel_error']:.1f} % | "
            f"{r['dense_ms']:.3f} ({r['dense_predicted_ms']:.3f}) | {r['median_speedup']:.2f}x | "
            f"{r['median_flops_ratio']:.2f}x | {r['median_speedup_per_flops_ratio']:.2f} | "
            f"{r['median_deploy_speedup']:.2f}x | {r['dense_ms'] / r['dense_deployed_ms']:.2f}x |")
    lines += speedup_error_lines(found)
    missing = [f"{m}-b{b}-{be}" for m in MODELS for b in (1, 32) for be in ("torch", "onnxruntime")
               if not (folder / f"{m}-b{b}-{be}.json").exists()]
    if missing and not args.smoke:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--plans", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/autorank-latency-bench")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    folder = results_dir(args)
    if not args.report:
        folder.mkdir(parents=True, exist_ok=True)
        models = ["tiny_cnn"] if args.smoke else args.models.split(",")
        if args.smoke:
            args.plans, args.repeats = 6, 5
        for name in models:
            for batch in map(int, args.batches.split(",")):
                for backend in args.backends.split(","):
                    out = folder / f"{name}-b{batch}-{backend}.json"
                    if out.exists():
                        continue
                    result = run_target(args, name, batch, backend)
                    out.write_text(json.dumps(result, indent=1))
                    log.info("%s b%d %s: rho %.3f, median err %.1f %%", name, batch, backend,
                             result["spearman"], 100 * result["median_rel_error"])
    text = report(args)
    (RESULTS / ("latency_smoke.md" if args.smoke else "latency.md")).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
