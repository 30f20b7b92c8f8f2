"""Running the layer checks on the real tree or on a copy of `smartapp/` with a planted
violation: import-linter (its contracts are in pyproject.toml) and the AST checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from smartapp.config import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"
VIEWS_CONTRACT = "views-no-models"


def lint_imports_command() -> list[str]:
    """import-linter from the virtual environment running the tests."""
    script = Path(sys.executable).parent / "lint-imports"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """pyproject.toml's contracts checked on the `smartapp/` inside `root` (which comes first
    on the path, before the installed checkout)."""
    env = os.environ | {"PYTHONPATH": str(root)}
    return subprocess.run(
        [*lint_imports_command(), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contract(contract_id: str) -> dict:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["id"] == contract_id)


def view_exceptions() -> list[tuple[str, str]]:
    """The known exceptions of the views contract, (view module, models module), as its
    ignore_imports in pyproject.toml lists them: the AST check honours the same ones."""
    pairs = []
    for line in contract(VIEWS_CONTRACT).get("ignore_imports", []):
        importer, _, imported = line.partition("->")
        pairs.append((importer.strip(), imported.strip()))
    return pairs


def copy_package(tmp_path: Path) -> Path:
    """A copy of smartapp/ (Python files only) in a folder of its own; returns that folder."""
    root = tmp_path / "copy"
    shutil.copytree(
        REPO_ROOT / "smartapp",
        root / "smartapp",
        ignore=shutil.ignore_patterns("__pycache__", "static", "templates", "*.mako"),
    )
    return root


def plant(root: Path, relative: str, source: str) -> Path:
    """Add `source` to the copy's file `relative` (created when missing)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.read_text() if path.exists() else ""
    path.write_text(before + "\n" + source.strip() + "\n")
    return path
