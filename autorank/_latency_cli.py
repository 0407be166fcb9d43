"""``autorank latency``: a plan's latency against the dense model's, predicted by the latency
table and measured, plain and deployed. Kept apart from cli.py, and torch imported only when
the command runs, so that ``autorank --help`` stays fast."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .errors import UserError


def add_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--plan", help="a plan JSON file (as `autorank export` writes plan.json)")
    source.add_argument("--run", help="a search's run directory (with --trial)")
    p.add_argument("--trial", type=int, help="the trial of --run whose plan to time")
    p.add_argument("--model", help="a registered model name (with --plan; --run knows its own)")
    p.add_argument("--checkpoint", default=None,
                   help="state-dict checkpoint (its shapes matter, not its values: latency does "
                        "not depend on the weights)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (with --plan)")
    p.add_argument("--input-size", type=int, default=32, help="square input side (with --plan)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="run the models in torch eager or in onnxruntime (default: torch)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: torch's current setting)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch backend only)")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds (median kept)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _model_and_plan(args: argparse.Namespace) -> tuple[Any, Any, int]:
    from ._env import resolve_checkpoint
    from .bundle import read_plan_file
    from .models import get_model
    from .sweep import load_run
    from .types import plan_from_json

    if args.run is not None:
        if args.trial is None:
            raise UserError("--run needs --trial N: the trial whose plan to time")
        result = load_run(args.run)
        trials = result.trials
        rows = trials[trials["number"] == args.trial] if "number" in trials else trials
        if not len(rows):
            raise UserError(f"run {args.run!r} has no trial {args.trial}; see trials.csv there")
        cfg = result.config
        classes = result.baseline.num_classes or args.num_classes
        side = cfg.input_size or 32  # a run saves the size it resolved
        model = get_model(cfg.model, num_classes=classes, input_size=side)
        return model, plan_from_json(str(rows.iloc[0]["plan"])), side
    if args.model is None:
        raise UserError("--plan needs --model: the model the plan was made for")
    plan, stages = read_plan_file(args.plan)
    if len(stages) > 1:
        raise UserError(f"{args.plan!r} holds {len(stages)} stages; latency times one-stage plans")
    model = get_model(args.model, num_classes=args.num_classes, input_size=args.input_size,
                      checkpoint=resolve_checkpoint(args.checkpoint))
    return model, plan, args.input_size


def run(args: argparse.Namespace) -> int:
    import torch

    from .decompose import validate_plan
    from .latency import Target
    from .latency.compare import compare, format_comparison
    from .runtime import resolve_device

    if args.batch < 1 or args.repeats < 1:
        raise UserError("--batch and --repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    device = str(resolve_device(args.device))
    if device != "cpu" and args.backend != "torch":
        raise UserError("--backend onnxruntime runs on the CPU here; use --device cpu")
    if args.backend == "onnxruntime":
        from .bundle import check_onnx_available

        check_onnx_available()
    model, plan, size = _model_and_plan(args)
    validate_plan(model, plan)
    target = Target(device=device, threads=args.threads or torch.get_num_threads(),
                    batch=args.batch, backend=args.backend)
    result = compare(model.eval(), plan, (3, size, size), target, repeats=args.repeats)
    print(json.dumps(result, indent=1) if args.json else format_comparison(result))
    return 0
