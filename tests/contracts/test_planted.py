"""Each contract fails when broken: a violation planted in a copy of smartapp/ makes
import-linter (pyproject.toml's contracts) or the AST check (tests/contracts/layers.py), or
both, fail and name it. The unchanged copy passes both, so the failures are the plants'."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contracts import layers
from tests.contracts.helpers import copy_package, lint_imports, plant, view_exceptions

pytestmark = pytest.mark.unit  # import-linter runs in a subprocess, in well under a second


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    return copy_package(tmp_path)


def assert_lint_breaks(root: Path, *expected: str) -> None:
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stdout, result.stdout


def broken(package: str, imported: str) -> tuple[str, str]:
    """What import-linter prints for the plant `<package>.planted` importing `imported`."""
    return (
        f"{package} is not allowed to import {imported}",
        f"{package}.planted -> {imported} (l.2)",
    )


def assert_lint_keeps(root: Path) -> None:
    result = lint_imports(root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unchanged_copy_keeps_every_contract(copy: Path):
    assert_lint_keeps(copy)
    assert layers.all_violations(copy, view_exceptions()) == []


# -- the engine ------------------------------------------------------------------------------


def test_engine_importing_the_fhir_client_and_the_database_fails(copy: Path):
    plant(copy, "smartapp/engine/planted.py", "from smartapp import fhir, db")
    assert_lint_breaks(
        copy,
        *broken("smartapp.engine", "smartapp.fhir"),
        *broken("smartapp.engine", "smartapp.db"),
    )
    assert layers.engine_violations(copy) == [
        "smartapp/engine/planted.py:2: the engine imports smartapp.fhir",
        "smartapp/engine/planted.py:2: the engine imports smartapp.db",
    ]


def test_engine_importing_the_web_layer_relatively_fails(copy: Path):
    plant(copy, "smartapp/engine/planted.py", "from ..web import check_csrf")
    assert_lint_breaks(copy, *broken("smartapp.engine", "smartapp.web"))
    assert layers.engine_violations(copy) == [
        "smartapp/engine/planted.py:2: the engine imports smartapp.web"
    ]


def test_engine_importing_the_sandbox_fails(copy: Path):
    plant(copy, "smartapp/engine/planted.py", "from smartapp import sandbox")
    assert_lint_breaks(copy, *broken("smartapp.engine", "smartapp.sandbox"))
    assert layers.engine_violations(copy) == [
        "smartapp/engine/planted.py:2: the engine imports smartapp.sandbox"
    ]


@pytest.mark.parametrize("statement", ["import requests", "from flask import g"])
def test_engine_importing_a_web_library_fails(copy: Path, statement: str):
    plant(copy, "smartapp/engine/planted.py", statement)
    library = statement.split()[1]
    assert_lint_breaks(copy, *broken("smartapp.engine", library))
    assert layers.engine_violations(copy) == [
        f"smartapp/engine/planted.py:2: the engine imports {library}"
    ]


@pytest.mark.parametrize("statement", ["import socket", "import urllib.request", "import httpx"])
def test_engine_reaching_outside_the_process_fails_the_allow_list(copy: Path, statement: str):
    """What no forbidden list names: the AST check allows only what the engine may use."""
    plant(copy, "smartapp/engine/planted.py", statement)
    assert layers.engine_violations(copy) == [
        f"smartapp/engine/planted.py:2: the engine imports {statement.split()[1]}"
    ]


# -- the sandbox -----------------------------------------------------------------------------


def test_the_app_importing_the_sandbox_fails(copy: Path):
    plant(copy, "smartapp/screen/planted.py", "from smartapp import sandbox")
    assert_lint_breaks(copy, "smartapp.screen.planted -> smartapp.sandbox")
    assert layers.sandbox_violations(copy) == [
        "smartapp/screen/planted.py:2: imports the sandbox (smartapp.sandbox) at module level"
    ]


def test_the_cli_importing_the_sandbox_outside_the_demo_fails(copy: Path):
    """import-linter allows smartapp.cli; the AST check holds it to the demo function."""
    plant(copy, "smartapp/cli.py", "def other():\n    from smartapp.sandbox import seed")
    assert_lint_keeps(copy)
    [found] = layers.sandbox_violations(copy)
    assert found.endswith("imports the sandbox (smartapp.sandbox.seed) in other()")


def test_the_sandbox_importing_the_app_fails(copy: Path):
    plant(copy, "smartapp/sandbox/planted.py", "from smartapp.db import Referral")
    assert_lint_breaks(copy, *broken("smartapp.sandbox", "smartapp.db"))
    assert layers.sandbox_violations(copy) == [
        "smartapp/sandbox/planted.py:2: the sandbox imports smartapp.db"
    ]


def test_the_sandbox_importing_the_web_layer_beyond_serving_fails(copy: Path):
    plant(copy, "smartapp/sandbox/planted.py", "from smartapp.web import check_csrf")
    assert_lint_breaks(copy, *broken("smartapp.sandbox", "smartapp.web"))
    assert layers.sandbox_violations(copy) == [
        "smartapp/sandbox/planted.py:2: the sandbox imports smartapp.web"
    ]


# -- views -----------------------------------------------------------------------------------


def test_a_views_module_importing_the_models_fails(copy: Path):
    plant(copy, "smartapp/web/views.py", "from smartapp import db")
    assert_lint_breaks(copy, "smartapp.web.views is not allowed to import smartapp.db")
    assert layers.view_violations(copy, view_exceptions()) == [
        "smartapp/web/views.py:2: a view imports the models (smartapp.db)"
    ]


def test_a_named_views_module_importing_the_models_fails(copy: Path):
    """`*_views.py` modules, which import-linter's wildcards cannot name: the AST check."""
    plant(copy, "smartapp/staff/planted_views.py", "from ..audit.models import LogEvent")
    assert layers.view_violations(copy, view_exceptions()) == [
        "smartapp/staff/planted_views.py:2: a view imports the models (smartapp.audit.models)"
    ]


