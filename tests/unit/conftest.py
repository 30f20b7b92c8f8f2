"""Unit tier: pure functions, no server, no database, no browser."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "unit: a server-free unit test (no HTTP, no database)")
