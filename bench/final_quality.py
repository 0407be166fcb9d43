"""The final models' quality: does the multi-fidelity search pick better models than the
single-fidelity one, structured pruning and uniform Tucker-2, once each is trained the same?

ResNet-20 (or ResNet-56) from the shared checkpoint, CIFAR-10; validation = a seeded half of
the test set (the checkpoint saw all 50,000 training images), test accuracy on the other half.
Arms, each run on its own (``--arm``) and written to ``bench/results/final_quality/`` when it
ends, so that arms may run in separate processes and sessions; ``--report`` assembles them:

- ``single``: today's search, every plan fine-tuned ``--single-steps`` (one rung);
- ``multi``: the multi-fidelity search (rungs ``--min-steps`` x ``--eta`` ... ``--max-steps``);
  both searches get ``--compute-epochs`` of fine-tune compute in all (the budget in plans is
  derived from it), minimise (FLOPs, params) beside accuracy, and their picks -- the smallest
  FLOPs within 1 pp of the baseline's validation accuracy, and the front's trial nearest 3x
  FLOPs -- are trained ``--final-epochs`` more (``autorank export --finetune-epochs``,
  distillation, from the trial's own weights);
- ``prune-l1``: L1 filter pruning (Li et al. 2017), ``prune-depgraph``: Torch-Pruning's
  DepGraph with group-norm importance, global ranking (Fang et al. 2023); both prune the
  channels inside each residual block (the option-A shortcuts of these ResNets pad a strided
  slice in a lambda, which the dependency graph cannot see) to 2x and 3x FLOPs;
- ``uniform``: Tucker-2 keeping the same share of every searched layer's channels, at 2x and
  3x FLOPs;
  the fixed arms get ``--max-steps`` steps and then ``--final-epochs``, as the multi-fidelity
  picks do, with validation and test accuracy read after every epoch of the final training
  (``--targets`` picks the FLOPs ratios; ``--label L`` writes ``ARM@L`` beside the arm's own
  result, e.g. the 3x models again with a longer final training);
- ``tau``: the proxy's fidelity: ``--tau-plans`` plans drawn at random from the space, each
  trained through every rung; Kendall's tau between first-rung and top-rung accuracy;
- ``continuation``: how a promoted trial should go on. The tau arm's plans (it must have run)
  trained by one cosine over all ``--max-steps`` from the baseline (what continuing with the
  optimiser state and the schedule's position gives), read at ``--min-steps`` too, against
  the warm restart per rung that the search uses and the tau arm measured.

    python bench/final_quality.py --arm multi     # AUTORANK_DATA_DIR, AUTORANK_WEIGHTS_DIR
    python bench/final_quality.py --report        # bench/results/final_quality.md
    python bench/final_quality.py --arm multi --smoke   # tiny_cnn on digits, minutes
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import autorank as ar
from autorank.config import make_config, space_from_dict
from autorank.sweep.table import busy_seconds

RESULTS = Path(__file__).parent / "results"
ARMS = ("single", "multi", "prune-l1", "prune-depgraph", "uniform", "tau", "continuation")
CHECKPOINTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
FLOPS_TARGETS = (2.0, 3.0)
log = logging.getLogger("final_quality")


def results_dir(args: argparse.Namespace) -> Path:
    return RESULTS / ("final_quality_smoke" if args.smoke else "final_quality")


def search_config(args: argparse.Namespace, arm: str, out: Path) -> Any:
    """The search of ``arm`` with a plan budget that spends ``--compute-epochs`` of fine-tune."""
    common: dict[str, Any] = dict(out=str(out), seed=args.seed, runner="ray", parallel=args.parallel,
                                  objectives=["accuracy", "flops", "params"])
    if args.smoke:
        common.update(model="tiny_cnn", dataset="digits", val_source="train", baseline_epochs=15)
        space = "tiny"
    else:
        weights = Path(os.environ["AUTORANK_WEIGHTS_DIR"])
        common.update(model=args.model, dataset="cifar10", val_source="test",
                      val_size=args.val_size, checkpoint=str(weights / CHECKPOINTS[args.model]))
        space = "cifar_resnet"
    steps_per_epoch = args.steps_per_epoch
    budget_steps = args.compute_epochs * steps_per_epoch
    if arm == "single":
        return make_config(space=space, finetune_steps=args.single_steps,
                           budget=max(4, round(budget_steps / args.single_steps)), **common)
    cfg = make_config(space=space, min_steps=args.min_steps, max_steps=args.max_steps,
                      eta=args.eta, budget=4, **common)
    assert cfg.space.fidelity is not None
    rungs = cfg.space.fidelity.rungs

    def most_steps(plans: int) -> int:
        # the most a search of ``plans`` can spend: at most floor(n / eta) of a rung's n go on
        total, n, before = 0, plans, 0
        for steps in rungs:
            total, n, before = total + n * (steps - before), n // args.eta, steps
        return total

    plans = 4
    while most_steps(plans + 1) <= budget_steps:
        plans += 1
    return dataclasses.replace(cfg, budget=plans)


def picks(front: Any, baseline_val: float) -> dict[str, int]:
    """The smallest-FLOPs trial within 1 pp of the baseline, and the trial nearest 3x FLOPs."""
    out = {}
    within = front[front["val_accuracy"] >= baseline_val - 0.01]
    if len(within):
        out["within_1pp"] = int(within.sort_values("flops").iloc[0]["number"])
    if len(front):
        nearest = (front["flops_ratio"] - 3.0).abs().sort_values().index[0]
        out["nearest_3x_flops"] = int(front.loc[nearest, "number"])
    return out


def run_search_arm(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    import ray

    out = Path(args.work) / f"{args.model}-{arm}"
    start = time.time()
    searched = not (out / "pareto.csv").exists()
    if searched:
        ar.search(search_config(args, arm, out), resume=(out / "config.yaml").exists())
        ray.shutdown()
    search_s = time.time() - start
    result = ar.load_run(out)
    trials = result.trials
    if not searched:  # the search had ended in an earlier call: the time its trials ran
        search_s = busy_seconds(trials)
    done = trials[trials["state"] == "complete"]
    steps_used = int(done["steps"].fillna(0).sum())
    front = result.pareto()
    rows = []
    chosen = picks(front, float(result.baseline["val_accuracy"]))
    for number in dict.fromkeys(chosen.values()):  # a trial both picks name is trained once
        name = " and ".join(n for n, t in chosen.items() if t == number)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            info = ar.export(out, number, Path(tmp) / "model", finetune_epochs=args.final_epochs).info
        rows.append({"pick": name, "trial": number, "val_search": info["val_accuracy_search"],
                     "test_before_final": info.get("test_accuracy_trial"),
                     "test": info["test_accuracy"], "params_ratio": info["params_ratio"],
                     "flops_ratio": info["flops_ratio"], "final_s": time.time() - t0})
        log.info("%s %s: %s", arm, name, rows[-1])
    return {"arm": arm, "trials": len(trials), "search_s": search_s, "steps_used": steps_used,
            "compute_epochs": steps_used / args.steps_per_epoch, "baseline": dict(result.baseline),
            "front_size": len(front), "models": rows,
            "front": front[["number", "val_accuracy", "test_accuracy", "params_ratio", "flops_ratio",
                            "steps"]].to_dict("records")}


def load_context(args: argparse.Namespace) -> tuple[torch.nn.Module, Any]:
    from autorank.baseline import BaselineSpec, load_baseline

    if args.smoke:
        return load_baseline(BaselineSpec("tiny_cnn", "digits", val_source="train", seed=args.seed,
                                           baseline_epochs=15))
    weights = Path(os.environ["AUTORANK_WEIGHTS_DIR"])
    return load_baseline(BaselineSpec(
        args.model, "cifar10", checkpoint=str(weights / CHECKPOINTS[args.model]),
        data_dir=os.environ["AUTORANK_DATA_DIR"], val_source="test", val_size=args.val_size,
        seed=args.seed))


def block_pruned(model: torch.nn.Module, ratio: float, method: str) -> torch.nn.Module:
    """A copy of a CIFAR ResNet with ``ratio`` of the channels inside every residual block
    removed through torch-pruning's dependency graph: ``l1`` each block's first conv by filter
    L1 norm at a uniform ratio (Li et al. 2017), ``depgraph`` by the L2 norm of each coupled
    group (conv filters, BatchNorm, the next conv's inputs) ranked globally (Fang et al. 2023)."""
    import torch_pruning as tp

    model = copy.deepcopy(model).cpu()
    # only each block's first conv is pruned: what feeds the residual sums and the classifier stay
    inside = [m for n, m in model.named_modules() if n.endswith("conv1") and n.count(".") == 2]
    kept = [m for m in model.modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and not any(m is i for i in inside)]
    example = torch.randn(1, 3, 32, 32)
    if method == "l1":
        tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=kept).step()
    else:
        # DepGraph's group L2 norm, ranked across all layers at once (no sparse training first)
        tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, global_pruning=True, ignored_layers=kept).step()
    return model