# -- FHIR writes -----------------------------------------------------------------------------

WRITES = {
    "client.create({'resourceType': 'Task'})": "create",
    "anything.post_bundle({})": "post_bundle",
    "client.update({'resourceType': 'Task', 'id': '1'})": "update",
    "self.ehr.delete('Task/1')": "delete",
    "client._request('PUT', 'Task/1', {})": "_request('PUT')",
}


@pytest.mark.parametrize("call", WRITES)
def test_a_fhir_write_outside_the_write_back_layer_fails(copy: Path, call: str):
    plant(copy, "smartapp/staff/planted.py", f"def send(self, client, anything):\n    {call}")
    assert layers.fhir_write_violations(copy) == [
        f"smartapp/staff/planted.py:3: calls a FHIR client's {WRITES[call]}() (only "
        "smartapp.writeback writes to the EHR)"
    ]


def test_a_write_on_a_client_known_by_its_type_fails(copy: Path):
    plant(
        copy,
        "smartapp/screen/planted.py",
        """
from smartapp.fhir import FhirClient
from smartapp.launch.sessions import client_for


def typed(c: FhirClient, resource):
    c.update(resource)


def returned(services, resource):
    made = client_for(services, "context")
    made.put(resource)
    client_for(services, "context").patch(resource)
""",
    )
    lines = [v.split(":")[1] for v in layers.fhir_write_violations(copy)]
    assert lines == ["7", "12", "13"]


def test_same_named_methods_of_other_objects_are_no_fhir_writes(copy: Path):
    plant(
        copy,
        "smartapp/staff/planted.py",
        """
def fine(digest, session, row, values, bp):
    digest.update(b"x")
    values.update({"a": 1})
    session.delete(row)

    @bp.post("/x")
    def view():
        return ""
""",
    )
    assert layers.fhir_write_violations(copy) == []


def test_the_write_back_layer_may_write(copy: Path):
    plant(copy, "smartapp/writeback/planted.py", "def send(client):\n    client.create({})")
    assert layers.fhir_write_violations(copy) == []
