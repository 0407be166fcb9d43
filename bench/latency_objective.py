"""Does steering on the latency table find faster models than steering on FLOPs, and than L1
filter pruning, at equal accuracy?

ResNet-20 from the shared checkpoint, CIFAR-10; validation = a seeded half of the test set
(the checkpoint saw all 50,000 training images). Arms, each written to
``bench/results/latency_objective/<arm>.json`` when it ends (so that arms may run in separate
processes and sessions):

- ``flops``: the search, objectives accuracy and FLOPs, ``cifar_resnet`` space (every method,
  pruning included), ``--budget`` plans, each fine-tuned ``--steps`` steps (one rung), the
  in-process runner on all cores;
- ``latency``: the same search with objectives accuracy and latency (the latency table at
  batch 1 on this machine's threads, torch eager), same seed;
- ``prune-l1``: L1 filter pruning (Li et al. 2017) of the channels inside every residual
  block at ``--prune-ratios``, each fine-tuned by the same recipe and steps.

``--measure`` then times every front model of both searches and every pruned model, each
deployed as an export ships it (:func:`autorank.deploy`: BatchNorm folded, factors merged),
beside the deployed dense model: one :func:`autorank.latency.measure_models` call per target
(batch 1 and 32, torch eager and onnxruntime, ``--threads``), all models interleaved. Latency
depends on structure only, so each model is built from its plan (or pruning ratio) with
random weights. ``--report`` writes ``bench/results/latency_objective.md``: for each accuracy
level (validation accuracy at least the baseline's minus 1, 3, 5 and 10 pp), each arm's
fastest model at that level, its measured speed-up per target and its FLOPs reduction.

    python bench/latency_objective.py --arm flops      # AUTORANK_DATA_DIR, AUTORANK_WEIGHTS_DIR
    python bench/latency_objective.py --arm latency
    python bench/latency_objective.py --arm prune-l1
    python bench/latency_objective.py --measure        # on a quiet machine
    python bench/latency_objective.py --report
    python bench/latency_objective.py --smoke          # tiny_cnn on digits, every step, minutes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import autorank as ar
from autorank.config import make_config

sys.path.insert(0, str(Path(__file__).parent))
from final_quality import (  # noqa: E402  (the same pruning arm and result files)
    CHECKPOINTS,
    block_pruned,
    write_result,
)

RESULTS = Path(__file__).parent / "results"
ARMS = ("flops", "latency", "prune-l1")
TARGETS = ((1, "torch"), (32, "torch"), (1, "onnxruntime"), (32, "onnxruntime"))
LEVELS_PP = (1, 3, 5, 10)
log = logging.getLogger("latency_objective")


def folder(args: argparse.Namespace) -> Path:
    return RESULTS / ("latency_objective_smoke" if args.smoke else "latency_objective")


def write(args: argparse.Namespace, name: str, data: dict[str, Any]) -> None:
    write_result(folder(args), name, data, args)


def config(args: argparse.Namespace, arm: str) -> Any:
    objectives = ["accuracy", "latency" if arm == "latency" else "flops"]
    common: dict[str, Any] = dict(out=str(Path(args.work) / arm), seed=args.seed, runner="local",
                                  objectives=objectives, budget=args.budget,
                                  finetune_steps=args.steps)
    if args.smoke:
        return make_config(space="tiny", model="tiny_cnn", dataset="digits", val_source="train",
                           baseline_epochs=15, **common)
    weights = Path(os.environ["AUTORANK_WEIGHTS_DIR"])
    return make_config(space="cifar_resnet", model="resnet20", dataset="cifar10",
                       val_source="test", val_size=args.val_size,
                       checkpoint=str(weights / CHECKPOINTS["resnet20"]), **common)


def run_search(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    cfg = config(args, arm)
    out = Path(cfg.out)
    start = time.time()
    if not (out / "pareto.csv").exists():
        ar.search(cfg, resume=(out / "config.yaml").exists())
    result = ar.load_run(out)
    front = result.pareto()
    done = result.trials[result.trials["state"] == "complete"]
    return {"arm": arm, "search_s": time.time() - start, "trials": len(result.trials),
            "baseline": dict(result.baseline),
            "models": [{"label": f"trial {int(r.number)}", "plan": str(r.plan),
                        "val_accuracy": float(r.val_accuracy), "flops_ratio": float(r.flops_ratio),
                        "params_ratio": float(r.params_ratio)} for r in front.itertuples()],
            "completed": len(done)}


def context(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, Any]:
    """The baseline, its data and the search's fine-tune recipe at ``--steps``."""
    from autorank.baseline import load_baseline

    cfg = config(args, "flops")
    model, data = load_baseline(cfg.baseline_spec())
    return model, data, cfg


