"""Issue 10's size limits, kept: no module over 500 lines (generated migrations aside) and no
function over 80 lines anywhere in the app, the sandbox included."""

from __future__ import annotations

import ast

import pytest

from smartapp.config import REPO_ROOT

pytestmark = pytest.mark.unit

PACKAGE = REPO_ROOT / "smartapp"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def app_modules():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "migrations/versions" not in p.as_posix()]


def test_no_module_over_500_lines():
    long = {
        p.relative_to(REPO_ROOT).as_posix(): n
        for p in app_modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_80_lines():
    long = []
    for path in app_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} {size}")
    assert long == []
