"""Staff sessions and staff sign-ins in flight, kept in Handoff's database. No Flask here: the
staff blueprint calls these with its database and settings.

The browser's cookie holds only a random token; the row is found by the token's SHA-256, so a
copy of the database opens no session. A session ends at sign-out (its row is deleted: every
copy of the cookie is refused from then on), after an idle limit, and at an absolute limit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from smartapp.db import Database, StaffSession, StaffSignIn, stored_utc


@dataclass(frozen=True)
class Limits:
    """How long a staff session lasts: without a request (idle), and at most (absolute)."""

    idle: timedelta
    absolute: timedelta


def _row_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(db: Database, staff: dict, limits: Limits, now: datetime | None = None) -> str:
    """A new session for `staff` (sub, name, user_ref, roles); returns the cookie's token.
    Sessions past their absolute limit are cleared out on the way."""
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    with db.session() as session:
        session.execute(delete(StaffSession).where(StaffSession.created_at < now - limits.absolute))
        session.add(
            StaffSession(
                id=_row_id(token),
                sub=str(staff.get("sub") or ""),
                name=str(staff.get("name") or ""),
                user_ref=str(staff.get("user_ref") or ""),
                roles=list(staff.get("roles") or []),
                created_at=now,
                last_seen_at=now,
            )
        )
    return token


def find_session(
    db: Database, token: str, limits: Limits, now: datetime | None = None
) -> dict | None:
    """The staff member of a live session (and the session's use recorded), else None; a
    session past a limit is deleted."""
    now = now or datetime.now(UTC)
    with db.session() as session:
        row = session.get(StaffSession, _row_id(token))
        if row is None:
            return None
        idle = now - stored_utc(row.last_seen_at) > limits.idle
        old = now - stored_utc(row.created_at) > limits.absolute
        if idle or old:
            session.delete(row)
            return None
        row.last_seen_at = now
        return {"sub": row.sub, "name": row.name, "user_ref": row.user_ref, "roles": row.roles}


def end_session(db: Database, token: str) -> None:
    """Sign-out: the row goes, so no copy of the cookie opens anything again."""
    with db.session() as session:
        session.execute(delete(StaffSession).where(StaffSession.id == _row_id(token)))


class SignInStore:
    """authlib's state cache (get / set / delete) on the staff_sign_in table: the PKCE verifier,
    nonce and redirect URI of a sign-in in flight stay on the server; the browser's cookie holds
    only the state's key and expiry. `database` is called on each use (one app per database)."""

    def __init__(self, database) -> None:
        self.database = database

    def get(self, key: str) -> str | None:
        now = datetime.now(UTC)
        with self.database().session() as session:
            row = session.get(StaffSignIn, key)
            if row is None or stored_utc(row.expires_at) < now:
                return None
            return row.data

    def set(self, key: str, value: str, expires_in: int | None = None) -> None:
        now = datetime.now(UTC)
        with self.database().session() as session:
            session.execute(delete(StaffSignIn).where(StaffSignIn.expires_at < now))
            session.merge(
                StaffSignIn(
                    key=key,
                    data=value if isinstance(value, str) else json.dumps(value),
                    expires_at=now + timedelta(seconds=expires_in or 600),
                )
            )

    def delete(self, key: str) -> None:
        with self.database().session() as session:
            session.execute(delete(StaffSignIn).where(StaffSignIn.key == key))
