"""OAuth storage: clients, EHR launches, authorization codes, tokens, the signing key, users.

Laid out like authlib's example-oauth2-server: ORM models built on authlib's SQLAlchemy
mixins plus one `OAuthStore` with every query the protocol code needs. The protocol side
(auth/server.py) holds no SQL; this module holds no protocol rules.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from authlib.integrations.sqla_oauth2 import (
    OAuth2AuthorizationCodeMixin,
    OAuth2ClientMixin,
    OAuth2TokenMixin,
)
from joserfc.jwk import RSAKey
from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, scoped_session

from smartapp.sandbox.auth.scopes import granted_scopes
from smartapp.sandbox.config import DEMO_USERS, SandboxClient
from smartapp.sandbox.db import Base, Database

LAUNCH_LIFETIME_S = 600
CODE_LIFETIME_S = 300


@dataclass(frozen=True)
class EhrUser:
    """A signed-in EHR user; `fhir_user` is the relative FHIR reference (Practitioner/id);
    `roles` are what the id_token claim `handoff_roles` carries."""

    id: str
    fhir_user: str
    name: str
    roles: tuple[str, ...] = ()

    def get_user_id(self) -> str:
        """authlib's user interface."""
        return self.id


#: The sandbox's users, in sign-in page order: the ED physician (signed in by the track
#: board), two peer recovery coaches, an auditor and a program manager (Handoff's staff).
USERS: dict[str, EhrUser] = {
    user.id: EhrUser(user.id, f"Practitioner/{user.id}", user.name, user.roles)
    for user in DEMO_USERS
}


class OAuthClient(Base, OAuth2ClientMixin):
    """A registered SMART app."""

    __tablename__ = "oauth_client"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    launch_url: Mapped[str] = mapped_column(Text, nullable=False, default="")

    def get_allowed_scope(self, scope: str) -> str:
        """Granted = requested ∩ supported (any client may ask for any supported scope)."""
        return granted_scopes(scope or "")

    @property
    def backend_scopes(self) -> list[str]:
        """The system/ scopes registered for the backend services grant (may be none)."""
        return [s for s in (self.scope or "").split() if s.startswith("system/")]

    @property
    def revoked(self) -> bool:
        """A revoked client authenticates no more (its tokens were revoked with it)."""
        return bool(self.client_metadata.get("revoked"))

    @property
    def revoked_kids(self) -> frozenset[str]:
        """Key ids of this client's keys that no longer authenticate it."""
        return frozenset(self.client_metadata.get("revoked_kids") or [])


class AuthorizationCode(Base, OAuth2AuthorizationCodeMixin):
    """A code with the launch context it was issued for."""

    __tablename__ = "oauth_code"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), nullable=False)
    patient: Mapped[str | None] = mapped_column(String(64))
    encounter: Mapped[str | None] = mapped_column(String(64))

    def is_expired(self) -> bool:
        """Codes live CODE_LIFETIME_S seconds."""
        return self.auth_time + CODE_LIFETIME_S < time.time()


class Token(Base, OAuth2TokenMixin):
    """An access token (with its refresh token) and its launch context."""

    __tablename__ = "oauth_token"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64))
    patient: Mapped[str | None] = mapped_column(String(64))
    encounter: Mapped[str | None] = mapped_column(String(64))


class Launch(Base):
    """An EHR launch: opaque value bound to patient, encounter and user; single use."""

    __tablename__ = "ehr_launch"
    launch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient: Mapped[str] = mapped_column(String(64))
    encounter: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[int | None] = mapped_column(Integer)

    def usable(self) -> bool:
        """Not expired and not yet used for a code."""
        return self.used_at is None and self.expires_at > time.time()


