"""Issue 9 items 8 and 37: dependencies are declared and locked with hashes, and the
README's way to the ``handoff`` command works from a checkout.

* Every third-party package that ``smartapp/`` (and ``tests/``) imports is declared in
  pyproject.toml and pinned, with hashes, in the lock files that dev.py installs from.
* ``python3 dev.py handoff ARGS`` (the README's way to the command) creates ``.venv/`` in a
  fresh copy of the checkout, installs exactly the lock's versions (``--require-hashes``)
  and runs the command; editing the lock re-installs, nothing else does.

The last test creates a virtual environment and installs from PyPI (or pip's cache): about
half a minute, marked ``slow`` and kept in the suite.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
APP_LOCK = REPO / "requirements.lock"
TEST_LOCK = REPO / "requirements-test.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: What a copy of the checkout needs to install and run (the repository's own files).
CHECKOUT_FILES = (
    "dev.py",
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "requirements.lock",
    "requirements-test.lock",
)
CHECKOUT_FOLDERS = ("smartapp", "rules", "launch", "catalog")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A lock file as {name: (version, hashes)}; fails on any line that is not a pin."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        assert hashes, f"{path.name}: {match.group(1)} has no hash"
        entries[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return entries


def declared(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """pyproject.toml's dependencies, plus those of the named extras."""
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level modules imported under ``folder`` that are neither standard library nor
    the project's own: {module: first file importing it}."""
    # the project's own: its packages, and the benchmarks' modules (tests import them by name)
    own = {"smartapp", "tests", "benchmarks"} | {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def distribution_of(module: str) -> str:
    """The installed distribution that provides a top-level module."""
    dists = importlib.metadata.packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module!r}"
    return canonicalize_name(dists[0])


def test_every_third_party_import_of_smartapp_is_declared_and_locked() -> None:
    names = {canonicalize_name(r.name) for r in declared()}
    # an optional extra (pip install .[spark]): imported lazily, pinned for the tests (CI)
    optional = {canonicalize_name(r.name) for r in declared(("spark",))} - names
    app_lock, test_lock = locked(APP_LOCK), locked(TEST_LOCK)
    imports = third_party_imports(REPO / "smartapp")
    assert {"click", "joserfc", "flask", "yaml"} <= set(imports)
    for module, where in imports.items():
        dist = distribution_of(module)
        assert dist in names | optional, f"{where} imports {module}: {dist} is declared nowhere"
        assert dist in optional or dist in app_lock, f"{dist} is not pinned in requirements.lock"
        assert dist in test_lock, f"{dist} is not pinned in requirements-test.lock"


def test_every_third_party_import_of_the_tests_is_declared_and_locked() -> None:
    names = {canonicalize_name(r.name) for r in declared(("test", "postgres", "spark"))}
    test_lock = locked(TEST_LOCK)
    for module, where in third_party_imports(REPO / "tests").items():
        dist = distribution_of(module)
        assert dist in names, f"{where} imports {module}: {dist} is declared nowhere"
        assert dist in test_lock, f"{dist} is not pinned in requirements-test.lock"


@pytest.mark.parametrize(("lock", "extras"), [(APP_LOCK, ()), (TEST_LOCK, ("test", "postgres"))])
def test_lock_pins_every_dependency_within_pyproject_bounds(
    lock: Path, extras: tuple[str, ...]
) -> None:
    pins = locked(lock)
    for requirement in declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock.name} does not pin {name}"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside pyproject's {requirement}"
        )
    if "postgres" in extras:
        assert "psycopg-binary" in pins  # psycopg[binary]: the extra's own package is locked


def test_ci_runs_dev_py_test_which_installs_the_test_lock() -> None:
    assert (REPO / ".ci" / "run").read_text().strip().endswith("python3 dev.py test")
    source = (REPO / "dev.py").read_text()
    assert '"--require-hashes", "-r", lock' in source and "ensure_installed(TEST_LOCK)" in source


def _copy_checkout(target: Path) -> Path:
    """The repository's files (as they are in this working tree) in a fresh folder."""
    target.mkdir(parents=True)
    for name in CHECKOUT_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "default_rules", "default_catalog")
    for name in CHECKOUT_FOLDERS:
        if (REPO / name).exists():
            shutil.copytree(REPO / name, target / name, ignore=ignore)
    return target


def _clean_env() -> dict[str, str]:
    """This process's environment without this venv or any Handoff setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HANDOFF_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    return env


def _dev(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "dev.py", *args],
        cwd=checkout,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_dev_py_handoff_installs_the_lock_with_hashes_and_runs_the_command(
    tmp_path: Path,
) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    proc = _dev(checkout, "handoff", "rules", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("OK id=handoff-default version=")
    assert "--require-hashes -r requirements.lock" in proc.stdout
    venv_python = checkout / ".venv" / "bin" / "python"
    freeze = subprocess.run(
        [str(venv_python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {
        canonicalize_name(n): v
        for n, _, v in (line.partition("==") for line in freeze.splitlines())
    }
    for name, (version, _hashes) in locked(APP_LOCK).items():
        assert installed.get(name) == version, f"{name}: lock {version}, venv {installed.get(name)}"
    check = subprocess.run([str(venv_python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout

    again = _dev(checkout, "handoff", "rules", "check")  # nothing changed: no install
    assert again.returncode == 0 and "pip install" not in again.stdout, again.stdout

    lock = checkout / "requirements.lock"
    lock.write_text(lock.read_text() + "# edited\n")  # a lock change re-installs
    edited = _dev(checkout, "handoff", "--help")
    assert edited.returncode == 0, edited.stderr
    assert "--require-hashes -r requirements.lock" in edited.stdout
    assert "rules" in edited.stdout
