"""Seconds per fine-tune step and per evaluated image in NCHW against NHWC (the
``memory_format`` of :class:`~autorank.engine.FinetuneConfig` and
:func:`~autorank.engine.evaluate`), for every registered model and for compressed ResNet-20s,
through ``finetune`` and ``evaluate`` themselves.

Each model (random weights; 32x32 images of a synthetic data set, augmented as in a search)
is fine-tuned ``--steps`` steps per reading, the two layouts alternating for ``--rounds``
rounds so that a busier machine during one reading does not favour one layout; the reading is
the fine-tune's own seconds divided by its steps, without its first ``--warmup`` steps
(allocator and kernel choice), and the table gives each layout's median over the rounds.
Evaluation: ``evaluate`` over the ``--batch`` x 4 test images (batches of 512), timed after
one untimed call, in the same rounds.
Compressed ResNet-20s: Tucker-2 keeping half and 3/8 of every searched layer's channels, CP
at rank 8 on three layers, and half of every block's inner channels pruned by L1 norm.

    python bench/train_speed.py                 # -> bench/results/train_speed.md (~10 min)
    python bench/train_speed.py --models resnet20 tiny_cnn --rounds 2   # a quick look

Run it on a quiet machine: it times wall-clock steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import autorank as ar
from autorank.data import get_data
from autorank.engine import evaluate, finetune
from autorank.models import get_model, list_models

RESULTS = Path(__file__).parent / "results"
CUDA_ONLY = ("densenet161",)  # 61-78 s per step on 2 CPU cores


def compressed_resnet20() -> dict[str, torch.nn.Module]:
    """ResNet-20 factorized and pruned the ways a search builds it."""
    base = get_model("resnet20", num_classes=10)
    rows = [r for r in ar.inventory(base, (1, 3, 32, 32)) if r.params >= 2000 and "tucker2" in r.max_rank]

    def tucker2(share: float) -> torch.nn.Module:
        return ar.apply_plan(base, {r.name: ar.LayerChoice("tucker2", tuple(
            max(1, round(share * c)) for c in (r.weight_shape[1], r.weight_shape[0]))) for r in rows})

    inner = {n: m.out_channels for n, m in base.named_modules()
             if isinstance(m, torch.nn.Conv2d) and n.endswith("conv1") and n.count(".") == 2}
    cp_layers = ("layer2.0.conv2", "layer2.1.conv1", "layer3.1.conv1")
    return {
        "resnet20 tucker2 1/2": tucker2(0.5),
        "resnet20 tucker2 3/8": tucker2(0.375),
        "resnet20 cp rank 8 (3 layers)": ar.apply_plan(base, {n: ar.LayerChoice("cp", (8,))
                                                             for n in cp_layers}),
        "resnet20 pruned 1/2 (L1)": ar.apply_plan(base, {n: ar.LayerChoice("prune", (c // 2,))
                                                        for n, c in inner.items()},
                                                  input_shape=(1, 3, 32, 32)),
    }


def step_seconds(model: torch.nn.Module, data: Any, fmt: str, args: argparse.Namespace) -> float:
    """Seconds per step of a ``fmt`` fine-tune, its first ``--warmup`` steps left out."""
    model = copy.deepcopy(model)
    finetune(model, data, steps=args.warmup, batch_size=args.batch, memory_format=fmt)
    result = finetune(model, data, steps=args.steps, batch_size=args.batch, memory_format=fmt)
    return result.seconds / result.steps


def eval_seconds(model: torch.nn.Module, data: Any, fmt: str) -> float:
    """Seconds per test image of ``evaluate`` in ``fmt``, after one untimed call."""
    evaluate(model, data, "test", memory_format=fmt)
    start = time.perf_counter()
    evaluate(model, data, "test", memory_format=fmt)
    return (time.perf_counter() - start) / data.num_examples("test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="registered models (default: all "
                        "but DenseNet-161 on CPU) and the compressed ResNet-20s")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = get_data("synthetic", num_train=args.batch * (args.steps + args.warmup), num_test=4 * args.batch,
                    num_classes=10, image_size=32)
    names = args.models or [m for m in list_models() if m not in CUDA_ONLY]
    models = {n: get_model(n, num_classes=10) for n in names}
    if args.models is None:
        models.update(compressed_resnet20())
    rows = []
    for name, model in models.items():
        start = time.time()
        times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        evals: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
        for _ in range(args.rounds):
            for fmt in times:
                times[fmt].append(step_seconds(model, data, fmt, args))
                evals[fmt].append(eval_seconds(model, data, fmt))
        nchw, nhwc = (statistics.median(times[f]) for f in ("contiguous", "channels_last"))
        e_nchw, e_nhwc = (1000 * statistics.median(evals[f]) for f in ("contiguous", "channels_last"))
        rows.append({"model": name, "nchw_s": nchw, "nhwc_s": nhwc, "speedup": nchw / nhwc,
                     "eval_nchw_ms_per_image": e_nchw, "eval_nhwc_ms_per_image": e_nhwc,
                     "eval_speedup": e_nchw / e_nhwc, "readings": times, "eval_readings": evals,
                     "bench_s": time.time() - start})
        print(f"{name}: NCHW {nchw:.3f} s, NHWC {nhwc:.3f} s per step: {nchw / nhwc:.2f}x; "
              f"evaluate {e_nchw / e_nhwc:.2f}x", flush=True)
    RESULTS.mkdir(exist_ok=True)
    about = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
             **{k: getattr(args, k) for k in ("steps", "warmup", "rounds", "batch", "threads")}}
    (RESULTS / "train_speed.json").write_text(json.dumps({"about": about, "rows": rows}, indent=1))
    lines = ["# Fine-tune and evaluation time: NCHW against NHWC (channels_last)", "",
             "Written by `bench/train_speed.py`; protocol in its docstring. "
             f"torch {about['torch']}, {args.threads} threads, batch {args.batch}, "
             f"median of {args.rounds} rounds of {args.steps} steps.", "",
             "| model | NCHW s/step | NHWC s/step | NHWC speed-up | evaluate NCHW ms/image | "
             "NHWC ms/image | NHWC speed-up |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['nchw_s']:.3f} | {r['nhwc_s']:.3f} | {r['speedup']:.2f}x | "
              f"{r['eval_nchw_ms_per_image']:.3f} | {r['eval_nhwc_ms_per_image']:.3f} | "
              f"{r['eval_speedup']:.2f}x |" for r in rows]
    if args.models is None:
        (RESULTS / "train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
