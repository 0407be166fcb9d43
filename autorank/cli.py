"""The ``autorank`` command: a thin shell over the public API.

Every subcommand parses its flags and calls one library function. Bad input (``UserError`` or
``ValueError``) prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import _env
from .errors import UserError

log = logging.getLogger("autorank")

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
    """Register a subcommand: its flags and its handler."""

    def wrap(handler: Handler) -> Handler:
        _COMMANDS[name] = (add_args, handler)
        return handler

    return wrap


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name (see `autorank models`)")
    p.add_argument("--checkpoint", default=None,
                   help="state-dict checkpoint to load (a file, or a name in $AUTORANK_WEIGHTS_DIR)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--input-size", type=int, default=32, help="square input side in pixels")


def _inventory_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


@command("inventory", _inventory_args)
def _inventory(args: argparse.Namespace) -> int:
    """Print the compressible layers of a model with their cost and EVBMF ranks."""
    from .inventory import inventory_table
    from .models import get_model

    model = get_model(args.model, num_classes=args.num_classes,
                      checkpoint=resolve_checkpoint(args.checkpoint), input_size=args.input_size)
    print(inventory_table(model, (1, 3, args.input_size, args.input_size), fmt=args.format))
    return 0


@command("models", lambda p: None)
def _models(args: argparse.Namespace) -> int:
    """List the registered models."""
    from .models import list_models

    print("\n".join(list_models()))
    return 0


@command("methods", lambda p: None)
def _methods(args: argparse.Namespace) -> int:
    """List the decomposition methods and their rank tuples."""
    from .decompose import get_method, list_methods

    for name in list_methods():
        method = get_method(name)
        print(f"{name:12s} rank {method.rank_names}  {(method.__doc__ or '').splitlines()[0]}")
    return 0


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet18", help="registered model (`autorank models`)")
    p.add_argument("--dataset", default="cifar10",
                   help="cifar10, cifar100, digits, synthetic, npz:PATH or imagefolder:PATH")
    p.add_argument("--data-dir", default=None, help="where data sets live ($AUTORANK_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="let torchvision fetch CIFAR if absent")
    p.add_argument("--checkpoint", default=None,
                   help="trained baseline; without it one is trained first and cached")
    p.add_argument("--space", default=None, help="search-space preset name or YAML file")
    p.add_argument("--objectives", default=None,
                   help="comma list after accuracy: params, flops, latency (default: params)")
    p.add_argument("--budget", type=int, default=50, help="number of trials")
    p.add_argument("--parallel", type=int, default=None, help="concurrent trials (default: CPUs)")
    p.add_argument("--cpus-per-trial", type=int, default=None)
    p.add_argument("--gpus-per-trial", type=float, default=None)
    p.add_argument("--address", default=None, help="Ray cluster to join: auto or ray://host:port")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: SQLite in the run directory)")
    p.add_argument("--storage-path", default=None, help="Ray Tune storage every node reaches")
    p.add_argument("--study-name", default=None,
                   help="Optuna study (default autorank); drivers on one study share its budget")
    p.add_argument("--heartbeat", type=int, default=None, dest="heartbeat_s",
                   help="seconds between trial heartbeats; 3x silent = driver gone (default 10)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="one rung: every trial fine-tunes this many steps (no promotions)")
    p.add_argument("--min-steps", type=int, default=None,
                   help="multi-fidelity: steps of the first rung (every trial)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="multi-fidelity: steps of the top rung (the front is judged there)")
    p.add_argument("--eta", type=int, default=None,
                   help="multi-fidelity: the best 1/eta of a rung go on with eta x the steps")
    p.add_argument("--runner", choices=["ray", "local"], default=None,
                   help="ray (default): Ray Tune; local: in-process, one trial at a time")
    p.add_argument("--val-source", choices=["auto", "train", "test"], default=None,
                   help="where validation images come from (auto: test half for checkpoints)")
    p.add_argument("--baseline-epochs", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu or cuda")


@command("search", _search_args)
def _search(args: argparse.Namespace) -> int:
    """Search per-layer decompositions and ranks; writes a run directory with the Pareto front."""
    from .config import make_config
    from .sweep import search
    from .sweep.report import front_text

    objectives = args.objectives.split(",") if args.objectives else None
    cfg = make_config(
        space=args.space, finetune_steps=args.finetune_steps, min_steps=args.min_steps,
        max_steps=args.max_steps, eta=args.eta, objectives=objectives,
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, download=args.download or None,
        checkpoint=resolve_checkpoint(args.checkpoint), budget=args.budget,
        parallel=args.parallel, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, address=args.address, storage=args.storage,
        storage_path=args.storage_path, study_name=args.study_name, heartbeat_s=args.heartbeat_s,
        out=args.out, seed=args.seed, runner=args.runner, val_source=args.val_source,
        baseline_epochs=args.baseline_epochs, device=args.device)
    result = search(cfg, resume=args.resume, progress=_print_progress)
    print(file=sys.stderr)
    print(front_text(result.pareto(), result.baseline))
    print(f"run directory: {result.path}")
    return 0


def _print_progress(p: Any) -> None:
    best = ""
    if len(p.front):
        top = p.front.sort_values("params").iloc[0]
        best = f" | front {len(p.front)}, smallest {top['params_ratio']:.2f}x params at val " \
               f"{top['val_accuracy']:.3f}"
    rungs = f" | rungs {'/'.join(str(n) for n in p.per_rung)}" if p.per_rung else ""
    line = (f"[{p.done}/{p.budget}] {p.failed} failed{rungs} | {_clock(p.elapsed_s)} elapsed, "
            f"~{_clock(p.eta_s)} left{best}")
    end = "\r" if sys.stderr.isatty() else "\n"
    print(line.ljust(100), end=end, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a self-contained HTML report (default RUN/report.html)")
    p.add_argument("--storage", default=None,
                   help="the study's storage URL, when the run's saved URL hides a password")


@command("report", _report_args)
def _report(args: argparse.Namespace) -> int:
    """Print a run's Pareto front (its trials read again from the study) and rewrite its plot."""
    from .sweep.report import front_objective, front_text, plot_front, sync_run
    from .sweep.rundir import RunDir

    result = sync_run(args.run, storage=args.storage)
    front = result.pareto()
    if len(result.trials):
        plot_front(result.trials, front, result.baseline, RunDir(result.path).plot,
                   objective=front_objective(result.config.space))
    print(front_text(front, result.baseline))
    if args.html is not None:
        from .sweep.html_report import write_html

        print(f"HTML report: {write_html(result, args.html or None)}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory")
    p.add_argument("--trial", type=int, required=True, help="trial number (see `autorank report`)")
    p.add_argument("--out", required=True, help="directory to write (new, empty, or an earlier export)")
    p.add_argument("--finetune-epochs", type=float, default=0,
                   help="fine-tune this many epochs more, distilling from the baseline (default 0)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked by onnxruntime")
    p.add_argument("--strategy", default=None,
                   help="train the trial's plan from the dense baseline by this recipe instead: "
                        "vbmf-tucker2 (factorize, fine-tune) or admm (ADMM towards the ranks "
                        "first, Yin et al. 2021); needs --finetune-epochs")
    p.add_argument("--admm-steps", type=int, default=200,
                   help="with --strategy admm: training steps of the dense model (default 200)")


