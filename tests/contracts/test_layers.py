"""The real tree keeps the layers: import-linter's contracts (pyproject.toml) and the AST
checks (tests/contracts/layers.py) find nothing; and the checks look at the right things."""

from __future__ import annotations

import ast

import pytest

from smartapp.config import REPO_ROOT
from tests.contracts import layers
from tests.contracts.helpers import contract, lint_imports, view_exceptions
from tests.contracts.source import imports, modules

pytestmark = pytest.mark.unit  # import-linter runs in a subprocess, in well under a second


def test_import_linter_keeps_every_contract():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_engine_imports_only_itself_and_its_data_libraries():
    assert layers.engine_violations(REPO_ROOT) == []


def test_only_the_demo_command_imports_the_sandbox_and_the_sandbox_only_the_server():
    assert layers.sandbox_violations(REPO_ROOT) == []


def test_the_demo_command_imports_the_sandbox_inside_itself():
    cli = next(m for m in modules(REPO_ROOT) if m.name == "smartapp.cli")
    places = {
        (i.module, i.function) for i in imports(cli) if i.module.startswith("smartapp.sandbox")
    }
    assert places == {("smartapp.sandbox", "demo")}


def test_views_import_no_database_models_but_the_known_exceptions():
    assert layers.view_violations(REPO_ROOT, view_exceptions()) == []


def test_every_known_view_exception_is_still_an_import():
    """A listed exception that a view no longer has is deleted from pyproject.toml (the
    import-linter run fails on it too)."""
    views = {m.name: m for m in modules(REPO_ROOT) if layers.is_view(m)}
    for view, models in view_exceptions():
        assert view in views, f"{view} is not a view module any more"
        imported = {i.module for i in imports(views[view])}
        assert any(name == models or name.startswith(models + ".") for name in imported), (
            f"{view} no longer imports {models}: delete the exception"
        )


def test_only_the_write_back_layer_writes_to_the_ehr():
    assert layers.fhir_write_violations(REPO_ROOT) == []


def test_the_write_check_sees_the_outbox_writes():
    """The check knows the names the outbox really calls (it would see them elsewhere)."""
    returns_client = layers._functions_returning_client(modules(REPO_ROOT))
    seen = {
        method
        for module in modules(REPO_ROOT, layers.WRITEBACK)
        for _, method in layers._writes(module.nodes, returns_client)
    }
    assert {"create", "update", "post_bundle"} <= seen


def test_every_write_method_of_the_fhir_client_is_checked():
    """A FhirClient method that sends POST, PUT, PATCH or DELETE is one the check knows."""
    checked = layers.CLIENT_ONLY_WRITES | layers.SHARED_NAME_WRITES
    client = next(m for m in modules(REPO_ROOT, layers.FHIR_CLIENT) if m.name.endswith(".client"))
    cls = next(
        n for n in ast.walk(client.tree) if isinstance(n, ast.ClassDef) and n.name == "FhirClient"
    )
    writers = {
        method.name
        for method in cls.body
        if isinstance(method, ast.FunctionDef) and not method.name.startswith("_")
        for call in ast.walk(method)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in layers.RAW_SENDS
        and call.args
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value in layers.WRITE_VERBS
    }
    assert writers, "no write method found on FhirClient"
    assert writers <= checked, f"unchecked write methods: {writers - checked}"


def test_the_contracts_name_every_package_of_the_app():
    """The forbidden lists of the engine and sandbox contracts cover every top-level module
    of smartapp/ (a new package is forbidden to them until a contract says otherwise)."""
    top_level = {
        m.name.split(".")[1]
        for m in modules(REPO_ROOT)
        if m.name.count(".") >= 1 and not m.name.startswith("smartapp.migrations")
    }
    for contract_id, own in (("engine-pure", "engine"), ("sandbox-apart", "sandbox")):
        forbidden = {
            n.split(".")[1]
            for n in contract(contract_id)["forbidden_modules"]
            if n.startswith("smartapp.")
        }
        assert top_level - {own} <= forbidden, (contract_id, top_level - {own} - forbidden)
