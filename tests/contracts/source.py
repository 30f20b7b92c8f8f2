"""Reading a copy of `smartapp/` as source: its modules and what each one imports, with
`from smartapp import x` and relative imports resolved to the module they name, and the
function each import sits in (the demo command imports the sandbox inside itself only)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "smartapp"


@dataclass(frozen=True)
class Module:
    """One file of the package: its dotted name and its parsed source."""

    root: Path  # the folder holding smartapp/
    path: Path
    name: str
    tree: ast.Module
    nodes: tuple[ast.AST, ...]  # every node of the tree (ast.walk), walked once

    @property
    def relative(self) -> str:
        """The file as the messages name it: smartapp/engine/chart.py."""
        return self.path.relative_to(self.root).as_posix()

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Imported:
    """One imported module, where it is imported and inside which function (None: at module
    level or in a class body)."""

    module: str
    line: int
    function: str | None


def modules(root: Path, under: str = PACKAGE) -> Iterator[Module]:
    """Every .py file of the package folder `under` (dotted) below `root`, parsed."""
    folder = root.joinpath(*under.split("."))
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        tree, nodes = _parsed(path.read_text(encoding="utf-8"))
        yield Module(root, path, ".".join(parts), tree, nodes)


# Parsed sources by their text: a copy of the package parses only the files it changed.
_PARSED: dict[str, tuple[ast.Module, tuple[ast.AST, ...]]] = {}


def _parsed(text: str) -> tuple[ast.Module, tuple[ast.AST, ...]]:
    if text not in _PARSED:
        tree = ast.parse(text)
        _PARSED[text] = (tree, tuple(ast.walk(tree)))
    return _PARSED[text]


def is_module(root: Path, dotted: str) -> bool:
    """Whether `dotted` names a module or package of the copy at `root`."""
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(module: Module) -> list[Imported]:
    """What `module` imports, each name resolved to the module it comes from."""
    found: list[Imported] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend(Imported(a.name, child.lineno, function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.extend(
                    Imported(name, child.lineno, function)
                    for name in _from_import_targets(module, child)
                )
            visit(child, function)

    visit(module.tree, None)
    return found


def _from_import_targets(module: Module, node: ast.ImportFrom) -> list[str]:
    """`from X import a, b`: X.a where it is a module of the copy (a submodule imported by
    name), else X itself; relative X taken from the importing module's package."""
    base = _absolute_base(module, node)
    targets: dict[str, None] = {}  # in order, once each
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        targets[candidate if is_module(module.root, candidate) else base] = None
    return list(targets)


def _absolute_base(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def within(name: str, package: str) -> bool:
    """Whether the dotted `name` is `package` or below it."""
    return name == package or name.startswith(package + ".")