@command("export", _export_args)
def _export(args: argparse.Namespace) -> int:
    """Export one trial as plan.json + weights + model card (+ ONNX); load it with ar.load_exported."""
    from .exporter import export

    done = export(args.run, args.trial, args.out, finetune_epochs=args.finetune_epochs,
                  onnx=args.onnx, strategy=args.strategy, admm_steps=args.admm_steps)
    info = done.info
    how = f" ({info['strategy']})" if info.get("strategy") else ""
    print(f"trial {info['trial']}{how}: test {info['test_accuracy']:.4f}, params ratio "
          f"{info['params_ratio']:.2f}x, {info['latency_ms']:.2f} ms at batch 1 -> {done.path}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", default=None, help="checkpoint file (default: the baseline cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")


@command("train", _train_args)
def _train(args: argparse.Namespace) -> int:
    """Train a baseline (SGD momentum, cosine LR, crop+flip) and save its checkpoint."""
    from .baseline import train_baseline

    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    path = train_baseline(args.model, args.dataset, epochs=args.epochs, out=args.out,
                          seed=args.seed, data_dir=args.data_dir, lr=args.lr,
                          batch_size=args.batch_size, device=args.device, progress=True)
    print(path)
    return 0


def _compress_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--dataset", default="cifar10",
                   help="cifar10, cifar100, digits, synthetic, npz:PATH or imagefolder:PATH")
    p.add_argument("--data-dir", default=None, help="where data sets live ($AUTORANK_DATA_DIR)")
    p.add_argument("--strategy", required=True, help="vbmf-tucker2, musco or admm")
    p.add_argument("--out", required=True,
                   help="directory for the model (as autorank export writes it) and results")
    p.add_argument("--finetune-steps", type=int, default=200, help="steps of every fine-tune")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tune learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-distill", action="store_true", help="fine-tune without the teacher")
    p.add_argument("--bn-batches", type=int, default=20, help="BN recalibration batches")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on N images only")
    p.add_argument("--exclude", default="", help="comma list of layer globs to keep dense")
    p.add_argument("--include-ends", action="store_true",
                   help="factorize the first conv and the classifier too")
    p.add_argument("--val-source", choices=["auto", "train", "test"], default="auto")
    p.add_argument("--baseline-epochs", type=int, default=30, help="when no --checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g = p.add_argument_group("musco (Gusak et al. 2019)")
    g.add_argument("--stages", type=int, default=2)
    g.add_argument("--w", type=float, default=0.8, help="weakening factor in [0, 1]")
    g.add_argument("--target-ratio", type=float, default=None, help="stop at this params ratio")
    g.add_argument("--max-drop", type=float, default=None,
                   help="stop when val accuracy falls more than this below the baseline's")
    g = p.add_argument_group("admm (Yin et al. 2021)")
    g.add_argument("--admm-steps", type=int, default=200)
    g.add_argument("--format", choices=["tucker2", "tt"], default="tucker2")
    g.add_argument("--ratio", type=float, default=4.0, help="per-layer params ratio of the ranks")
    g.add_argument("--plan", default=None, help="JSON plan with the ranks (overrides --ratio)")
    g.add_argument("--rho", type=float, default=1.0)
    g.add_argument("--rho-growth", type=float, default=1.3)
    g.add_argument("--rho-max", type=float, default=20.0)
    g.add_argument("--update-every", type=int, default=10)


@command("compress", _compress_args)
def _compress(args: argparse.Namespace) -> int:
    """Run one strategy end to end (vbmf-tucker2, musco, admm); writes model and results row."""
    from .bundle import check_out
    from .engine import FinetuneConfig, resolve_device
    from .strategies import (
        AdmmOptions,
        BaselineSpec,
        CompressConfig,
        MuscoOptions,
        compress,
        get_strategy,
        load_baseline,
        read_plan,
        save_compressed,
    )

    get_strategy(args.strategy)  # an unknown name fails before anything is loaded
    check_out(args.out)
    if args.finetune_steps < 0 or args.admm_steps < 0:
        raise UserError("--finetune-steps and --admm-steps must be >= 0")
    device = str(resolve_device(args.device))
    config = CompressConfig(
        finetune=FinetuneConfig(steps=args.finetune_steps, lr=args.lr,
                                batch_size=args.batch_size, seed=args.seed,
                                distill=not args.no_distill, bn_batches=args.bn_batches),
        eval_limit=args.eval_limit, keep_ends=not args.include_ends, device=device,
        exclude=tuple(g for g in args.exclude.split(",") if g),
        musco=MuscoOptions(stages=args.stages, w=args.w, target_ratio=args.target_ratio,
                           max_drop=args.max_drop),
        admm=AdmmOptions(steps=args.admm_steps, method=args.format, ratio=args.ratio,
                         plan=read_plan(args.plan) if args.plan else None, rho=args.rho,
                         rho_growth=args.rho_growth, rho_max=args.rho_max,
                         update_every=args.update_every))
    spec = BaselineSpec(args.model, args.dataset, checkpoint=resolve_checkpoint(args.checkpoint),
                        data_dir=args.data_dir, val_source=args.val_source, seed=args.seed,
                        baseline_epochs=args.baseline_epochs, input_size=args.input_size,
                        device=device)
    baseline, data = load_baseline(spec)
    row, result = compress(args.strategy, args.model, baseline, data, config)
    save_compressed(args.out, row, result, config=config, baseline=baseline, data=data,
                    dataset=args.dataset, checkpoint=spec.checkpoint)
    print(f"{row.model} {row.strategy}: params ratio {row.params_ratio:.3f}, FLOPs ratio "
          f"{row.flops_ratio:.3f}, test accuracy {row.accuracy_before:.4f} before, "
          f"{row.accuracy_after:.4f} right after, {row.fine_tune:.4f} fine-tuned "
          f"({row.test_images} images, {row.wall_s:.0f} s)")
    print(f"written to {args.out}")
    return 0


def resolve_checkpoint(value: str | None) -> str | None:
    """A checkpoint path as given, or looked up by file name in ``$AUTORANK_WEIGHTS_DIR``."""
    if value is None or os.path.exists(value):
        return value
    weights_dir = _env.weights_dir()
    if weights_dir and os.path.exists(os.path.join(weights_dir, value)):
        return os.path.join(weights_dir, value)
    raise UserError(f"checkpoint {value!r} not found (a file path, or a file name in "
                    f"$AUTORANK_WEIGHTS_DIR={weights_dir or '<unset>'})")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autorank")
    except PackageNotFoundError:  # a source tree that was not installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autorank",
        description="Find per-layer low-rank decompositions of a trained CNN.")
    parser.add_argument("--version", action="version", version=f"autorank {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name, (add_args, handler) in _COMMANDS.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except (ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"autorank {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autorank: interrupted", file=sys.stderr)
        return 130
