"""The `rocket` command: thin wiring from argv to the library, no logic of its own.

Each sub-command lives in a module of :mod:`rocket_vla.commands`. Most expose
``register(subparsers)`` (argparse); those whose flags are generated from a config
dataclass (:mod:`rocket_vla.config_cli`) expose ``HELP`` and ``main(argv)`` and get the
rest of the command line. Modules are imported lazily so that ``rocket --version`` and
the core commands stay fast and need only torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from rocket_vla import __version__
from rocket_vla.errors import RocketError

# Sub-command modules under rocket_vla.commands, in the order `rocket --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "select_layers", "collect", "eval", "train", "train_teacher", "cache_teacher", "profile",
)
#: commands whose flags are generated from their config dataclass: name -> module
GENERATED_COMMANDS: dict[str, str] = {
    "train": "train", "eval": "eval", "collect": "collect", "demo": "demo",
    "cache-teacher": "cache_teacher", "select-layers": "select_layers", "profile": "profile",
    "train-teacher": "train_teacher",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rocket",
        description="ROCKET multi-layer alignment for vision-language-action models.",
    )
    parser.add_argument("--version", action="version", version=f"rocket-vla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"rocket_vla.commands.{name}")
        if name in GENERATED_COMMANDS.values():
            sub.add_parser(name.replace("_", "-"), help=module.HELP, add_help=False)
        else:
            module.register(sub)
    return parser


def _guarded(command: str, fn: Callable[[], int | None]) -> int:
    """Run a command, printing a user error (:class:`RocketError`) as one line."""
    try:
        result = fn()
    except RocketError as err:
        print(f"rocket {command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in GENERATED_COMMANDS:
        module = importlib.import_module(f"rocket_vla.commands.{GENERATED_COMMANDS[argv[0]]}")
        return _guarded(argv[0], lambda: module.main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _guarded(args.command, lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
