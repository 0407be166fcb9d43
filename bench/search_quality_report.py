"""Tables of ``search_quality.py`` results over several seeds -> ``results/search_quality.md``.

    python bench/search_quality_report.py results/sq_s0.json results/sq_s1.json ...

For every arm: hypervolume in the params and the FLOPs plane per seed and their mean, and the
smallest model within 1 pp of the baseline's validation accuracy. Then each fixed plan
(one-shot recipes, uniform Tucker-2, L1 filter pruning) beside the most accurate trial of each
arm that is at least as small (params) or at least as cheap (FLOPs): the equal-cost comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _mean(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _point_at(points: list[dict], cost: str, at_least: float) -> dict | None:
    """The most accurate front point at least ``at_least`` times smaller in ``cost``."""
    ok = [p for p in points if p[f"{cost}_ratio"] >= at_least - 1e-9]
    return max(ok, key=lambda p: p["val_accuracy"]) if ok else None


def _best_at(points: list[dict], cost: str, at_least: float) -> float | None:
    """Best validation accuracy among front points at least ``at_least`` times smaller."""
    point = _point_at(points, cost, at_least)
    return point["val_accuracy"] if point is not None else None


def hv_table(runs: list[dict]) -> list[str]:
    arms = list(dict.fromkeys(a["arm"] for r in runs for a in r["arms"]))
    seeds = [r["settings"]["seed"] for r in runs]
    head = ("| arm | " + " | ".join(f"HV params, seed {s}" for s in seeds) + " | mean ± sd | "
            + " | ".join(f"HV FLOPs, seed {s}" for s in seeds) + " | mean ± sd |")
    lines = [head, "|" + "---|" * (2 * len(seeds) + 3)]
    for arm in arms:
        rows = [next((a for a in r["arms"] if a["arm"] == arm), None) for r in runs]
        hv = [a["hypervolume"] if a else None for a in rows]
        hvf = [a.get("hypervolume_flops") if a else None for a in rows]
        cells = [f"{v:.4f}" if v is not None else "-" for v in hv]
        cells_f = [f"{v:.4f}" if v is not None else "-" for v in hvf]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_mean([v for v in hv if v is not None])} | "
                     + " | ".join(cells_f) + f" | {_mean([v for v in hvf if v is not None])} |")
    return lines


def within_1pp(runs: list[dict]) -> list[str]:
    lines = ["| seed | arm | smallest within 1 pp: params ratio (val / test) | cheapest within 1 pp: "
             "FLOPs ratio (val) | trials/hour | overhead % |", "|---|---|---|---|---|---|"]
    for r in runs:
        for a in r["arms"]:
            p = (f"{a['best_params_ratio_1pp']:.2f}× ({a['its_val']:.3f} / {a['its_test']:.3f})"
                 if a.get("best_params_ratio_1pp") else "none")
            f = (f"{a['best_flops_ratio_1pp']:.2f}× ({a['its_val_flops']:.3f})"
                 if a.get("best_flops_ratio_1pp") else "none")
            lines.append(f"| {r['settings']['seed']} | {a['arm']} | {p} | {f} | "
                         f"{a['trials_per_hour']:.0f} | {a['overhead_pct']:.1f} |")
    return lines


def equal_cost(runs: list[dict]) -> list[str]:
    arms = list(dict.fromkeys(a["arm"] for r in runs for a in r["arms"]))
    lines = ["| seed | fixed plan | params ratio | FLOPs ratio | val | "
             + " | ".join(f"{a}: best val at ≥ its params ratio / at ≥ its FLOPs ratio" for a in arms)
             + " |", "|" + "---|" * (5 + len(arms))]
    for r in runs:
        fronts = {a["arm"]: a for a in r["arms"]}
        for plan in r["fixed_plans"]:
            if plan["arm"].startswith("seed trial"):
                continue
            cells = []
            for arm in arms:
                a = fronts.get(arm)
                if a is None or "front" not in a:
                    cells.append("-")
                    continue
                by_p = _best_at(a["front"], "params", plan["params_ratio"])
                by_f = _best_at(a["flops_front"], "flops", plan["flops_ratio"])
                cells.append(" / ".join(f"{v:.3f}" if v is not None else "none" for v in (by_p, by_f)))
            lines.append(f"| {r['settings']['seed']} | {plan['arm']} | {plan['params_ratio']:.2f}× | "
                         f"{plan['flops_ratio']:.2f}× | {plan['val']:.3f} | " + " | ".join(cells) + " |")
    return lines


FLOPS_LEVELS = (1.5, 2.0, 3.0)


def _ms(point: dict, key: str) -> str:
    value = point.get(key)
    return f"{value:.2f}" if value is not None and value == value else "-"  # NaN: not timed


def at_flops_levels(runs: list[dict]) -> list[str]:
    """Per seed and arm: the best validation accuracy at >= 1.5x, 2x, 3x FLOPs, and that
    model's latency as the search timed it at its end (batch 1 / the latency batch, ms)."""
    lines = ["| seed | arm | " + " | ".join(f"best val at ≥ {x:g}× FLOPs (ratio; ms b1 / batch)"
                                          for x in FLOPS_LEVELS) + " |",
             "|" + "---|" * (2 + len(FLOPS_LEVELS))]
    for r in runs:
        for a in r["arms"]:
            cells = []
            for level in FLOPS_LEVELS:
                pt = _point_at(a.get("flops_front", []), "flops", level)
                cells.append("none" if pt is None else
                             f"{pt['val_accuracy']:.3f} ({pt['flops_ratio']:.2f}×; "
                             f"{_ms(pt, 'latency_ms')} / {_ms(pt, 'latency_batch_ms')})")
            lines.append(f"| {r['settings']['seed']} | {a['arm']} | " + " | ".join(cells) + " |")
    return lines


