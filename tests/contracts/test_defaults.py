"""One `Defaults` (smartapp/config.py) lists every setting the app reads: the keys read from
a Flask config anywhere in smartapp/ (the sandbox has its own settings) are each found there,
and where a module falls back to its own figure, that figure is the one Defaults lists."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from smartapp.config import REPO_ROOT, Defaults
from smartapp.rulestools.setting import RETIRED_SETTING
from tests.contracts.source import Module, modules, within

pytestmark = pytest.mark.unit

SANDBOX = "smartapp.sandbox"
# Read only to refuse it with a message naming its successor (RULES_DIR).
RETIRED = frozenset({RETIRED_SETTING})
CONFIG_NAMES = frozenset({"config"})


@dataclass(frozen=True)
class SettingRead:
    key: str
    where: str
    fallback: ast.expr | None  # config.get(KEY, FALLBACK) or config.get(KEY) or FALLBACK
    module: Module


def is_config(node: ast.expr) -> bool:
    """`config`, `app.config`, `current_app.config`, `self.app.config`, ..."""
    if isinstance(node, ast.Name):
        return node.id in CONFIG_NAMES
    return isinstance(node, ast.Attribute) and node.attr == "config"


def module_strings(module: Module) -> dict[str, str]:
    """The module's NAME = "text" constants (keys are sometimes named)."""
    found = {}
    for node in module.tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def key_of(node: ast.expr, strings: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return strings.get(node.id)
    return None


def setting_reads(module: Module) -> Iterator[SettingRead]:
    strings = module_strings(module)
    or_fallbacks = {
        id(node.values[0]): node.values[1]
        for node in ast.walk(module.tree)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2
    }
    for node in ast.walk(module.tree):
        key, fallback = None, None
        if isinstance(node, ast.Subscript) and is_config(node.value):
            key = key_of(node.slice, strings)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault")
            and is_config(node.func.value)
            and node.args
        ):
            key = key_of(node.args[0], strings)
            fallback = node.args[1] if len(node.args) > 1 else or_fallbacks.get(id(node))
        if key:
            yield SettingRead(key, f"{module.relative}:{node.lineno}", fallback, module)


def is_module_figure(node: ast.expr, namespace: dict) -> bool:
    """A literal, or a name (dotted) the module holds: not a local of the function."""
    if isinstance(node, ast.Constant):
        return True
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in namespace


def app_setting_reads() -> list[SettingRead]:
    return [
        read
        for module in modules(REPO_ROOT)
        if not within(module.name, SANDBOX)
        for read in setting_reads(module)
    ]


def test_the_scan_finds_the_settings_read_outside_config_py():
    keys = {read.key for read in app_setting_reads()}
    assert {
        "AUDIT_SIGNING_KEY",
        "AUDIT_CHECKPOINT_EVERY",
        "DASHBOARD_MIN_CELL",
        "CONSOLE_PAGE_SIZE",
        "CHART_MAX_BYTES",
        "PUBLIC_URL",
    } <= keys


def test_every_setting_the_app_reads_is_listed_in_defaults():
    listed = {name for name in vars(Defaults) if name.isupper()}
    missing = {
        read.where: read.key
        for read in app_setting_reads()
        if read.key not in listed and read.key not in RETIRED
    }
    assert not missing, f"read but not in smartapp/config.py Defaults: {missing}"


def test_a_module_falls_back_to_the_figure_defaults_lists():
    """`config.get("X", FIGURE)` and `config.get("X") or FIGURE` use what Defaults says."""
    checked = 0
    for read in app_setting_reads():
        if read.fallback is None or read.key in RETIRED:
            continue
        namespace = vars(importlib.import_module(read.module.name))
        if not is_module_figure(read.fallback, namespace):
            continue  # a value worked out in the function (e.g. a path in the instance folder)
        figure = eval(compile(ast.Expression(read.fallback), read.where, "eval"), namespace)
        listed = getattr(Defaults, read.key)
        # "" or None: a guard for a setting set to None, not another default.
        assert figure == listed or figure in ("", None), (
            f"{read.where}: falls back to {figure!r} for {read.key}; Defaults says {listed!r}"
        )
        checked += 1
    assert checked >= 4


def test_every_setting_in_defaults_says_what_it_is():
    """Each setting of Defaults has a comment above it (one comment may lead a group)."""
    source = (REPO_ROOT / "smartapp" / "config.py").read_text().splitlines()
    tree = ast.parse("\n".join(source))
    defaults = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Defaults")
    settings = [n for n in defaults.body if isinstance(n, ast.AnnAssign)]
    previous_end = None
    for setting in settings:
        above = source[setting.lineno - 2].strip()
        in_group = previous_end == setting.lineno - 1
        assert above.startswith("#") or in_group, f"Defaults.{ast.unparse(setting.target)}"
        previous_end = setting.end_lineno
