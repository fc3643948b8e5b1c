"""Command lines generated from the config dataclasses, so every default lives in one place.

Why jsonargparse: it builds the flags straight from a dataclass's fields, types and
attribute docstrings (no hand-copied defaults or help), reads ``--config FILE.yaml``
natively (several files compose, later ones win), takes dotted overrides for nested
configs (``--augment.enabled false``), validates types before anything runs, and prints
the full resolved configuration (``--print_config``) as YAML that ``--config`` reads back.
It is maintained and used the same way by Lightning's CLI. (tyro has no config files;
draccus, LeRobot's choice, is a smaller project with fewer releases.)

Shipped configurations live in ``rocket_vla/configs/*.yaml``; ``--config NAME`` finds one
by name, ``--config PATH`` reads any file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from rocket_vla.errors import RocketError

CONFIG_DIR = Path(__file__).parent / "configs"

T = TypeVar("T")


def shipped_configs() -> list[str]:
    """Names of the configurations shipped with the package (``--config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(value: str) -> str:
    """A ``--config`` value as a file path: an existing file, or the name of a shipped one."""
    if Path(value).is_file():
        return value
    shipped = CONFIG_DIR / f"{Path(value).stem}.yaml"
    if shipped.is_file() and not Path(value).parent.parts:
        return str(shipped)
    raise RocketError(
        f"config {value!r} is neither a file nor a shipped config; pass a YAML path or one "
        f"of: {', '.join(shipped_configs())}."
    )


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}


