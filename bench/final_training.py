"""Final training of one chosen search model, three ways: which recipe should `autorank export`
use? Same plan, same number of fine-tune epochs, in one script:

- ``continue``: the trial's own fine-tuned weights, fine-tuned ``--epochs`` more (the default);
- ``vbmf-tucker2``: the plan factorized again from the dense baseline, fine-tuned ``--epochs``
  (``--strategy vbmf-tucker2``, Kim et al. 2016's recipe);
- ``admm``: the dense baseline trained ``--admm-steps`` steps towards the plan's ranks, then
  factorized exactly and fine-tuned ``--epochs`` (``--strategy admm``, Yin et al. 2021).

``continue`` starts from weights that already had the search's fine-tune (``finetune.steps``
of the run) and ``admm`` gets ``--admm-steps`` of dense training: both are stated beside the
numbers. Test accuracy on the run's test split (for the shared checkpoints: the half of the
test set that never judged a trial).

    python bench/final_training.py --run RUN [--trial N] [--epochs 0.5] [--admm-steps 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import autorank as ar

RESULTS = Path(__file__).parent / "results"


def pick_trial(run: Path, within: float) -> int:
    """The front's smallest trial within ``within`` of the baseline's validation accuracy."""
    result = ar.load_run(run)
    front = result.pareto()
    ok = front[front["val_accuracy"] >= result.baseline["val_accuracy"] - within]
    return int(ok.sort_values("params").iloc[0]["number"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", required=True, help="a finished search's run directory")
    parser.add_argument("--trial", type=int, default=None,
                        help="default: the front's smallest trial within --within of the baseline")
    parser.add_argument("--within", type=float, default=0.05)
    parser.add_argument("--epochs", type=float, default=0.5)
    parser.add_argument("--admm-steps", type=int, default=100)
    parser.add_argument("--out", default="final_training.json", help="file name in bench/results/")
    args = parser.parse_args()
    run = Path(args.run)
    trial = args.trial if args.trial is not None else pick_trial(run, args.within)
    result = ar.load_run(run)
    row = result.trials.set_index("number").loc[trial]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, strategy in (("continue", None), ("vbmf-tucker2", "vbmf-tucker2"),
                               ("admm", "admm")):
            start = time.time()
            done = ar.export(run, trial, Path(tmp) / name, finetune_epochs=args.epochs,
                             strategy=strategy, admm_steps=args.admm_steps)
            info = done.info
            rows.append({"recipe": name, "test_accuracy": info["test_accuracy"],
                         "test_accuracy_trial": info.get("test_accuracy_trial"),
                         "accuracy_after": info.get("accuracy_after"),
                         "params_ratio": info["params_ratio"], "flops_ratio": info["flops_ratio"],
                         "wall_s": time.time() - start, "strategy_extra": info.get("strategy_extra")})
            print(json.dumps(rows[-1], default=float), flush=True)
    report = {"settings": {**vars(args), "trial": trial,
                           "search_finetune_steps": result.config.space.finetune.steps,
                           "trial_val_accuracy": float(row["val_accuracy"])},
              "baseline": dict(result.baseline), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