def uniform_tucker2(model: torch.nn.Module, fraction: float) -> torch.nn.Module:
    rows = ar.inventory(model, (1, 3, 32, 32))
    from autorank._inventory import eligible

    plan = {}
    for row in eligible(rows, min_params=2000):
        if "tucker2" in row.max_rank:
            t, s = row.weight_shape[:2]
            plan[row.name] = ar.LayerChoice("tucker2", (max(1, round(fraction * s)),
                                                        max(1, round(fraction * t))))
    return ar.apply_plan(model, plan)


def at_flops_ratio(baseline: torch.nn.Module, build: Any, target: float) -> tuple[torch.nn.Module, float]:
    """``build(x)`` for the x in (0, 1) whose model's FLOPs ratio is nearest ``target``
    (bisection on x, the share of channels removed)."""
    dense = ar.count_flops(baseline, (1, 3, 32, 32))
    lo, hi, best = 0.02, 0.98, None
    for _ in range(12):
        mid = (lo + hi) / 2
        model = build(mid)
        ratio = dense / ar.count_flops(model, (1, 3, 32, 32))
        if best is None or abs(ratio - target) < abs(best[1] - target):
            best = (model, ratio, mid)
        if ratio < target:  # the ratio grows with x: the share of channels removed
            lo = mid
        else:
            hi = mid
    assert best is not None
    return best[0], best[2]


