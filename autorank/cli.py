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


def resolve_checkpoint(value: str | None) -> str | None:
    """A checkpoint path as given, or looked up by file name in ``$AUTORANK_WEIGHTS_DIR``."""
    if value is None or os.path.exists(value):
        return value
    weights_dir = os.environ.get("AUTORANK_WEIGHTS_DIR")
    if weights_dir and os.path.exists(os.path.join(weights_dir, value)):
        return os.path.join(weights_dir, value)
    from .errors import UserError

    raise UserError(f"checkpoint {value!r} not found (a file path, or a file name in "
                    f"$AUTORANK_WEIGHTS_DIR={weights_dir or '<unset>'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autorank",
        description="Find per-layer low-rank decompositions of a trained CNN.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
