"""The `rocket` command: thin wiring from argv to the library, no logic of its own.

Each sub-command lives in a module of :mod:`rocket_vla.commands` exposing
``register(subparsers)``; the module is imported lazily so that ``rocket --version``
and the core commands stay fast and need only torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rocket_vla import __version__
from rocket_vla.errors import RocketError

# Sub-command modules under rocket_vla.commands, in the order `rocket --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "select_layers", "collect", "eval", "train", "train_teacher", "cache_teacher", "profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rocket",
        description="ROCKET multi-layer alignment for vision-language-action models.",
    )
    parser.add_argument("--version", action="version", version=f"rocket-vla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"rocket_vla.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except RocketError as err:
        print(f"rocket {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
