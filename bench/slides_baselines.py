"""The reference slides' five baselines trained as far as the slides', and EVBMF's rank share
along their training.

The slides' table (``reference_table.py --only MODEL``) was first measured on baselines of 1-6
epochs (52-78 % test accuracy), where EVBMF kept 0.5-2 % of the ranks. Two explanations were
offered; this script tests the first (the weights were too young) directly:

- ``--train MODEL`` trains the baseline with ``autorank train``'s recipe (``train_baseline``:
  SGD momentum 0.9, weight decay 5e-4, cosine lr from the recipe's lr, random crop + flip,
  batch 128) on the 45,000 CIFAR-10 training images that the seeded 10 % validation split
  leaves, for the epochs of ``RECIPES``: chosen to pass the slides' test accuracy. Every epoch
  is saved and kept (``keep_epochs``), so a stopped training resumes at its last epoch, in
  another session too. Checkpoints live in ``$AUTORANK_CACHE_DIR/slides_baselines`` (default
  ``~/.cache/autorank``), never in the repository.
- ``--curve`` reads every epoch kept so far (a training still under way included) and writes
  EVBMF's rank share of each (the share ``vbmf-tucker2`` keeps, over the layers it may
  factorize) beside its validation accuracy, and the share on a fresh initialisation of the
  model, to ``results/slides_baselines.json``, ``.md`` and ``_rank_share.png``, with the
  sha256 and test accuracy of each finished baseline.

Then ``reference_table.py --only MODEL`` measures the slides' columns on the finished baseline.

    AUTORANK_DATA_DIR=... python bench/slides_baselines.py --train shufflenet_v2_x1_0
    AUTORANK_DATA_DIR=... python bench/slides_baselines.py --curve
    python bench/slides_baselines.py --smoke     # tiny_cnn on digits, under a minute
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _reference_strategies import (  # noqa: E402
    SLIDES_MODELS,
    cache_root,
    evbmf_rank_share,
    slides_row,
)
from reference_table import CHECKPOINTS  # noqa: E402  (the trained CIFAR ResNets)

from autorank.baseline import epochs_dir, train_baseline  # noqa: E402
from autorank.models import get_model  # noqa: E402

log = logging.getLogger("slides_baselines")

RESULTS = Path(__file__).parent / "results"
# model -> (lr, epochs). The epochs are set from the short baselines measured first
# (reference_table.md: ShuffleNet V2 77.7 % after 6 epochs, VGG-16 67.6 % after 3, AlexNet
# 52.1 % after 6 at lr 0.01, ResNet-18 58.3 % after 1) to end above the slides' accuracy; each
# curve shows where its training got.
LONG = {"shufflenet_v2_x1_0": (0.05, 30), "alexnet": (0.01, 40), "vgg16_bn": (0.05, 20),
        "resnet18": (0.05, 15), "densenet161": (0.05, 15)}
# model -> (slides' name, the slides' baseline test accuracy, lr, epochs)
RECIPES: dict[str, tuple[str, float, float, int]] = {
    name: (SLIDES_MODELS[name][0], slides_row(name)[2], lr, epochs)
    for name, (lr, epochs) in LONG.items()}
# measured on 2 CPU cores (reference_table.md): one 128-image step 61-78 s, 352 steps an epoch: 6-8 h
CUDA_ONLY = {"densenet161": "one training step takes 61-78 s on 2 CPU cores (6-8 hours "
                            "an epoch)"}
SMOKE = {"tiny_cnn": ("tiny_cnn (smoke)", 0.9, 0.1, 3)}


def cache() -> Path:
    return cache_root() / "slides_baselines"


def checkpoint(name: str, recipes: dict[str, tuple[str, float, float, int]]) -> Path:
    """The finished baseline's file; its epochs are kept in ``epochs_dir`` of it."""
    _, _, lr, epochs = recipes[name]
    return cache() / f"{name}-cifar10-e{epochs}-lr{lr}.pt"


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def train(name: str, dataset: str, recipes: dict[str, tuple[str, float, float, int]],
          device: str = "cpu") -> Path:
    """Train ``name`` to its recipe's last epoch (resuming where an earlier call stopped)."""
    path = checkpoint(name, recipes)
    if path.is_file():
        log.info("%s is trained: %s", name, path)
        return path
    _, _, lr, epochs = recipes[name]
    start = time.perf_counter()
    train_baseline(name, dataset, epochs=epochs, lr=lr, out=path, seed=0, progress=False,
                   keep_epochs=True, device=device)
    log.info("%s trained in %.0f s (this call): %s", name, time.perf_counter() - start, path)
    return path