def render(runs: list[dict[str, Any]]) -> str:
    s = runs[0]["settings"]
    base = runs[0]["baseline"]
    text = [
        "# Search quality: ResNet-20 on CIFAR-10, several seeds",
        "",
        f"`python bench/search_quality.py --seed N` per seed, then `python "
        f"bench/search_quality_report.py`. Budget {s['budget']} trials per arm, "
        f"{s['steps']} fine-tune steps per trial with distillation, validation = "
        f"{s['val_size']} images of the test split drawn by the seed, test = the rest. "
        "The seed also seeds the samplers. Hypervolume: (cost / baseline cost, 1 - val "
        "accuracy), reference point (1, 1 - (baseline val - 0.10)), cost = params or FLOPs.",
        "",
        "Baseline val accuracy per seed: " + ", ".join(
            f"seed {r['settings']['seed']}: {r['baseline']['val_accuracy']:.4f}" for r in runs)
        + f"; {base['params']:,} params, {base['flops']:,} FLOPs.",
        "",
        "## Hypervolume",
        "",
        *hv_table(runs),
        "",
        "## Within 1 pp of the baseline",
        "",
        *within_1pp(runs),
        "",
        "## At 1.5×, 2× and 3× FLOPs",
        "",
        "The most accurate front trial at least that much cheaper in FLOPs, and its latency "
        "as the search timed its front at the end (ms at batch 1 / the latency batch; the "
        "dense baseline per seed: " + ", ".join(
            f"seed {r['settings']['seed']}: {_ms(r['baseline'], 'latency_ms')} / "
            f"{_ms(r['baseline'], 'latency_batch_ms')}" for r in runs) + ").",
        "",
        *at_flops_levels(runs),
        "",
        "## Fixed plans beside the search fronts, at equal cost",
        "",
        "Each fixed plan got the same fine-tune as a trial. The arms' columns give the best "
        "validation accuracy among the arm's trials that are at least as small (params) / at "
        "least as cheap (FLOPs) as the plan.",
        "",
        *equal_cost(runs),
    ]
    return "\n".join(text) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="search_quality.py JSON files")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_quality.md")
    args = parser.parse_args()
    runs = sorted((json.loads(p.read_text()) for p in args.results),
                  key=lambda r: r["settings"]["seed"])
    args.out.write_text(render(runs))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
