"""One place resolves the shared folder for the tests: tests/shared.py. Every other test
module takes it from there (or from the `shared_dir` fixture) instead of working out a path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.shared import REPO

pytestmark = pytest.mark.unit

TESTS = REPO / "tests"
# A path worked out to the shared folder: `<something> / "shared"`.
OWN_PATH = re.compile(r"""/\s*["']shared["']""")
PENDING: frozenset[str] = frozenset()


def test_only_tests_shared_py_works_out_where_the_shared_folder_is():
    found = {
        path.relative_to(REPO).as_posix()
        for path in TESTS.rglob("*.py")
        if path.name not in ("shared.py", Path(__file__).name)
        and OWN_PATH.search(path.read_text(encoding="utf-8"))
    }
    assert found <= PENDING, f"take the shared folder from tests.shared: {sorted(found - PENDING)}"
