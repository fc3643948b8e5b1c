"""The house rules of docs/architecture.md, checked on the source: its imports are parsed (ast), never run.

- each package imports none of the packages docs/architecture.md's table says it must not import;
- ``align/`` depends on torch alone (and ``errors``, ``dictconfig``); the shared leaf modules
  (``errors``, ``dictconfig``, ``optim``) import nothing of ours but ``errors``;
- only ``cli.py`` imports ``commands/``, and only ``commands/`` imports ``demo/``;
- no module imports another module's ``_private`` name;
- the packages import each other without a cycle.

Every lazy import (inside a function) and typing-only import counts: it is a dependency all
the same. The checks are plain functions over a source folder, so the tests below also run
them on a small made-up package to show that they catch what they are meant to.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rocket_vla"

# docs/architecture.md's package table, column "must not import".
MUST_NOT_IMPORT = {
    "align": {"envs", "train", "policies"},
    "teachers": {"policies", "envs", "train"},
    "policies": {"envs", "train"},
    "data": {"train", "envs"},
    "envs": {"train"},
    "train": {"envs"},
    "analysis": {"envs"},
    # what the demo and the study share: it imports neither
    "pipeline": {"study", "demo", "commands"},
}
# Modules at the top of the package that every package may import; they depend on no other.
LEAVES = {"errors", "dictconfig", "optim"}

# Known violations that other parts of issue 11 remove, as (importer, imported module).
# Delete an entry when the part that removes it is merged (test_allow_list_is_still_needed
# fails until then, so the list cannot go stale).
ALLOWED = {
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. rocket_vla.train.loop
    module: str  # the imported module (for `from m import n`: m, or m.n when n is a module)
    names: tuple[str, ...]  # the names taken from it (empty for `import m`)
    line: int
    top_level: bool  # at module level (not inside a function or class)

    @property
    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def _module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """``rocket_vla.train.loop`` -> ``train``; ``rocket_vla.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def collect_imports(root: Path) -> list[Import]:
    """Every import of the package at ``root`` (a folder named like the package)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = _module_name(root, path)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        top = {id(node) for node in tree.body}
        top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(importer, alias.name, (), node.lineno, id(node) in top))
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against the importer's package
                    base = importer.split(".")[: len(importer.split(".")) - node.level + is_pkg]
                    module = ".".join([*base, module] if module else base)
                names = tuple(alias.name for alias in node.names)
                for name in names:  # `from pkg import submodule` depends on the submodule
                    sub = root.parent.joinpath(*module.split("."), name)
                    is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
                    target = f"{module}.{name}" if is_module else module
                    found.append(Import(importer, target, (name,), node.lineno, id(node) in top))
    return found


def _ours(imports: list[Import], root: Path) -> list[Import]:
    return [i for i in imports if i.module.split(".")[0] == root.name]


def _allowed(i: Import, allowed: set[tuple[str, str]]) -> bool:
    return any(i.importer == a and (i.module == b or i.module.startswith(b + ".")) for a, b in allowed)


def direction_violations(imports: list[Import], root: Path, allowed: set[tuple[str, str]]) -> list[str]:
    out = []
    for i in _ours(imports, root):
        src, dst = package_of(i.importer), package_of(i.module)
        if _allowed(i, allowed):
            continue
        if dst == "commands" and src != "cli":  # a command is wiring: not even another command's
            out.append(f"{i.where}: only cli.py imports rocket_vla.commands ({i.module})")
        if src == dst:
            continue
        if dst in MUST_NOT_IMPORT.get(src, set()):
            out.append(f"{i.where}: {src}/ must not import {dst}/ ({i.module})")
        if src in LEAVES | {"align"} and dst not in {"errors", "dictconfig"} - {src}:
            out.append(f"{i.where}: {src} may import only rocket_vla.errors and .dictconfig, not {i.module}")
        if dst == "demo" and src not in ("commands", "cli"):
            out.append(f"{i.where}: only commands/ import rocket_vla.demo ({i.module})")
    return list(dict.fromkeys(out))  # one line per import statement, not per name


def private_violations(imports: list[Import], root: Path, allowed: set[tuple[str, str]]) -> list[str]:
    """``from other_module import _name``: a private helper used outside its module."""
    return [f"{i.where}: imports private {i.names[0]} from {i.module}"
            for i in _ours(imports, root)
            if i.names and i.names[0].startswith("_") and not i.names[0].startswith("__")
            and i.module != i.importer and not _allowed(i, allowed)]


def package_cycles(imports: list[Import], root: Path, allowed: set[tuple[str, str]]) -> list[list[str]]:
    """Cycles of the package graph (each as a path that returns to its start)."""
    graph: dict[str, set[str]] = {}
    for i in _ours(imports, root):
        src, dst = package_of(i.importer), package_of(i.module)
        if src != dst and not _allowed(i, allowed):
            graph.setdefault(src, set()).add(dst)
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return cycles


def foreign_top_level(imports: list[Import], allowed_third_party: set[str]) -> list[str]:
    """Module-level imports of third-party packages other than ``allowed_third_party``."""
    return [f"{i.where}: imports {i.module} at module level" for i in imports
            if i.top_level and i.module.split(".")[0] not in allowed_third_party
            and i.module.split(".")[0] not in sys.stdlib_module_names
            and i.module.split(".")[0] != "__future__"]


# ----------------------------------------------------------------------------- the real tree
@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return collect_imports(SRC)


def test_the_scan_sees_the_tree(imports: list[Import]) -> None:
    """The checks below are only as good as the scan: it finds known module- and
    function-level imports and resolves `from package import submodule`."""
    have = {(i.importer, i.module) for i in imports}
    assert ("rocket_vla.train.loop", "rocket_vla.align") in have
    assert ("rocket_vla.train.loop", "rocket_vla.teachers.build") in have  # inside a method
    assert ("rocket_vla.train.loop", "rocket_vla.train.checkpoint") in have  # from train import checkpoint


def test_packages_import_only_in_the_allowed_directions(imports: list[Import]) -> None:
    assert direction_violations(imports, SRC, ALLOWED) == []


def test_no_private_name_is_imported_from_another_module(imports: list[Import]) -> None:
    assert private_violations(imports, SRC, ALLOWED) == []


def test_no_cycle_between_packages(imports: list[Import]) -> None:
    assert package_cycles(imports, SRC, ALLOWED) == []


def test_align_depends_on_torch_alone(imports: list[Import]) -> None:
    """``pip install rocket-vla`` and ``import rocket_vla.align`` need nothing but torch
    (scipy is imported lazily, by the one function that needs it)."""
    align = [i for i in imports if package_of(i.importer) == "align"]
    assert foreign_top_level(align, {"torch", "rocket_vla"}) == []


def test_allow_list_is_still_needed(imports: list[Import]) -> None:
    """Each entry excuses an import that still exists: delete entries as their parts land."""
    stale = [entry for entry in sorted(ALLOWED)
             if not any(_allowed(i, {entry}) for i in imports)]
    assert stale == [], f"delete these entries of ALLOWED: {stale}"


# ----------------------------------------------------------------------------- the checks catch
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "rocket_vla"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_catch_each_kind_of_violation(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "cli.py": "import rocket_vla.commands.run\n",
        "commands/__init__.py": "",
        "commands/run.py": "from rocket_vla.demo import go\n",
        "commands/other.py": "from rocket_vla.commands.run import go\n",
        "demo/__init__.py": "def go(): ...\n",
        "align/__init__.py": "import numpy\nfrom rocket_vla.errors import RocketError\n",
        "align/taps.py": "def f():\n    import scipy\n    from rocket_vla.train import loop\n",
        "train/__init__.py": "",
        "train/loop.py": "from rocket_vla.align.taps import _hidden\nfrom .. import errors\n",
        "teachers/__init__.py": "from rocket_vla.commands import run\nfrom rocket_vla.analysis import x\n",
        "analysis/__init__.py": "from rocket_vla.teachers import y\nfrom . import z\n",
        "analysis/z.py": "",
    })
    found = collect_imports(root)
    assert ("rocket_vla.train.loop", "rocket_vla.errors") in {(i.importer, i.module) for i in found}
    directions = direction_violations(found, root, set())
    assert any("align/ must not import train/" in v for v in directions)
    assert any("rocket_vla.teachers:1: only cli.py imports" in v for v in directions)
    assert any(v.startswith("rocket_vla.commands.other:1: only cli.py") for v in directions)
    assert not any(v.startswith(("rocket_vla.cli:", "rocket_vla.commands.run:")) for v in directions)
    assert private_violations(found, root, set()) == [
        "rocket_vla.train.loop:1: imports private _hidden from rocket_vla.align.taps"]
    cycles = package_cycles(found, root, set())
    assert ["align", "train", "align"] in cycles and ["analysis", "teachers", "analysis"] in cycles
    align = [i for i in found if package_of(i.importer) == "align"]
    assert foreign_top_level(align, {"torch", "rocket_vla"}) == [
        "rocket_vla.align:1: imports numpy at module level"]  # the lazy scipy is fine
    # an allow-list entry silences exactly its own import
    allowed = {("rocket_vla.align.taps", "rocket_vla.train")}
    assert not any("align/ must not" in v for v in direction_violations(found, root, allowed))
    assert ["align", "train", "align"] not in package_cycles(found, root, allowed)