class OAuthStore:
    """Every read and write of OAuth state, on the sandbox database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def session(self) -> scoped_session[Session]:
        """The thread's ORM session."""
        return self.db.session

    @contextmanager
    def _writing(self) -> Iterator[scoped_session[Session]]:
        """Serialised ORM write (Database.write: ends any open read snapshot first, commits
        at the end, rolls back on error), on the request's one connection."""
        with self.db.write():
            yield self.session

    # -- clients -------------------------------------------------------------------------

    def register_clients(self, clients: list[SandboxClient]) -> None:
        """Insert or refresh the registered apps."""
        with self._writing():
            for client in clients:
                row = self.session.scalars(
                    select(OAuthClient).where(OAuthClient.client_id == client.client_id)
                ).first() or OAuthClient(client_id=client.client_id)
                row.client_secret = client.client_secret or ""
                row.client_id_issued_at = int(time.time())
                row.launch_url = client.launch_url
                grant_types = ["authorization_code", "refresh_token"]
                if client.backend_scopes:
                    grant_types.append("client_credentials")
                metadata: dict = {
                    "client_name": client.name,
                    "redirect_uris": list(client.redirect_uris),
                    "grant_types": grant_types,
                    "response_types": ["code"],
                    "token_endpoint_auth_method": client.auth_method,
                    # What the client is registered for: the backend grant's system/ scopes.
                    "scope": " ".join(client.backend_scopes),
                }
                if client.jwks_uri:
                    metadata["jwks_uri"] = client.jwks_uri
                if client.jwks:
                    metadata["jwks"] = client.jwks
                row.set_client_metadata(metadata)
                self.session.add(row)

    def client(self, client_id: str) -> OAuthClient | None:
        """A client by id."""
        return self.session.scalars(
            select(OAuthClient).where(OAuthClient.client_id == client_id)
        ).first()

    def revoke_client(self, client_id: str, kid: str | None = None) -> bool:
        """Revoke a client (and every live token of it), or only its key `kid`; False when
        there is no such client. Refused from the next token request on."""
        with self._writing():
            row = self.client(client_id)
            if row is None:
                return False
            metadata = dict(row.client_metadata)
            if kid is None:
                metadata["revoked"] = True
                now = int(time.time())
                for token in self.session.scalars(
                    select(Token).where(Token.client_id == client_id)
                ):
                    token.access_token_revoked_at = now
                    token.refresh_token_revoked_at = now
            else:
                metadata["revoked_kids"] = sorted({*metadata.get("revoked_kids", []), kid})
            row.set_client_metadata(metadata)
        return True

    def clients(self) -> list[OAuthClient]:
        """All registered clients."""
        return list(self.session.scalars(select(OAuthClient).order_by(OAuthClient.pk)))

    # -- launches ------------------------------------------------------------------------

    def create_launch(self, patient: str, encounter: str | None, user_id: str) -> str:
        """A fresh opaque launch value for this context."""
        launch_id = secrets.token_urlsafe(24)
        now = int(time.time())
        with self._writing():
            self.session.add(
                Launch(
                    launch_id=launch_id,
                    patient=patient,
                    encounter=encounter,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + LAUNCH_LIFETIME_S,
                )
            )
        return launch_id

    def launch(self, launch_id: str) -> Launch | None:
        """A launch by value (usable or not)."""
        return self.session.get(Launch, launch_id)

    # -- codes ---------------------------------------------------------------------------

    def save_code(
        self,
        code: str,
        client_id: str,
        redirect_uri: str,
        scope: str,
        user_id: str,
        nonce: str | None,
        challenge: str | None,
        challenge_method: str | None,
        patient: str | None,
        encounter: str | None,
        launch_id: str | None,
    ) -> None:
        """Store a code and consume the launch it came from, atomically."""
        with self._writing():
            if launch_id:
                launch = self.session.get(Launch, launch_id)
                if launch is not None:
                    launch.used_at = int(time.time())
            self.session.add(
                AuthorizationCode(
                    code=code,
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    response_type="code",
                    scope=scope,
                    user_id=user_id,
                    nonce=nonce,
                    code_challenge=challenge,
                    code_challenge_method=challenge_method,
                    patient=patient,
                    encounter=encounter,
                    auth_time=int(time.time()),
                )
            )

    def code(self, code: str, client_id: str) -> AuthorizationCode | None:
        """An unexpired code issued to `client_id`."""
        item = self.session.scalars(
            select(AuthorizationCode).where(
                AuthorizationCode.code == code, AuthorizationCode.client_id == client_id
            )
        ).first()
        return item if item is not None and not item.is_expired() else None

    def delete_code(self, item: AuthorizationCode) -> None:
        """Codes are single use."""
        with self._writing():
            self.session.delete(item)

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        """Was this nonce already used in a pending code of this client?"""
        return (
            self.session.scalars(
                select(AuthorizationCode.pk).where(
                    AuthorizationCode.client_id == client_id, AuthorizationCode.nonce == nonce
                )
            ).first()
            is not None
        )

    # -- tokens --------------------------------------------------------------------------

    def save_token(
        self,
        token: dict,
        client_id: str,
        user_id: str | None,
        patient: str | None,
        encounter: str | None,
    ) -> None:
        """Persist an issued token with its context."""
        with self._writing():
            self.session.add(
                Token(
                    client_id=client_id,
                    user_id=user_id,
                    patient=patient,
                    encounter=encounter,
                    token_type=token.get("token_type", "Bearer"),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    scope=token.get("scope", ""),
                    issued_at=int(time.time()),
                    expires_in=int(token.get("expires_in", 0)),
                )
            )

    def token_by_access(self, access_token: str) -> Token | None:
        """The token row of a bearer token (validity is the caller's check)."""
        return self.session.scalars(select(Token).where(Token.access_token == access_token)).first()

    def token_by_refresh(self, refresh_token: str) -> Token | None:
        """A token row whose refresh token has not been used or revoked."""
        item = self.session.scalars(
            select(Token).where(Token.refresh_token == refresh_token)
        ).first()
        return item if item is not None and not item.refresh_token_revoked_at else None

    def revoke(self, item: Token) -> None:
        """Revoke a token and its refresh token (rotation on refresh)."""
        now = int(time.time())
        with self._writing():
            item.access_token_revoked_at = now
            item.refresh_token_revoked_at = now
            self.session.add(item)

    def expire_access_tokens(self) -> int:
        """Make every live access token expired now (refresh tokens stay usable).

        authlib reads expiry as issued_at + expires_in, so issued_at is moved back.
        """
        now = int(time.time())
        with self._writing():
            rows = list(
                self.session.scalars(
                    select(Token).where(Token.access_token_revoked_at == 0, Token.expires_in > 0)
                )
            )
            live = [row for row in rows if not row.is_expired()]
            for row in live:
                row.issued_at = now - row.expires_in - 1
        return len(live)

    # -- keys and secrets ----------------------------------------------------------------

    def signing_key(self) -> RSAKey:
        """The RS256 key for id_tokens: generated once, then kept in the database."""
        with self.db.write() as conn:
            pem = self.db.get_meta(conn, "jwk_private_pem")
            if pem is None:
                key = RSAKey.generate_key(2048, private=True)
                pem = key.as_pem(private=True).decode()
                self.db.set_meta(conn, "jwk_private_pem", pem)
        return RSAKey.import_key(pem)

    def secret(self, name: str) -> str:
        """A random secret (e.g. the session cookie key) kept across restarts."""
        with self.db.write() as conn:
            value = self.db.get_meta(conn, name)
            if value is None:
                value = secrets.token_urlsafe(32)
                self.db.set_meta(conn, name, value)
        return value