def curve(name: str, recipes: dict[str, tuple[str, float, float, int]]) -> dict[str, Any] | None:
    """EVBMF's rank share at every kept epoch of ``name`` and at initialisation; None when no
    epoch is kept yet."""
    path = checkpoint(name, recipes)
    kept = sorted(epochs_dir(path).glob("epoch-*.pt"))
    if not kept:
        return None
    points = []
    for file in kept:
        meta = torch.load(file, map_location="cpu", weights_only=True)["meta"]
        start = time.perf_counter()
        share = evbmf_rank_share(get_model(name, checkpoint=file))
        points.append({"epoch": meta["epoch"], "val_accuracy": meta["val_accuracy"],
                       "loss": meta["loss"], "rank_share": share, "sha256": sha256(file),
                       "evbmf_s": time.perf_counter() - start})
        log.info("%s epoch %d: val %.4f, rank share %.4f", name, meta["epoch"],
                 meta["val_accuracy"], share)
    torch.manual_seed(0)
    label, slides, lr, epochs = recipes[name]
    out: dict[str, Any] = {"label": label, "slides_test_accuracy": slides, "lr": lr,
                           "epochs": epochs, "init_rank_share": evbmf_rank_share(get_model(name)),
                           "points": points}
    if path.is_file():
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
        out.update(test_accuracy=meta["test_accuracy"], sha256=sha256(path), file=path.name)
    return out


# the fully trained CIFAR ResNets (AUTORANK_WEIGHTS_DIR, reference_table.CHECKPOINTS, with
# their published test accuracy): where EVBMF's share stands on weights trained to
# convergence, beside a fresh initialisation