class EpochEval:
    """Validation and test accuracy after every whole epoch of a final training: how far from
    converged its last reading is (the cosine's lr is still high at the early ones)."""

    def __init__(self, model: torch.nn.Module, data: Any, steps_per_epoch: int) -> None:
        self.model, self.data, self.every = model, data, steps_per_epoch
        self.curve: list[dict[str, float]] = []

    def after_step(self, step: int) -> None:
        from autorank.engine import evaluate

        if (step + 1) % self.every == 0:
            self.curve.append({"epoch": (step + 1) / self.every,
                               "val": evaluate(self.model, self.data, "val"),
                               "test": evaluate(self.model, self.data, "test")})
            log.info("epoch %.0f: %s", self.curve[-1]["epoch"], self.curve[-1])
            self.model.train()


def train_fixed(args: argparse.Namespace, model: torch.nn.Module, baseline: torch.nn.Module,
                data: Any) -> dict[str, Any]:
    """``--max-steps`` of fine-tune then ``--final-epochs``, both distilling from the baseline;
    accuracy read after every epoch of the final training."""
    from autorank.engine import FinetuneConfig, evaluate, recover

    start = time.time()
    recover(model, data, FinetuneConfig(steps=args.max_steps, seed=args.seed), teacher=baseline)
    val_short = evaluate(model, data, "val")
    final = FinetuneConfig(epochs=args.final_epochs, seed=args.seed + 1, bn_batches=0)
    curve = EpochEval(model, data, math.ceil(len(data) / final.batch_size))
    recover(model, data, final, teacher=baseline, hook=curve)
    cost, dense = (ar.metrics.measure_cost(m, (3, 32, 32)) for m in (model, baseline))
    return {"val_after_max_steps": val_short, "val": evaluate(model, data, "val"),
            "test": evaluate(model, data, "test"), "by_epoch": curve.curve, **cost.ratios(dense),
            "train_s": time.time() - start}


