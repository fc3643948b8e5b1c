"""The `rocket` command: thin wiring from argv to the library, no logic of its own.

Each sub-command lives in a module of :mod:`rocket_vla.commands` that exposes ``HELP``
(its line in ``rocket --help``) and ``main(argv)``; its flags are generated from a config
dataclass (:mod:`rocket_vla.config_cli`). Modules are imported lazily, only the one that
runs, so that ``rocket --version`` and the core commands stay fast and need only torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from rocket_vla import __version__
from rocket_vla.errors import RocketError

#: sub-command -> module under rocket_vla.commands, in the order `rocket --help` lists them
COMMANDS: dict[str, str] = {
    "demo": "demo", "select-layers": "select_layers", "collect": "collect", "eval": "eval",
    "train": "train", "train-teacher": "train_teacher", "cache-teacher": "cache_teacher",
    "profile": "profile", "reproduce": "reproduce", "check-env": "check_env",
}


def build_parser() -> argparse.ArgumentParser:
    """``rocket --help`` / ``--version``: the list of commands (each parses its own flags)."""
    parser = argparse.ArgumentParser(
        prog="rocket",
        description="ROCKET multi-layer alignment for vision-language-action models. "
        "`rocket COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"rocket-vla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub.add_parser(name, help=importlib.import_module(f"rocket_vla.commands.{module}").HELP,
                       add_help=False)
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
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f"rocket_vla.commands.{COMMANDS[argv[0]]}")
        return _guarded(argv[0], lambda: module.main(argv[1:]))
    parser = build_parser()
    parser.parse_args(argv)  # --help, --version, or an unknown command (argparse's message)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
