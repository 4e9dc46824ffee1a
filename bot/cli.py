"""The ``loraops`` command line (also ``python -m bot``).

Each area of the code contributes its subcommands through a ``register(subparsers)`` function in its
own module (listed in ``_COMMAND_MODULES``); those modules keep heavy imports (insightface, discord,
Pillow) inside their handlers so ``loraops --help`` stays fast. A handler returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order here is the order in ``loraops --help``.
_COMMAND_MODULES = (
    "bot.cli_bot",  # run, migrate, sync
    "bot.faces.cli",  # curate, score, faces fetch-models
    "bot.review.cli",  # grid
    "bot.training.cli",  # render-config, presets
    "worker.cli",  # worker
    "sim.cli",  # sandbox
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraops", description=__doc__.splitlines()[0] if __doc__ else None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
