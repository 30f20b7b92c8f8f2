"""The layers, checked on the source with the AST, for what import-linter's contracts (in
pyproject.toml) cannot say: each check takes the folder holding a copy of `smartapp/` and
returns its violations as "path:line: what", empty when the copy keeps the contract.

- the engine imports only itself, the standard library (no network, database or process) and
  its data libraries; an allow-list, so a new package of the app is refused without a change;
- only the write-back layer calls a FHIR client's write methods (below);
- nothing but the demo command (`smartapp.cli.demo`, inside the function) imports the sandbox,
  and the sandbox imports nothing of the app but `smartapp.web.serving`;
- views (`views.py`, `*_views.py`) do not import the database models.

FHIR writes. `create`, `post_bundle` and `transaction` belong to the FHIR client alone here,
so using them on anything is a write. `update`, `delete`, `post`, `put` and `patch` are also a
dict's, a hash's, a database session's or a Blueprint's, so they count as a write when the
receiver is a FHIR client as far as the module shows: a name or attribute that says so
(client, fhir, ehr), a name annotated or assigned `FhirClient`, or the result of a function
annotated to return one (`launch.sessions.client_for`). The client's own `_send` and
`_request` with a write verb count too. The FHIR client itself (`smartapp.fhir`: its chart
read POSTs a batch of reads) and the sandbox (the EHR's server side, which may not import the
client: see the `sandbox-apart` contract) are not checked.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

from tests.contracts.source import PACKAGE, Module, imports, modules, within

ENGINE = "smartapp.engine"
# The data libraries the engine reads rule packs and value sets with.
ENGINE_LIBRARIES = frozenset({"pydantic", "yaml"})
# Standard-library modules that reach outside the process: the engine uses none.
STDLIB_IO = (
    "urllib.request",
    "http.client",
    "http.server",
    "socket",
    "ssl",
    "sqlite3",
    "subprocess",
    "smtplib",
    "ftplib",
    "xmlrpc",
    "wsgiref",
)

WRITEBACK = "smartapp.writeback"
FHIR_CLIENT = "smartapp.fhir"
SANDBOX = "smartapp.sandbox"
# The one importer of the sandbox: (module, function).
DEMO_COMMAND = ("smartapp.cli", "demo")
SANDBOX_MAY_IMPORT = frozenset({"smartapp.web.serving"})
VIEW_MODELS = ("smartapp.db", "smartapp.audit.models")

CLIENT_ONLY_WRITES = frozenset({"create", "post_bundle", "transaction"})
SHARED_NAME_WRITES = frozenset({"update", "delete", "post", "put", "patch"})
RAW_SENDS = frozenset({"_send", "_request"})
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLIENT_WORDS = ("client", "fhir", "ehr")
CLIENT_CLASS = "FhirClient"


def violation(module: Module, line: int, what: str) -> str:
    return f"{module.relative}:{line}: {what}"


# -- the engine ------------------------------------------------------------------------------


def engine_violations(root: Path) -> list[str]:
    """Imports of the engine that are not itself, the standard library's in-process modules
    or its data libraries."""
    found = []
    for module in modules(root, ENGINE):
        for imported in imports(module):
            if not _engine_may_import(imported.module):
                found.append(
                    violation(module, imported.line, f"the engine imports {imported.module}")
                )
    return found


def _engine_may_import(name: str) -> bool:
    top = name.split(".")[0]
    if top == PACKAGE:
        return within(name, ENGINE)
    if top in sys.stdlib_module_names:
        return not any(within(name, io) for io in STDLIB_IO)
    return top in ENGINE_LIBRARIES


# -- the sandbox -----------------------------------------------------------------------------


def sandbox_violations(root: Path) -> list[str]:
    """Imports of the sandbox outside the demo command, and imports of the app by the
    sandbox other than the server helper."""
    found = []
    for module in modules(root):
        in_sandbox = within(module.name, SANDBOX)
        for imported in imports(module):
            name = imported.module
            if in_sandbox and _sandbox_may_not_import(name):
                found.append(violation(module, imported.line, f"the sandbox imports {name}"))
            elif (
                not in_sandbox
                and within(name, SANDBOX)
                and (module.name, imported.function) != DEMO_COMMAND
            ):
                where = f"in {imported.function}()" if imported.function else "at module level"
                found.append(
                    violation(module, imported.line, f"imports the sandbox ({name}) {where}")
                )
    return found


def _sandbox_may_not_import(name: str) -> bool:
    app = within(name, PACKAGE) and not within(name, SANDBOX)
    return app and name not in SANDBOX_MAY_IMPORT


# -- views -----------------------------------------------------------------------------------


def is_view(module: Module) -> bool:
    return any(part == "views" or part.endswith("_views") for part in module.name.split("."))


def view_violations(root: Path, exceptions: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Imports of the database models by a view, but for the known `exceptions`
    ((view module, models module), as in the views-no-models contract's ignore_imports)."""
    allowed = set(exceptions)
    found = []
    for module in modules(root):
        if not is_view(module):
            continue
        for imported in imports(module):
            models = next((m for m in VIEW_MODELS if within(imported.module, m)), None)
            if models and (module.name, models) not in allowed:
                found.append(
                    violation(module, imported.line, f"a view imports the models ({models})")
                )
    return found


