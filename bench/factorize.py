"""Time to factorize every compressible conv of torchvision ResNet-18 with tucker2.

Three ways in one run: autorank cold (empty factor cache: one HOSVD per layer), autorank warm
(a new plan over the same weights: factors sliced from the cache), and tensorly's
``partial_tucker`` per layer (HOOI, what a per-plan recomputation costs).

    python bench/factorize.py            # writes bench/results/factorize.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import tensorly as tl
import torch
import torchvision
from tensorly.decomposition import partial_tucker

import autorank as ar

RESULTS = Path(__file__).parent / "results" / "factorize.md"


def tucker_plans(model: torch.nn.Module) -> dict[str, dict[str, ar.LayerChoice]]:
    """Plans over every k x k conv: EVBMF ranks, and half of each max rank."""
    rows = [r for r in ar.inventory(model, (1, 3, 224, 224)) if "tucker2" in r.max_rank]
    return {
        "vbmf": {r.name: ar.LayerChoice("tucker2", r.vbmf_ranks["tucker2"]) for r in rows},
        "half": {r.name: ar.LayerChoice("tucker2", tuple(max(1, m // 2) for m in
                                                        r.max_rank["tucker2"])) for r in rows},
    }


def time_it(fn: object, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / repeats


def tensorly_per_layer(model: torch.nn.Module, plan: dict[str, ar.LayerChoice]) -> None:
    with tl.backend_context("numpy"):
        for name, choice in plan.items():
            w = model.get_submodule(name).weight.detach().double().numpy()
            r_in, r_out = choice.rank
            partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd", n_iter_max=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    plans = tucker_plans(model)
    tucker = ar.get_method("tucker2")
    lines = [
        "# Factorizing every k x k conv of torchvision ResNet-18 with tucker2",
        "",
        f"`python bench/factorize.py` on {platform.processor() or platform.machine()}, "
        f"{args.threads} torch threads, torch {torch.__version__}. Random-init weights (no "
        "download): EVBMF ranks of random kernels are tiny, so the 'half' plan (half of every "
        "max rank) shows the cost at realistic ranks too.",
        "",
        "| plan | layers | autorank cold (s) | autorank warm (s) | tensorly partial_tucker per layer (s) |",
        "|---|---|---|---|---|",
    ]
    for label, plan in plans.items():
        tucker.cache.clear()
        cold = time_it(lambda plan=plan: ar.apply_plan(model, plan))
        warm = time_it(lambda plan=plan: ar.apply_plan(model, plan), repeats=3)
        tly = time_it(lambda plan=plan: tensorly_per_layer(model, plan))
        lines.append(f"| {label} | {len(plan)} | {cold:.2f} | {warm:.3f} | {tly:.2f} |")
    lines += ["", "Warm = a new plan over the same baseline, as in a search: HOSVD factors are "
              "sliced from the cache; what remains is copying the model and building modules."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
