"""catalog/README.md documents every code Handoff accepts and the check command."""

from __future__ import annotations

from smartapp.catalog import CHARACTERISTIC_SYSTEM, CHARACTERISTICS, SERVICE_SYSTEM, SERVICE_TYPES

from .helpers import REPO_ROOT

README = (REPO_ROOT / "catalog" / "README.md").read_text(encoding="utf-8")


def test_every_code_and_display_is_documented() -> None:
    for codes in (SERVICE_TYPES, CHARACTERISTICS):
        for code, display in codes.items():
            assert f"| `{code}` | {display} |" in README, code
    assert SERVICE_SYSTEM in README and CHARACTERISTIC_SYSTEM in README


def test_check_command_is_documented() -> None:
    assert "python -m smartapp.catalog check catalog/sample" in README
