"""Fixtures for the rule engine tests."""

from __future__ import annotations

import pytest

from smartapp.engine import Pack, load_pack

from .helpers import RULES


@pytest.fixture(scope="session")
def pack() -> Pack:
    """The default pack, loaded once per test session."""
    return load_pack(RULES / "packs" / "default.yaml")
