"""The design's boundaries, checked on the source: the engine is pure, the app never imports the
sandbox, and only the outbox sends writes to an EHR."""

from __future__ import annotations

import ast
from pathlib import Path

from smartapp.config import REPO_ROOT

PACKAGE = REPO_ROOT / "smartapp"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_engine_imports_no_web_http_database_or_sandbox():
    forbidden = (
        "flask",
        "requests",
        "httpx",
        "urllib.request",
        "sqlalchemy",
        "werkzeug",
        "smartapp.sandbox",
        "smartapp.fhir",
        "smartapp.db",
        "smartapp.web",
    )
    files = python_files(PACKAGE / "engine")
    assert files
    for path in files:
        for name in imported_modules(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_only_the_demo_command_imports_the_sandbox():
    for path in python_files(PACKAGE):
        if "sandbox" in path.relative_to(PACKAGE).parts:
            continue
        importers = {n for n in imported_modules(path) if n.startswith("smartapp.sandbox")}
        if path.relative_to(PACKAGE) == Path("cli.py"):
            source = path.read_text()
            # Imported inside the demo command only, never at module level.
            module_level = {
                n
                for n in ast.parse(source).body
                if isinstance(n, ast.ImportFrom)
                and n.module
                and n.module.startswith("smartapp.sandbox")
            }
            assert not module_level
            continue
        assert not importers, f"{path.name} imports the sandbox"


def test_sandbox_imports_nothing_of_the_app_but_the_server_helper():
    for path in python_files(PACKAGE / "sandbox"):
        for name in imported_modules(path):
            if name.startswith("smartapp") and not name.startswith("smartapp.sandbox"):
                assert name == "smartapp.web.serving", f"{path.name} imports {name}"


def test_only_the_outbox_posts_bundles_to_an_ehr():
    callers = [
        p.relative_to(PACKAGE).as_posix()
        for p in python_files(PACKAGE)
        if "sandbox" not in p.parts
        and "post_bundle(" in p.read_text()
        and p.relative_to(PACKAGE).as_posix() not in ("fhir/client.py",)
    ]
    assert callers == ["writeback/outbox.py"]