def l1_pruned(baseline: torch.nn.Module, ratio: float, shape: tuple[int, ...]) -> torch.nn.Module:
    """The CIFAR ResNets: Torch-Pruning's L1 pruner inside every residual block (the arm of
    ``final_quality.py``); any other model (the smoke's): autorank's own ``prune`` at the same
    share of every layer that can be pruned alone."""
    if any(n.endswith("conv1") and n.count(".") == 2 for n, _ in baseline.named_modules()):
        return block_pruned(baseline, ratio, "l1")
    from autorank.decompose import channel_consumers

    convs = dict(baseline.named_modules())
    plan = {name: ar.LayerChoice("prune", (max(1, round((1 - ratio) * convs[name].weight.shape[0])),))
            for name in channel_consumers(baseline, shape)}
    return ar.apply_plan(baseline, plan, input_shape=shape)


def run_prune(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from autorank.engine import evaluate, recover

    baseline, data, cfg = context(args)
    shape = (1, *data.input_shape)
    dense_flops, dense_params = ar.count_flops(baseline, shape), ar.count_params(baseline)
    recipe = dataclasses.replace(cfg.space.finetune, steps=args.steps, epochs=None, seed=args.seed)
    rows = []
    for ratio in args.prune_ratios:
        model = l1_pruned(baseline, ratio, shape)
        recover(model, data, recipe, teacher=baseline)
        rows.append({"label": f"L1 {ratio:.0%} of block channels", "ratio": ratio,
                     "val_accuracy": evaluate(model, data, "val"),
                     "flops_ratio": dense_flops / ar.count_flops(model, shape),
                     "params_ratio": dense_params / ar.count_params(model)})
        log.info("prune-l1 %s", rows[-1])
    return {"arm": "prune-l1", "baseline": {"val_accuracy": evaluate(baseline, data, "val")},
            "models": rows}


def build(baseline: torch.nn.Module, arm: str, row: dict[str, Any], shape: tuple[int, ...]) -> Any:
    if arm == "prune-l1":
        return l1_pruned(baseline, row["ratio"], shape)
    return ar.apply_plan(baseline, ar.plan_from_json(row["plan"]), input_shape=shape,
                         structure_only=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from autorank.latency import Target, measure_models

    baseline, data, _ = context(args)
    shape = (1, *data.input_shape)
    arms = {arm: json.loads((folder(args) / f"{arm}.json").read_text())
            for arm in ARMS if (folder(args) / f"{arm}.json").exists()}
    models = {"dense": ar.deploy(baseline)}
    for arm, found in arms.items():
        for i, row in enumerate(found["models"]):
            models[f"{arm}/{i}"] = ar.deploy(build(baseline, arm, row, shape))
    timed: dict[str, dict[str, float]] = {key: {} for key in models}
    for batch, backend in TARGETS:
        target = Target(threads=args.threads, batch=batch, backend=backend)
        ms = measure_models(models, data.input_shape, target, repeats=args.repeats)
        for key, value in ms.items():
            timed[key][f"b{batch}-{backend}"] = value
        log.info("timed batch %d %s", batch, backend)
    return {"arms": list(arms), "latency_ms": timed, "threads": args.threads}


def report(args: argparse.Namespace) -> str:
    out = folder(args)
    arms = {arm: json.loads((out / f"{arm}.json").read_text())
            for arm in ARMS if (out / f"{arm}.json").exists()}
    lines = ["# Latency objective vs FLOPs objective vs L1 pruning", "",
             "Written by `bench/latency_objective.py --report`; the protocol is in the script's "
             "docstring.", ""]
    missing = [a for a in ARMS if a not in arms]
    if missing:
        lines += [f"Missing arms: {', '.join(missing)}.", ""]
    if not (out / "measure.json").exists() or not arms:
        return "\n".join([*lines, "Not measured yet (`--measure`).", ""])
    timed = json.loads((out / "measure.json").read_text())
    dense = timed["latency_ms"]["dense"]
    keys = [f"b{b}-{k}" for b, k in TARGETS]
    base_val = next(a["baseline"]["val_accuracy"] for a in arms.values())
    s = next(iter(arms.values()))["settings"]
    lines += [f"{'tiny_cnn on digits (smoke)' if args.smoke else 'ResNet-20 on CIFAR-10'}, "
              f"baseline validation accuracy {100 * base_val:.2f} %. Searches: "
              f"{s['budget']} plans x {s['steps']} fine-tune steps each; pruning: the same "
              f"steps. Latency at {timed['threads']} threads, deployed models, dense "
              + ", ".join(f"{k} {dense[k]:.2f} ms" for k in keys) + ".", "",
              "Every model (speed-up = dense / model, same target, timed interleaved):", "",
              "| arm | model | val acc | FLOPs ratio | " + " | ".join(keys) + " |",
              "|---|---|---|---|" + "---|" * len(keys)]
    rows = []
    for arm, found in arms.items():
        for i, m in enumerate(found["models"]):
            ms = timed["latency_ms"].get(f"{arm}/{i}")
            if ms is None:
                continue
            speed = {k: dense[k] / ms[k] for k in keys}
            rows.append({"arm": arm, **m, "speed": speed})
            lines.append(f"| {arm} | {m['label']} | {100 * m['val_accuracy']:.2f} % | "
                         f"{m['flops_ratio']:.2f}x | "
                         + " | ".join(f"{speed[k]:.2f}x" for k in keys) + " |")
    lines += ["", "Fastest model of each arm at each accuracy level (speed-up at batch 1 and 32, "
              "torch / onnxruntime; in brackets: speed-up over FLOPs reduction):", "",
              "| val acc >= | arm | model | FLOPs ratio | " + " | ".join(keys) + " |",
              "|---|---|---|---|" + "---|" * len(keys)]
    for pp in LEVELS_PP:
        level = base_val - pp / 100
        for arm in arms:
            ok = [r for r in rows if r["arm"] == arm and r["val_accuracy"] >= level]
            if not ok:
                lines.append(f"| {100 * level:.1f} % | {arm} | none | |" + " |" * len(keys))
                continue
            best = max(ok, key=lambda r: r["speed"]["b1-torch"])
            lines.append(f"| {100 * level:.1f} % | {arm} | {best['label']} | "
                         f"{best['flops_ratio']:.2f}x | " + " | ".join(
                             f"{best['speed'][k]:.2f}x ({best['speed'][k] / best['flops_ratio']:.2f})"
                             for k in keys) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--measure", action="store_true", help="time every arm's models")
    parser.add_argument("--report", action="store_true", help="write latency_objective.md")
    parser.add_argument("--budget", type=int, default=12, help="plans per search")
    parser.add_argument("--steps", type=int, default=100, help="fine-tune steps per model")
    parser.add_argument("--prune-ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/autorank-latency-objective")
    parser.add_argument("--smoke", action="store_true", help="tiny_cnn on digits, a few steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.smoke:
        args.budget, args.steps, args.repeats, args.work = 4, 10, 5, args.work + "-smoke"
    if args.report:
        text = report(args)
        (RESULTS / ("latency_objective_smoke.md" if args.smoke else "latency_objective.md")
         ).write_text(text)
        print(text)
        return 0
    if not args.smoke and not (os.environ.get("AUTORANK_DATA_DIR")
                               and os.environ.get("AUTORANK_WEIGHTS_DIR")):
        print("set AUTORANK_DATA_DIR (cifar10.npz) and AUTORANK_WEIGHTS_DIR (the checkpoints)")
        return 2
    if args.measure:
        write(args, "measure", measure(args))
    elif args.arm == "prune-l1":
        write(args, args.arm, run_prune(args))
    elif args.arm is not None:
        write(args, args.arm, run_search(args, args.arm))
    else:
        parser.error("give --arm, --measure or --report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