def run_fixed_arm(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    baseline, data = load_context(args)
    method = "l1" if arm == "prune-l1" else "depgraph"

    def build(x: float) -> torch.nn.Module:  # x: the share of channels removed
        if arm == "uniform":
            return uniform_tucker2(baseline, 1 - x)
        return block_pruned(baseline, x, method)

    rows = []
    for target in args.targets:
        model, x = at_flops_ratio(baseline, build, target)
        row = {"target_flops_ratio": target, "setting": x, **train_fixed(args, model, baseline, data)}
        rows.append(row)
        log.info("%s at %.1fx: %s", arm, target, row)
    return {"arm": arm, "models": rows}


def tau_context(args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
    """The trial context of the tau and continuation arms (the multi-fidelity search's space),
    and the baseline."""
    from autorank.sweep.space import build_space
    from autorank.sweep.trial import TrialContext

    baseline, data = load_context(args)
    cfg = search_config(args, "multi", Path(args.work) / "tau")
    space = build_space(baseline, ar.inventory(baseline, (1, *data.input_shape)),
                        space_from_dict({"max_drop": None}, base=cfg.space))
    shape = (1, *data.input_shape)
    ctx = TrialContext(key="tau", model_name=cfg.model, num_classes=data.num_classes,
                       input_size=data.input_shape[-1], baseline_state=baseline.state_dict(),
                       baseline_params=ar.count_params(baseline),
                       baseline_flops=ar.count_flops(baseline, shape), data=data, space=space,
                       threads=torch.get_num_threads(), weights_dir=str(Path(args.work) / "tau-weights"),
                       seed=args.seed)
    return ctx, baseline


def run_tau_arm(args: argparse.Namespace) -> dict[str, Any]:
    """Random plans through every rung; written after each plan, so a stopped run keeps them."""
    import optuna
    from scipy.stats import kendalltau

    from autorank.sweep.trial import run_trial

    ctx, _ = tau_context(args)
    space = ctx.space
    path = results_dir(args) / f"{args.model}-tau.json"
    plans = json.loads(path.read_text())["plans"] if path.exists() else []
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=args.seed))
    assert space.config.fidelity is not None
    for number in range(args.tau_plans):
        trial = study.ask()
        space.suggest(trial)
        if number < len(plans):
            continue  # measured in an earlier run (same seed: the same draws)
        accs = []
        for rung in range(space.config.fidelity.top + 1):
            out = run_trial(ctx, number, trial.params, rung=rung)
            accs.append(out.val_accuracy)
        plans.append({"number": number, "plan": out.plan, "flops_ratio": out.flops_ratio,
                      "accuracy_by_rung": accs, "steps": list(space.config.fidelity.rungs)})
        tau = kendalltau([p["accuracy_by_rung"][0] for p in plans],
                         [p["accuracy_by_rung"][-1] for p in plans]).statistic if len(plans) > 2 else None
        write(args, "tau", {"arm": "tau", "plans": plans, "kendall_tau_first_top": tau})
    return json.loads(path.read_text())


class MidRunEval:
    """Validation accuracy after step ``at`` (0-based) of a longer fine-tune."""

    def __init__(self, model: torch.nn.Module, data: Any, at: int) -> None:
        self.model, self.data, self.at = model, data, at
        self.accuracy: float | None = None

    def after_step(self, step: int) -> None:
        from autorank.engine import evaluate

        if step == self.at:
            self.accuracy = evaluate(self.model, self.data, "val")
            self.model.train()  # evaluate leaves it in eval mode; the fine-tune goes on


