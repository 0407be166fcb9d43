"""Seconds per search trial with and without the teacher-logit cache, ResNet-20 on CIFAR-10.

A search fine-tunes every trial on the same seeded batches, so the dense teacher's logits are
the same in every trial; ``run_trial`` keeps them per worker process (``TeacherCache``). This
bench runs the same plan in one process, in pairs: a fresh context (a cold cache: the teacher
runs every step, as without the cache), then the same context again (a warm cache), and
checks that both give the same validation accuracy.

    AUTORANK_DATA_DIR=... AUTORANK_WEIGHTS_DIR=... python bench/trial_speed.py  # -> results/trial_speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import uuid
from pathlib import Path

import torch

from autorank import inventory
from autorank.config import load_space, space_from_dict
from autorank.data import get_data
from autorank.metrics import count_flops, count_params
from autorank.models import get_model, get_model_spec
from autorank.sweep.space import build_space
from autorank.sweep.trial import TrialContext, run_trial

RESULTS = Path(__file__).parent / "results" / "trial_speed.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="fine-tune steps per trial")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm pairs")
    args = parser.parse_args()
    if not (os.environ.get("AUTORANK_DATA_DIR") and os.environ.get("AUTORANK_WEIGHTS_DIR")):
        print("set AUTORANK_DATA_DIR and AUTORANK_WEIGHTS_DIR", file=sys.stderr)
        return 2
    spec = get_model_spec("resnet20")
    data = get_data("cifar10", data_dir=os.environ["AUTORANK_DATA_DIR"], val_source="test",
                    val_size=2000, seed=0, mean=spec.mean, std=spec.std)
    model = get_model("resnet20", checkpoint=Path(os.environ["AUTORANK_WEIGHTS_DIR"])
                      / "resnet20-12fca82f.th")
    cfg = space_from_dict({"finetune": {"steps": args.steps}}, base=load_space("cifar_resnet"))
    shape = (1, 3, 32, 32)
    space = build_space(model, inventory(model, shape), cfg)

    def context() -> TrialContext:
        return TrialContext(key=uuid.uuid4().hex, model_name="resnet20", num_classes=10,
                            input_size=32, baseline_state=model.state_dict(),
                            baseline_params=count_params(model),
                            baseline_flops=count_flops(model, shape), data=data, space=space,
                            threads=args.threads)

    params = space.seed_params(0.5)
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    accuracy: dict[str, set[float]] = {"cold": set(), "warm": set()}
    for _ in range(args.repeats):
        # a process keeps one run's cache: a new context starts cold, its second trial is warm
        ctx = context()
        for name in ("cold", "warm"):
            out = run_trial(ctx, None, params)
            times[name].append(out.finetune_s)
            accuracy[name].add(out.val_accuracy)
    cold, warm = (statistics.median(times[k]) for k in ("cold", "warm"))
    lines = [
        "# Search trial time with and without the teacher-logit cache",
        "",
        f"`python bench/trial_speed.py` on {platform.machine()}, {args.threads} torch threads, "
        f"torch {torch.__version__}. ResNet-20 checkpoint, CIFAR-10, the `cifar_resnet` "
        f"preset's fine-tune with distillation ({args.steps} steps of "
        f"{cfg.finetune.batch_size}, after {cfg.finetune.bn_batches} BatchNorm recalibration "
        f"batches), one plan (Tucker-2 at w = 0.5), {args.repeats} cold/warm pairs in one "
        "process.",
        "",
        "| teacher | fine-tune s (median) | runs (s) | val accuracy |",
        "|---|---|---|---|",
        *(f"| {k} | {statistics.median(v):.2f} | {', '.join(f'{t:.2f}' for t in v)} | "
          f"{', '.join(f'{a:.4f}' for a in sorted(accuracy[k]))} |" for k, v in times.items()),
        "",
        f"The warm cache takes {100 * (1 - warm / cold):.0f} % off the fine-tune "
        f"({cold:.2f} s -> {warm:.2f} s); the accuracies are "
        f"{'identical' if accuracy['cold'] == accuracy['warm'] else 'NOT identical'}.",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
