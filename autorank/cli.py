"""The ``autorank`` command: a thin shell over the public API.

Every subcommand parses its flags and calls one library function. Bad input (``UserError`` or
``ValueError``) prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from ._cli_args import (
    compress_args,
    export_args,
    inventory_args,
    report_args,
    search_args,
    search_flags,
    train_args,
)
from ._env import resolve_checkpoint
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


@command("inventory", inventory_args)
def _inventory(args: argparse.Namespace) -> int:
    """Print the compressible layers of a model with their cost and EVBMF ranks."""
    from ._inventory import inventory_table
    from .models import get_model

    model = get_model(args.model, num_classes=args.num_classes,
                      checkpoint=resolve_checkpoint(args.checkpoint), input_size=args.input_size)
    print(inventory_table(model, (1, 3, args.input_size, args.input_size), fmt=args.format))
    return 0


@command("models", lambda p: None)
def _models(args: argparse.Namespace) -> int:
    """List the registered models and their families (without importing torch)."""
    from ._catalog import MODELS

    for name, family in sorted(MODELS.items()):
        print(f"{name:20s} {family}")
    return 0


@command("methods", lambda p: None)
def _methods(args: argparse.Namespace) -> int:
    """List the decomposition methods and their rank tuples."""
    from .decompose import get_method, list_methods

    for name in list_methods():
        method = get_method(name)
        print(f"{name:12s} rank {method.rank_names}  {(method.__doc__ or '').splitlines()[0]}")
    return 0


def _latency_args(p: argparse.ArgumentParser) -> None:
    from ._latency_cli import add_args

    add_args(p)


@command("latency", _latency_args)
def _latency(args: argparse.Namespace) -> int:
    """A plan's latency against the dense model's: predicted, measured, and deployed."""
    from ._latency_cli import run

    return run(args)


@command("search", search_args)
def _search(args: argparse.Namespace) -> int:
    """Search per-layer decompositions and ranks; writes a run directory with the Pareto front."""
    from .config import make_config
    from .sweep import search
    from .sweep.report import front_text
    from .sweep.rundir import resume_config

    flags = search_flags(args)
    if "checkpoint" in flags:
        flags["checkpoint"] = resolve_checkpoint(flags["checkpoint"])
    cfg = resume_config(flags) if args.resume else make_config(**flags)
    result = search(cfg, resume=args.resume, progress=_print_progress,
                    baseline_progress=_baseline_printer(
                        "training a {model} baseline first (no --checkpoint)",
                        "the trials start after it"))
    print(file=sys.stderr)
    print(front_text(result.pareto(), result.baseline))
    print(f"run directory: {result.path}")
    return 0


def _print_progress(p: Any) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    if p.phase == "start":
        print(f"[{p.done}/{p.budget}] starting: {p.message}", file=sys.stderr, flush=True)
        return
    if p.phase == "final":
        # its own line (a finished bar stays above it): the search is not done until this is
        line = f"[{p.done}/{p.budget}] trials done; {p.message}, about {_clock(p.eta_s)}"
        print(("\n" if end == "\r" else "") + line, file=sys.stderr, flush=True)
        return
    best = ""
    if len(p.front):
        top = p.front.sort_values("params").iloc[0]
        best = f" | front {len(p.front)}, smallest {top['params_ratio']:.2f}x params at val " \
               f"{top['val_accuracy']:.3f}"
    rungs = f" | rungs {'/'.join(str(n) for n in p.per_rung)}" if p.per_rung else ""
    line = (f"[{p.done}/{p.budget}] {p.failed} failed{rungs} | {_clock(p.elapsed_s)} elapsed, "
            f"~{_clock(p.eta_s)} left{best}")
    print(line.ljust(100), end=end, file=sys.stderr, flush=True)


def _baseline_printer(what: str, then: str) -> Callable[[Any], None]:
    """Prints a baseline's training or transfer (a ``BaselineProgress``) on stderr, a line
    each: the start (``what`` it does, or the transfer's own words, how long, ``then``), then
    every epoch; on a terminal over tqdm's bar. A plain line (a ``str``) is printed as is."""

    def show(p: Any) -> None:
        if isinstance(p, str):
            line = p
        elif p.loss is None:
            doing = (f"resuming the {p.model} {p.kind} after epoch {p.resumed_from}/{p.epochs}"
                     if p.resumed_from else p.detail or what.format(model=p.model))
            line = (f"{doing}: {p.epochs - p.resumed_from} epochs on {p.dataset} "
                    f"({p.train_images} images, {p.device}), about {_clock(p.eta_s)}; {then}; "
                    "each epoch is saved, so the same command goes on from the last")
        else:
            val = "-" if p.val_accuracy is None else f"{p.val_accuracy:.3f}"
            line = (f"{p.kind} epoch {p.epoch}/{p.epochs}: loss {p.loss:.3f}, val accuracy {val}"
                    f" | {_clock(p.elapsed_s)} elapsed, ~{_clock(p.eta_s)} left")
        print(("\r\x1b[K" if sys.stderr.isatty() else "") + line, file=sys.stderr, flush=True)

    return show


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


@command("report", report_args)
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


@command("export", export_args)
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


@command("train", train_args)
def _train(args: argparse.Namespace) -> int:
    """Train a baseline (SGD momentum, cosine LR, crop+flip) and save its checkpoint."""
    from .baseline import train_baseline

    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    path = train_baseline(args.model, args.dataset, epochs=args.epochs, out=args.out,
                          seed=args.seed, data_dir=args.data_dir, lr=args.lr,
                          batch_size=args.batch_size, device=args.device, progress=True,
                          on_progress=_baseline_printer("training a {model} baseline",
                                                        "the checkpoint is written after it"),
                          input_size=args.input_size, num_classes=args.num_classes,
                          keep_epochs=args.keep_epochs)
    print(path)
    return 0


@command("compress", compress_args)
def _compress(args: argparse.Namespace) -> int:
    """Run one strategy end to end (vbmf-tucker2, musco, admm); writes model and results row."""
    from .baseline import finish_baseline, prepare_baseline
    from .bundle import check_out
    from .engine import FinetuneConfig, resolve_device
    from .strategies import (
        AdmmOptions,
        BaselineSpec,
        CompressConfig,
        MuscoOptions,
        compress,
        get_strategy,
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
                        device=device, num_classes=args.num_classes,
                        transfer_head_epochs=args.transfer_head_epochs,
                        transfer_epochs=args.transfer_epochs)
    show = _baseline_printer("training a {model} baseline first (no --checkpoint)",
                             "compression starts after it")
    loaded = finish_baseline(prepare_baseline(spec, on_progress=show), on_progress=show)
    baseline, data = loaded.model, loaded.data
    row, result = compress(args.strategy, args.model, baseline, data, config)
    about: dict[str, Any] = {"transfer": loaded.transfer} if loaded.transfer else {}
    save_compressed(args.out, row, result, config=config, baseline=baseline, data=data,
                    dataset=args.dataset, checkpoint=spec.checkpoint, **about)
    print(f"{row.model} {row.strategy}: params ratio {row.params_ratio:.3f}, FLOPs ratio "
          f"{row.flops_ratio:.3f}, test accuracy {row.accuracy_before:.4f} before, "
          f"{row.accuracy_after:.4f} right after, {row.fine_tune:.4f} fine-tuned "
          f"({row.test_images} images, {row.wall_s:.0f} s)")
    print(f"written to {args.out}")
    return 0


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
    # the same two flags after the command too (``autorank search ... --debug``); SUPPRESS
    # keeps a subcommand's default from overwriting one given before the command
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name, (add_args, handler) in _COMMANDS.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, parents=[common])
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input, 130 interrupted by Ctrl-C,
    143 by SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    with _sigterm_as_interrupt() as stopped_by:
        try:
            return int(args.handler(args))
        except (ValueError, FileNotFoundError) as err:
            if args.debug:
                raise
            print(f"autorank {args.command}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:
            if sys.stderr.isatty():
                print(file=sys.stderr)  # end the progress line
            print(_interrupted_line(err), file=sys.stderr)
            return 128 + (stopped_by[-1] if stopped_by else signal.SIGINT)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[list[int]]:
    """Let SIGTERM stop the command as Ctrl-C does (through whatever handles SIGINT now, so a
    search stops gracefully); yields the SIGTERMs received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_line(err: KeyboardInterrupt) -> str:
    """What an interrupted command prints last: for a search, what finished and how to resume."""
    # not imported here when no search ran (an interrupt may even have cut an import short)
    interrupt = sys.modules.get("autorank.sweep.interrupt")
    if interrupt is None or not isinstance(err, interrupt.SearchInterrupted):
        return "autorank: interrupted"
    again = ["autorank", "search", "--out", str(err.path), "--resume"]  # its flags are saved
    return (f"interrupted: {err.finished} of {err.budget} trials finished; resume with: "
            f"{shlex.join(again)}")
