"""Readiness: can this process serve a launch? Each check says what it found, without PHI.

- database: a `SELECT 1` answers;
- migrations: the schema's revision is the newest this code ships (a deploy that forgot
  `handoff db upgrade`, or a database a newer version moved on);
- registrations: at least one EHR registration is loaded (none: no launch can start);
- rules: the rule pack the app runs is loaded, and the rules on disk still load (checked again
  only when a file under RULES_DIR changes), so a broken edit shows before the next restart
  refuses to start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from smartapp.services import Services


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


_head_lock = threading.Lock()
_head: list[str | None] = []


def head_revision() -> str | None:
    """The newest migration this code ships (read once)."""
    with _head_lock:
        if not _head:
            from alembic.script import ScriptDirectory

            from smartapp.db import alembic_config

            _head.append(ScriptDirectory.from_config(alembic_config()).get_current_head())
        return _head[0]


def database(services: Services) -> Check:
    try:
        with services.db.read() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error: the database is away
        return Check("database", False, f"not reachable ({type(exc).__name__})")
    return Check("database", True, services.db.engine.dialect.name)


def migrations(services: Services) -> Check:
    try:
        current = services.db.current_revision()
    except Exception as exc:
        return Check("migrations", False, f"revision not readable ({type(exc).__name__})")
    head = head_revision()
    if current != head:
        return Check("migrations", False, f"schema at {current}, code expects {head}")
    return Check("migrations", True, f"at {head}")


def registrations(services: Services) -> Check:
    count = len(list(services.registry))
    if not count:
        return Check("registrations", False, "no EHR registration loaded")
    return Check("registrations", True, f"{count} loaded")


class RulesOnDisk:
    """Whether the rules on disk still load, re-checked only when a file there changed."""

    def __init__(self, load: Callable[[Mapping[str, Any]], object]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._problem: str | None = None

    def problem(self, config: Mapping[str, Any], folder: Path | None) -> str | None:
        stamp = _fingerprint(folder)
        with self._lock:
            if stamp != self._seen:
                try:
                    self._load(config)
                    self._problem = None
                except Exception as exc:  # StartupError with the pack's problem, or worse
                    self._problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._seen = stamp
            return self._problem


def _fingerprint(folder: Path | None) -> tuple:
    """(path, size, mtime) of every file under `folder`: changes when any rule file does."""
    if folder is None or not folder.is_dir():
        return (str(folder),)
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def rules(services: Services, config: Mapping[str, Any], on_disk: RulesOnDisk) -> Check:
    pack = services.pack
    if pack is None or not getattr(pack, "rules", None):
        return Check("rules", False, "no rule pack loaded")
    from smartapp.rulestools.setting import configured_rules_dir

    try:
        folder: Path | None = configured_rules_dir(config)
    except Exception:  # the folder is gone: loading says so below
        folder = None
    problem = on_disk.problem(config, folder)
    if problem:
        return Check("rules", False, f"the rules on disk do not load: {problem}")
    return Check("rules", True, f"{len(pack.rules)} rules")


def readiness(services: Services, config: Mapping[str, Any], on_disk: RulesOnDisk) -> list[Check]:
    """Every check, in order."""
    return [
        database(services),
        migrations(services),
        registrations(services),
        rules(services, config, on_disk),
    ]