def run_continuation_arm(args: argparse.Namespace) -> dict[str, Any]:
    """The tau arm's plans trained the other way a promotion could go: one cosine over all
    ``--max-steps`` from the baseline, i.e. what continuing with the optimiser state and the
    schedule's position gives at the top rung (the search's ``restart`` recipe), its accuracy
    read at ``--min-steps`` too (what the first rung would read there, lr not yet annealed).
    Against the warm restart the search uses (a full cosine per rung, fresh momentum)."""
    from scipy.stats import kendalltau

    from autorank.decompose import apply_plan
    from autorank.sweep.trial import recipe, train_and_measure
    from autorank.types import plan_from_json

    tau_path = results_dir(args) / f"{args.model}-tau.json"
    if not tau_path.exists():
        raise SystemExit("run --arm tau first: this arm retrains its plans")
    tau = json.loads(tau_path.read_text())["plans"][:args.tau_plans]
    ctx, baseline = tau_context(args)
    fidelity = ctx.space.config.fidelity
    assert fidelity is not None and list(fidelity.rungs) == tau[0]["steps"], "other rungs"
    path = results_dir(args) / f"{args.model}-continuation.json"
    plans = json.loads(path.read_text())["plans"] if path.exists() else []
    for p in tau[len(plans):]:
        model = apply_plan(baseline, plan_from_json(p["plan"]), input_shape=(1, *ctx.data.input_shape),
                           importance=ctx.space.config.prune_importance)
        mid = MidRunEval(model, ctx.data, fidelity.rungs[0] - 1)
        start = time.time()
        out = train_and_measure(ctx, model, recipe(ctx, fidelity.top, restart=True), hook=mid)
        plans.append({"number": p["number"], "flops_ratio": p["flops_ratio"],
                      "warm_restart_by_rung": p["accuracy_by_rung"],
                      "one_run_at_first_rung": mid.accuracy, "one_run_top": out.val_accuracy,
                      "steps": p["steps"], "train_s": time.time() - start})
        log.info("continuation plan %d: %s", p["number"], plans[-1])
        summary: dict[str, Any] = {"plans_done": len(plans)}
        if len(plans) > 2:
            warm = [q["warm_restart_by_rung"] for q in plans]
            gain = [q["one_run_top"] - q["warm_restart_by_rung"][-1] for q in plans]
            summary.update(
                top_one_run_minus_warm_mean=sum(gain) / len(gain),
                top_one_run_wins=sum(g > 0 for g in gain),
                tau_warm_first_top=kendalltau([w[0] for w in warm], [w[-1] for w in warm]).statistic,
                tau_one_run_first_top=kendalltau([q["one_run_at_first_rung"] for q in plans],
                                                 [q["one_run_top"] for q in plans]).statistic)
        write(args, "continuation", {"arm": "continuation", "plans": plans, **summary})
    return json.loads(path.read_text())


def write(args: argparse.Namespace, arm: str, data: dict[str, Any]) -> None:
    suffix = f"@{args.label}" if args.label else ""
    write_result(results_dir(args), f"{args.model}-{arm}{suffix}", data, args)


def arm_files(folder: Path, model: str) -> dict[str, dict[str, Any]]:
    """The arm results of ``model`` by name: ``ARM`` and ``ARM@LABEL`` (the same arm run again
    with other settings, e.g. a longer final training), in ``ARMS`` order."""
    found = {}
    for arm in ARMS:
        for path in sorted(folder.glob(f"{model}-{arm}.json")) + sorted(folder.glob(f"{model}-{arm}@*.json")):
            found[path.stem.removeprefix(f"{model}-")] = json.loads(path.read_text())
    return found