def trained_shares(weights_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for name, (file, accuracy) in CHECKPOINTS.items():
        if (weights_dir / file).is_file():
            torch.manual_seed(0)
            out[name] = {"test_accuracy": accuracy, "init_rank_share": evbmf_rank_share(get_model(name)),
                         "rank_share": evbmf_rank_share(get_model(name, checkpoint=weights_dir / file))}
    return out


def render(curves: dict[str, dict[str, Any]], smoke: bool,
           trained: dict[str, dict[str, float]] | None = None) -> str:
    lines = ["# The slides' baselines, trained long, and EVBMF's rank share along training", "",
             "`python bench/slides_baselines.py --train MODEL` then `--curve` (see its "
             "docstring). Recipe: `train_baseline` (SGD momentum 0.9, weight decay 5e-4, cosine "
             "lr, crop + flip, batch 128) on 45,000 CIFAR-10 training images; validation "
             "accuracy on the seeded 5,000-image split of the training set, test accuracy on "
             "the 10,000 test images. Rank share: the sum of the EVBMF ranks `vbmf-tucker2` "
             "uses over the sum of the full ranks, over every layer it may factorize.", "",
             "| model | recipe | epochs done | val accuracy (last epoch) | test accuracy | "
             "the slides' | rank share at init | rank share (first / last epoch) | sha256 |",
             "|" + "---|" * 9]
    for name, c in curves.items():
        first, last = c["points"][0], c["points"][-1]
        test = f"{100 * c['test_accuracy']:.2f} %" if "test_accuracy" in c else "training"
        lines.append(
            f"| {name} | lr {c['lr']}, {c['epochs']} epochs | {last['epoch']} / {c['epochs']} | "
            f"{100 * last['val_accuracy']:.2f} % | {test} | {100 * c['slides_test_accuracy']:.1f} % "
            f"| {100 * c['init_rank_share']:.2f} % | {100 * first['rank_share']:.2f} % / "
            f"{100 * last['rank_share']:.2f} % | {c.get('sha256', '-')[:16]} |")
    lines += ["", "Every kept epoch:", "", "| model | epoch | val accuracy | train loss | "
              "rank share |", "|---|---|---|---|---|"]
    for name, c in curves.items():
        lines += [f"| {name} | {p['epoch']} | {100 * p['val_accuracy']:.2f} % | {p['loss']:.3f} "
                  f"| {100 * p['rank_share']:.2f} % |" for p in c["points"]]
    if trained:
        lines += ["", "For reference, the fully trained CIFAR ResNet checkpoints (their published "
                  "test accuracy): " + "; ".join(
                      f"{name} ({100 * t['test_accuracy']:.2f} %): rank share "
                      f"{100 * t['rank_share']:.1f} %, {100 * t['init_rank_share']:.1f} % on a "
                      "fresh initialisation" for name, t in trained.items()) + "."]
    if not smoke:
        missing = [m for m in RECIPES if m not in curves]
        if missing:
            lines += ["", f"No epoch trained yet: {', '.join(missing)}."]
    if curves and not smoke:
        lines += ["", "![rank share against validation accuracy](slides_baselines_rank_share.png)"]
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        xs = [100 * p["val_accuracy"] for p in c["points"]]
        line, = ax.plot(xs, [100 * p["rank_share"] for p in c["points"]], marker="o", label=name)
        ax.axhline(100 * c["init_rank_share"], color=line.get_color(), linestyle=":")
        ax.axvline(100 * c["slides_test_accuracy"], color=line.get_color(), linestyle="--",
                   alpha=0.5)
    ax.set_xlabel("baseline validation accuracy (%)")
    ax.set_ylabel("EVBMF rank share (%)")
    ax.set_title("EVBMF rank share along training (dotted: fresh init; dashed: slides' accuracy)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", choices=sorted(RECIPES), help="train one baseline (resumable)")
    parser.add_argument("--curve", action="store_true", help="rank share of every kept epoch")
    parser.add_argument("--smoke", action="store_true", help="tiny_cnn on digits, to a temp folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.smoke:
        import tempfile

        os.environ["AUTORANK_CACHE_DIR"] = tempfile.mkdtemp(prefix="slides-smoke-")
        train("tiny_cnn", "digits", SMOKE)
        curves = {"tiny_cnn": curve("tiny_cnn", SMOKE)}
        print(render({k: v for k, v in curves.items() if v}, smoke=True))
        return 0
    if not os.environ.get("AUTORANK_DATA_DIR"):
        print("skipped: set AUTORANK_DATA_DIR (the folder holding cifar10.npz)", file=sys.stderr)
        return 0
    if args.train in CUDA_ONLY and args.device == "cpu":
        print(f"{args.train}: {CUDA_ONLY[args.train]}; train it where a GPU is (--device cuda)",
              file=sys.stderr)
        return 2
    if args.train:
        train(args.train, "cifar10", RECIPES, args.device)
    if args.curve:
        found = {m: c for m in RECIPES if (c := curve(m, RECIPES)) is not None}
        weights = os.environ.get("AUTORANK_WEIGHTS_DIR")
        trained = trained_shares(Path(weights)) if weights else {}
        (RESULTS / "slides_baselines.json").write_text(
            json.dumps({"models": found, "trained_checkpoints": trained}, indent=1) + "\n")
        (RESULTS / "slides_baselines.md").write_text(render(found, smoke=False, trained=trained))
        if found:
            plot(found, RESULTS / "slides_baselines_rank_share.png")
        print((RESULTS / "slides_baselines.md").read_text())
    if not (args.train or args.curve):
        parser.error("give --train MODEL, --curve or --smoke")
    return 0


if __name__ == "__main__":
    sys.exit(main())
