"""The test tiers (markers registered in pyproject.toml), given without editing every test:

- `e2e`: under tests/e2e, or using the browser;
- `unit`: under tests/engine, tests/catalog, tests/unit or tests/contracts, and neither the
  test nor any fixture it uses (all the way down) starts a server or another process;
- `integration`: every other test;
- `postgres`: the test or a fixture reads HANDOFF_TEST_POSTGRES_URL (the pg fixtures do);
- `slow`: the test or a fixture copies the checkout to build a wheel or a virtual environment.

What a test and its fixtures do is read from their code: the names they use (a call of
`serve_in_thread`, `start_stack`, `subprocess.run`, ...) and the strings they hold. A tier
mark the test sets itself (`pytestmark = pytest.mark.unit`, `@pytest.mark.integration`)
wins; so do its own `postgres` and `slow` marks, which are only ever added to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import CodeType

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")
UNIT_FOLDERS = frozenset({"engine", "catalog", "unit", "contracts"})
E2E_FOLDERS = frozenset({"e2e"})
BROWSER_FIXTURES = frozenset({"browser", "page"})
# Names whose use starts a server or another process (the tests' own starters included).
STARTERS = frozenset(
    {
        "serve_in_thread",
        "make_server",
        "start_app",
        "start_stack",
        "start_sandbox",
        "start_fhir_server",
        "subprocess",
        "Popen",
        "run_cli",
        "multiprocessing",
    }
)
POSTGRES_WORDS = frozenset({"HANDOFF_TEST_POSTGRES_URL", "POSTGRES_ENV", "postgres_base_url"})
SLOW_WORDS = frozenset({"_copy_checkout"})


def mark_tiers(items: Iterable[pytest.Item]) -> None:
    for item in items:
        for name in tiers_of(item):
            item.add_marker(getattr(pytest.mark, name))


def tiers_of(item: pytest.Item) -> list[str]:
    """The marks `item` gets (none it already has)."""
    own = {mark.name for mark in item.iter_markers()}
    words = set(_words_of(item))
    marks = []
    if not own & set(TIERS):
        marks.append(_tier(item, words))
    if "postgres" not in own and words & POSTGRES_WORDS:
        marks.append("postgres")
    if "slow" not in own and words & SLOW_WORDS:
        marks.append("slow")
    return marks


def _tier(item: pytest.Item, words: set[str]) -> str:
    folder = _folder(item)
    fixtures = set(getattr(item, "fixturenames", ()))
    if folder in E2E_FOLDERS or fixtures & BROWSER_FIXTURES:
        return "e2e"
    if folder in UNIT_FOLDERS and not words & STARTERS:
        return "unit"
    return "integration"


def _folder(item: pytest.Item) -> str:
    try:
        return Path(item.path).resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return ""


def _words_of(item: pytest.Item) -> Iterator[str]:
    """Names and strings in the test's code and in every fixture it uses."""
    function = getattr(item, "function", None)
    if function is not None and hasattr(function, "__code__"):
        yield from _code_words(function.__code__)
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        yield name
        definitions = info.name2fixturedefs.get(name, ()) if info else ()
        for definition in definitions:
            code = getattr(definition.func, "__code__", None)
            if code is not None:
                yield from _code_words(code)


def _code_words(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, str):
            yield const
        elif isinstance(const, CodeType):
            yield from _code_words(const)