def write_result(folder: Path, name: str, data: dict[str, Any], args: argparse.Namespace) -> None:
    """``folder/name.json``, written whole or not at all, with the settings it was run with."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**data, "settings": {k: v for k, v in vars(args).items() if k != "report"}}
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(folder / f"{name}.json")


def report(args: argparse.Namespace) -> str:
    """bench/results/final_quality.md from whatever arm files exist."""
    folder = results_dir(args)
    lines = ["# Final models' quality", "", "Written by `bench/final_quality.py --report` from the "
             "arm files in `bench/results/final_quality/`; see the script's docstring for the "
             "protocol. Arms not run yet are listed as missing. Wall times are as measured on the "
             "bench's machine, some with other jobs on the same cores: compare the compute "
             "column, not them.", ""]
    for model in ("tiny_cnn",) if args.smoke else ("resnet20", "resnet56"):
        found = arm_files(folder, model)
        lines += [f"## {model}", ""]
        missing = [a for a in ARMS if a not in found]
        if missing:
            lines += [f"Missing arms: {', '.join(missing)}.", ""]
        lines += ["| arm | model | test acc | params ratio | FLOPs ratio | compute | wall time |",
                  "|---|---|---|---|---|---|---|"]
        for arm, data in found.items():
            if arm in ("tau", "continuation"):
                continue
            for m in data["models"]:
                label = m.get("pick") or f"{m['target_flops_ratio']:g}x FLOPs target"
                compute = (f"search {data['compute_epochs']:.1f} ep + final "
                           f"{data['settings']['final_epochs']} ep" if "compute_epochs" in data
                           else f"{data['settings']['max_steps']} steps + final "
                                f"{data['settings']['final_epochs']} ep")
                lines.append(f"| {arm} | {label} | {100 * m['test']:.2f} % | "
                             f"{m['params_ratio']:.2f}x | {m['flops_ratio']:.2f}x | {compute} | "
                             f"{wall_time(data, m)} |")
        for arm, data in found.items():
            if "compute_epochs" in data:
                base = data["baseline"]
                picked = {m["pick"] for m in data["models"]}
                lines += ["", f"{arm}: baseline val {100 * base['val_accuracy']:.2f} %, test "
                          f"{100 * base['test_accuracy']:.2f} %; {data['trials']} plans, front of "
                          f"{data['front_size']}" + ("" if any("within_1pp" in p for p in picked) else
                                                     "; no front trial within 1 pp of the "
                                                     "baseline's validation accuracy")]
        if "tau" in found:
            tau = found["tau"]
            value = tau["kendall_tau_first_top"]
            steps = tau["plans"][0]["steps"] if tau["plans"] else []
            span = f" ({steps[0]} vs {steps[-1]} fine-tune steps)" if steps else ""
            lines += ["", f"Kendall's tau, first vs top rung accuracy{span} over "
                      f"{len(tau['plans'])} random plans (target: >= {tau['settings']['tau_plans']}): "
                      f"{value:.3f}" if value is not None else "tau: too few plans"]
            lines += near_tau_lines(tau, found)
        lines += continuation_lines(found.get("continuation"))
        lines += epoch_curve_lines(found)
        lines.append("")
    return "\n".join(lines)


def wall_time(data: dict[str, Any], model: dict[str, Any]) -> str:
    """A model's wall time on the bench's machine: the search (shared by its picks) and its
    final training, or a fixed arm's fine-tune and final training."""
    if "search_s" in data:
        return f"search {data['search_s'] / 60:.0f} min + final {model['final_s'] / 60:.0f} min"
    return f"{model['train_s'] / 60:.0f} min" if "train_s" in model else "-"


