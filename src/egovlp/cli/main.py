"""The ``egovlp`` command. Every module in ``egovlp.cli`` with a ``register(subparsers)`` function adds a command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import egovlp
from egovlp.errors import EgovlpError
from egovlp.utils.logging import setup_logging

log = logging.getLogger("egovlp.cli")


def _command_modules() -> list[str]:
    import egovlp.cli as pkg

    return sorted(
        f"egovlp.cli.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.name not in ("main", "common")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egovlp", description=egovlp.__doc__)
    parser.add_argument("--version", action="version", version=f"egovlp {egovlp.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command line may read torchrun's environment; the library gets the rank passed in
    setup_logging(logging.DEBUG if args.verbose else logging.INFO, rank=int(os.environ.get("RANK", "0")))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (EgovlpError, OSError) as e:  # OSError: a file the user named cannot be read or written
        if args.verbose:
            raise
        # Errors from user input are reported in one line; --verbose shows the traceback.
        print(f"egovlp {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1


def one_line(error: BaseException) -> str:
    """The message of ``error``; for an error re-raised from a DataLoader worker (whose message carries the worker's
    traceback) the original message, the last line of that traceback without its ``module.Class:`` prefix."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    name = type(error).__name__
    for prefix in (f"{type(error).__module__}.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            return last[len(prefix) :]
    return last


if __name__ == "__main__":
    sys.exit(main())