def _field_hints(cls: type, prefix: str = "") -> dict[str, Any]:
    """The type hint of every option a dataclass generates, by flag name: the fields of a
    nested dataclass under their dotted names (``train.steps``)."""
    import typing

    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(_field_hints(hint, f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[prefix + f.name] = hint
    return out


def _typed_options(*classes: type | None) -> tuple[set[str], set[str]]:
    """The boolean options and the list options of the dataclasses' flags, as ``--name``
    strings (read from the dataclasses' own type hints)."""
    import types
    from typing import Union, get_args, get_origin

    switches: set[str] = set()
    lists: set[str] = set()
    for cls in classes:
        for name, hint in ({} if cls is None else _field_hints(cls)).items():
            if hint is bool:
                switches.add(f"--{name}")
            kinds = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
            if any(get_origin(k) is list for k in kinds):
                lists.add(f"--{name}")
    return switches, lists


def _flow_list(words: Sequence[str]) -> str:
    """``["0,cook", "4"]`` -> ``'[0, "cook", 4]'``: numbers stay numbers, the rest are strings."""
    import json

    items = [item for word in words for item in word.split(",") if item]
    return "[" + ", ".join(i if _is_number(i) else json.dumps(i) for i in items) + "]"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _normalise_argv(argv: Sequence[str], switches: set[str], lists: set[str]) -> list[str]:
    """Rewrite what argparse users type into what jsonargparse reads: ``--config NAME`` to
    the shipped file's path, a bare boolean switch (``--overwrite``) to ``--overwrite true``,
    and a list given as words (``--tasks 0,1`` or ``--merge a b``) to a YAML list."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--config" and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 2
            continue
        if arg in switches and (i + 1 == len(args) or args[i + 1].lower() not in _BOOL_WORDS):
            out += [arg, "true"]
            i += 1
            continue
        value = args[i + 1] if i + 1 < len(args) else "--"
        if arg in lists and not value.startswith(("[", "--")) and value.lower() not in ("null", "none"):
            end = i + 1
            while end < len(args) and not args[end].startswith("--"):
                end += 1
            out += [arg, _flow_list(args[i + 1:end])]
            i = end
            continue
        if arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
        i += 1
    return out


def build_parser(config_cls: type, prog: str, description: str, options: type | None = None,
                 presets: dict[str, dict[str, Any]] | None = None, shipped: bool = False) -> Any:
    """A parser whose flags are ``config_cls``'s fields, plus ``--config`` and, from a second
    dataclass ``options``, the command's own switches (modes, progress bars) that are no
    part of the configuration.

    ``presets`` (name -> field values) adds ``--preset NAME``: that preset's values become
    the defaults, which ``--config`` files and flags then override. ``shipped``: the help of
    ``--config`` lists the shipped (training) configurations."""
    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False,
                            formatter_class=DefaultHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=tuple(presets), default=next(iter(presets)),
                            help="named set of defaults that --config files and flags override")
    names = f" (or shipped config name: {', '.join(shipped_configs())})" if shipped else ""
    parser.add_argument("--config", action=ActionConfigFile,
                        help=f"YAML file{names}; repeat to compose, flags override")
    parser.add_class_arguments(config_cls, None, as_group=False)
    if options is not None:
        parser.add_class_arguments(options, None, as_group=False)
    return parser


def _preset_name(argv: Sequence[str], names: Sequence[str]) -> str:
    """The last ``--preset NAME`` (or ``--preset=NAME``) of ``argv``, else the first preset."""
    chosen = names[0]
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            chosen = argv[i + 1]
        elif arg.startswith("--preset="):
            chosen = arg.split("=", 1)[1]
    if chosen not in names:
        raise RocketError(f"unknown preset {chosen!r}; choose one of {', '.join(names)}.")
    return chosen


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]


def dotted(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested values under dotted keys, as the flags name them: ``{"train": {"steps": 6}}``
    -> ``{"train.steps": 6}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def parse_config(parser: Any, config_cls: type[T], argv: Sequence[str], options: type | None = None,
                 presets: dict[str, dict[str, Any]] | None = None) -> tuple[T, Any]:
    """Parse ``argv`` into a ``config_cls`` instance and an ``options`` instance (None
    without ``options``)."""
    from argparse import ArgumentError

    if presets:  # every field some preset sets gets this preset's value or the dataclass's
        name = _preset_name(argv, list(presets))
        base = dotted(dataclasses.asdict(config_cls()))
        chosen = dotted(presets[name])
        keys = {k for values in presets.values() for k in dotted(values)}
        parser.set_defaults(**{k: chosen.get(k, base[k]) for k in keys})
    try:
        ns = parser.parse_args(_normalise_argv(argv, *_typed_options(config_cls, options)))
    except ArgumentError as err:  # one line naming the fix, like every other user error
        detail = " ".join(str(err).split())
        raise RocketError(f"{detail}; see `{parser.prog} --help`.") from None
    values = ns.as_dict()
    config = _build(config_cls, {k: v for k, v in values.items() if k in _defaults(config_cls)})
    extra = None if options is None else _build(options, {k: v for k, v in values.items()
                                                          if k in _defaults(options)})
    return config, extra


def parse_command(argv: Sequence[str], config_cls: type[T], prog: str, description: str,
                  options: type | None = None, presets: dict[str, dict[str, Any]] | None = None,
                  shipped: bool = False) -> tuple[T, Any]:
    """:func:`build_parser` + :func:`parse_config`: what a command's ``main(argv)`` calls.
    ``presets``: by default the config class's own ``PRESETS``, if it has them."""
    presets = getattr(config_cls, "PRESETS", None) if presets is None else presets
    parser = build_parser(config_cls, prog, description, options, presets, shipped)
    return parse_config(parser, config_cls, argv, options, presets)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """Instantiate a (possibly nested) dataclass from the parsed plain values."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _build(type(default), value)
        elif isinstance(value, list) and isinstance(f.default, tuple):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_kind(argv: Sequence[str], kinds: dict[str, type], prog: str) -> tuple[str, Any]:
    """``KIND --flags ...`` -> ``(KIND, kinds[KIND] parsed from the flags)``: one generated
    command line per kind (``rocket profile cka ...``), each described by its docstring."""
    summaries = {k: (cls.__doc__ or "").strip().splitlines()[0] for k, cls in kinds.items()}
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(kinds)}}} [--help] [FLAGS]\n")
        print("\n".join(f"  {k:<12} {text}" for k, text in summaries.items()))
        raise SystemExit(0)
    if not argv or argv[0] not in kinds:
        got = f"unknown kind {argv[0]!r}" if argv else "no kind was given"
        raise RocketError(f"{got}; name one of {', '.join(kinds)} first, e.g. `{prog} {next(iter(kinds))} "
                          "--help`.")
    kind, cls = argv[0], kinds[argv[0]]
    config, _ = parse_command(argv[1:], cls, f"{prog} {kind}", summaries[kind])
    return kind, config


def dump_yaml(config: Any) -> str:
    """A config dataclass as YAML that ``--config`` reads back."""
    import yaml

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return yaml.safe_dump(plain(dataclasses.asdict(config)), sort_keys=False)


def format_pairs(student: list[int], teacher: list[int], style: str) -> str:
    """Pairs as flags for `rocket train`, or as YAML that `rocket train --config` reads."""
    s, t = ", ".join(map(str, student)), ", ".join(map(str, teacher))
    if style == "yaml":
        return f"student_layers: [{s}]\nteacher_layers: [{t}]\n"
    return f"--student_layers [{s.replace(' ', '')}] --teacher_layers [{t.replace(' ', '')}]"