def near_tau_lines(tau: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Kendall's tau over the plans whose top rung is within 10 pp of the baseline's validation
    accuracy (a search arm's record of it): the ranking that decides the front."""
    from scipy.stats import kendalltau

    base = next((found[a]["baseline"]["val_accuracy"] for a in ("multi", "single") if a in found),
                None)
    if base is None:
        return []
    near = [p["accuracy_by_rung"] for p in tau["plans"] if p["accuracy_by_rung"][-1] >= base - 0.10]
    if len(near) < 3:
        return []
    value = kendalltau([a[0] for a in near], [a[-1] for a in near]).statistic
    return ["", f"Over the {len(near)} of them whose top rung is within 10 pp of the baseline's "
            f"validation accuracy ({100 * base:.2f} %): {value:.3f}."]


def epoch_curve_lines(found: dict[str, Any]) -> list[str]:
    """Test accuracy after each epoch of the final training, for the fixed arms that read it."""
    rows = [(arm, m) for arm, data in found.items() if "compute_epochs" not in data
            for m in data.get("models", []) if m.get("by_epoch")]
    if not rows:
        return []
    longest = max(len(m["by_epoch"]) for _, m in rows)
    lines = ["", "Test accuracy after each epoch of the final training (cosine lr over all its "
             "epochs, distillation):", "",
             "| arm | target | " + " | ".join(f"ep {e + 1}" for e in range(longest)) + " |",
             "|---|---|" + "---|" * longest]
    for arm, m in rows:
        cells = [f"{100 * r['test']:.2f}" for r in m["by_epoch"]] + [""] * (longest - len(m["by_epoch"]))
        lines.append(f"| {arm} | {m['target_flops_ratio']:g}x FLOPs | " + " | ".join(cells) + " |")
    return lines


def continuation_lines(data: dict[str, Any] | None) -> list[str]:
    """The report's paragraph on how a promoted trial should continue, when measured."""
    if data is None or "top_one_run_minus_warm_mean" not in data:
        return []
    n, steps = data["plans_done"], data["plans"][0]["steps"]
    return ["", f"Promotion, over the first {n} tau plans: the warm restart the search uses (a "
            f"full cosine per rung, fresh momentum; rungs at {', '.join(map(str, steps))} "
            f"steps) against one cosine over all {steps[-1]} steps from the baseline (what "
            "continuing with the optimiser state and the schedule's position gives at the top "
            "rung). Top-rung val accuracy, one run minus warm restart: "
            f"{100 * data['top_one_run_minus_warm_mean']:+.2f} pp on average, one run higher "
            f"on {data['top_one_run_wins']} of {n}. Kendall's tau between first- and top-rung "
            f"accuracy: warm restart {data['tau_warm_first_top']:.3f}, the one run read at "
            f"{steps[0]} steps (lr not yet annealed) {data['tau_one_run_first_top']:.3f}."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--report", action="store_true", help="write final_quality.md and stop")
    parser.add_argument("--model", default="resnet20", choices=sorted(CHECKPOINTS))
    parser.add_argument("--compute-epochs", type=float, default=30.0,
                        help="fine-tune compute of each search arm, in epochs")
    parser.add_argument("--final-epochs", type=float, default=10.0)
    parser.add_argument("--single-steps", type=int, default=200)
    parser.add_argument("--min-steps", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=1600)
    parser.add_argument("--eta", type=int, default=4)
    parser.add_argument("--tau-plans", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/autorank-final-quality")
    parser.add_argument("--targets", type=float, nargs="+", default=list(FLOPS_TARGETS),
                        help="FLOPs ratios of the fixed arms' models")
    parser.add_argument("--label", default="",
                        help="results as ARM@LABEL beside the arm's own (e.g. a longer final training)")
    parser.add_argument("--smoke", action="store_true", help="tiny_cnn on digits, a few steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.smoke:
        args.model, args.compute_epochs, args.final_epochs = "tiny_cnn", 6.0, 1.0
        args.min_steps, args.max_steps, args.eta, args.single_steps = 10, 40, 2, 20
        args.tau_plans, args.work = 4, args.work + "-smoke"
    # the shared checkpoints are validated on test images: all 50,000 training images train
    args.steps_per_epoch = 22 if args.smoke else math.ceil(50000 / 128)
    if args.report:
        text = report(args)
        (RESULTS / ("final_quality_smoke.md" if args.smoke else "final_quality.md")).write_text(text)
        print(text)
        return 0
    if args.arm is None:
        parser.error("give --arm or --report")
    if not args.smoke and not (os.environ.get("AUTORANK_DATA_DIR")
                               and os.environ.get("AUTORANK_WEIGHTS_DIR")):
        print("set AUTORANK_DATA_DIR (cifar10.npz) and AUTORANK_WEIGHTS_DIR (the checkpoints)")
        return 2
    if args.arm in ("single", "multi"):
        write(args, args.arm, run_search_arm(args, args.arm))
    elif args.arm == "tau":
        run_tau_arm(args)
    elif args.arm == "continuation":
        run_continuation_arm(args)
    else:
        write(args, args.arm, run_fixed_arm(args, args.arm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
