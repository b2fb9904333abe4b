"""``python -m unlearnkit``: one command line for every capability (defaults to the tiny world).

This package sits above the capabilities and the tiny world, like a host adapter.

Each capability module exposes ``add_parser(subparsers)``, registering a subcommand whose
parser has ``func`` set to a callable taking the parsed namespace and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)

# (module relative to this package, attribute) of every subcommand's add_parser
SUBCOMMANDS: tuple[str, ...] = (
    ".demo", ".compose", ".erase", ".tinyworld", ".unlearn", ".install_webui",
)


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a bad input as one line on stderr with exit code 2 instead of a traceback."""

    def func(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return func


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unlearnkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        importlib.import_module(module, __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args) or 0)