# -- FHIR writes -----------------------------------------------------------------------------


def fhir_write_violations(root: Path) -> list[str]:
    """Calls of a FHIR client's write methods outside the write-back layer."""
    modules_ = list(modules(root))
    returns_client = _functions_returning_client(modules_)
    found = []
    for module in modules_:
        if any(within(module.name, p) for p in (WRITEBACK, FHIR_CLIENT, SANDBOX)):
            continue
        for node, method in _writes(module.nodes, returns_client):
            found.append(
                violation(
                    module,
                    node.lineno,
                    f"calls a FHIR client's {method}() (only {WRITEBACK} writes to the EHR)",
                )
            )
    return found


def _functions_returning_client(modules_: Iterable[Module]) -> set[str]:
    """Names of the package's functions annotated to return a FhirClient."""
    names = set()
    for module in modules_:
        for node in module.nodes:
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.returns is not None
                and CLIENT_CLASS in ast.unparse(node.returns)
            ):
                names.add(node.name)
    return names


def _writes(
    nodes: tuple[ast.AST, ...], returns_client: set[str]
) -> list[tuple[ast.Attribute, str]]:
    """The write calls among a module's nodes, each with the method's name."""
    clients = _client_names(nodes, returns_client)
    writes = []
    for node in nodes:
        if isinstance(node, ast.Attribute):
            method = node.attr
            client_only = method in CLIENT_ONLY_WRITES
            shared = method in SHARED_NAME_WRITES
            if client_only or (shared and _is_client(node.value, clients, returns_client)):
                writes.append((node, method))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RAW_SENDS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).upper() in WRITE_VERBS
        ):
            writes.append((node.func, f"{node.func.attr}({node.args[0].value!r})"))
    return writes


def _client_names(nodes: tuple[ast.AST, ...], returns_client: set[str]) -> set[str]:
    """Names the module binds to a FHIR client: annotated `FhirClient`, or assigned from
    `FhirClient(...)` or from a function that returns one."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.arg) and node.annotation is not None:
            if CLIENT_CLASS in ast.unparse(node.annotation):
                names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if CLIENT_CLASS in ast.unparse(node.annotation):
                names.add(node.target.id)
        elif isinstance(node, ast.Assign) and _makes_client(node.value, returns_client):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _makes_client(value: ast.expr, returns_client: set[str]) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return called == CLIENT_CLASS or called in returns_client


def _is_client(receiver: ast.expr, clients: set[str], returns_client: set[str]) -> bool:
    if _makes_client(receiver, returns_client):
        return True
    if isinstance(receiver, ast.Name):
        name = receiver.id
    elif isinstance(receiver, ast.Attribute):
        name = receiver.attr
    else:
        return False
    return name in clients or any(word in name.lower() for word in CLIENT_WORDS)


def all_violations(root: Path, view_exceptions: Iterable[tuple[str, str]] = ()) -> list[str]:
    return [
        *engine_violations(root),
        *sandbox_violations(root),
        *view_violations(root, view_exceptions),
        *fhir_write_violations(root),
    ]
