"""Handoff's own authorization server for community partners: SMART Backend Services
(`client_credentials` with a `private_key_jwt` client assertion, RFC 7523 as SMART profiles it).

The partner's client signs a JWT with one of its keys (ES384 or RS384, as its partner file
allows): header `kid` naming a key of its JWKS (the file's `jwks`, or `jwks_uri` fetched on each
token request so a rotation just works); claims `iss` = `sub` = client_id, `aud` = Handoff's
token URL exactly, `exp` at most 5 minutes ahead, `jti` never used before (a database table, so
a replay is refused whichever process sees it). A revoked client, or a key id it revoked, is
refused, and so are the tokens already issued to it, on their next use.

Tokens are random, short-lived (PARTNER_TOKEN_SECONDS), kept only as their SHA-256. Each
refusal is an OAuth error naming the check (no token or assertion is ever logged). Flask-free.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from smartapp.db import Database
from smartapp.partners.models import PartnerAssertion, PartnerToken
from smartapp.partners.registry import Partner, Partners
from smartapp.web import jws

log = logging.getLogger("handoff.partners.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_SECONDS = 300
CLOCK_SKEW_SECONDS = 5
JWKS_TIMEOUT_SECONDS = 5


class AuthError(Exception):
    """An OAuth 2.0 error: `error` code, a description naming the check, the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def refuse(description: str) -> AuthError:
    return AuthError("invalid_client", description, 401)


@dataclass(frozen=True)
class Grant:
    """A valid partner token: whose, which scopes, earned with which key."""

    partner: Partner
    scopes: frozenset[str]
    kid: str

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def fetch_jwks(url: str) -> dict:
    """GET the client's JWK Set (no cache: a rotated or removed key is seen at once)."""
    try:
        return jws.fetch_key_set(url, JWKS_TIMEOUT_SECONDS)
    except jws.NotAKeySet:
        raise refuse("the client's jwks_uri did not return a JWK Set") from None
    except jws.KeySetUnreadable as error:
        raise refuse(f"the client's jwks_uri could not be read: {error}") from None


def _unverified(token: str) -> tuple[dict, dict]:
    """Header and claims of a compact JWS, before its signature is checked."""
    try:
        return jws.unverified(token)
    except ValueError:
        raise refuse("client_assertion is not a signed JWT") from None


@dataclass
class TokenServer:
    """The token endpoint's logic, for one token URL and the partners as they are now."""

    db: Database
    partners: Callable[[], Partners]
    token_url: str
    token_seconds: int = 300
    fetch: Callable[[str], dict] = fetch_jwks

    def issue(self, form: dict[str, str], now: datetime | None = None) -> dict[str, Any]:
        """The token response for a token request's form; AuthError when it is refused."""
        now = now or datetime.now(UTC)
        if form.get("grant_type") != "client_credentials":
            raise AuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise refuse(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        if not assertion:
            raise refuse("client_assertion is missing")
        partner, kid, claims = self.verify(assertion, now)
        if form.get("client_id") and form["client_id"] != claims["sub"]:
            raise refuse("client_id does not match the client assertion's sub")
        scopes = self._scopes(partner, form.get("scope") or "")
        self._use_jti(partner, str(claims["jti"]), float(claims["exp"]), now)
        token = secrets.token_urlsafe(32)
        client_id = partner.client.client_id if partner.client else ""
        with self.db.session() as session:
            session.execute(delete(PartnerToken).where(PartnerToken.expires_at < now))
            session.add(
                PartnerToken(
                    id=token_hash(token),
                    partner_id=partner.id,
                    client_id=client_id,
                    kid=kid,
                    scope=" ".join(scopes),
                    issued_at=now,
                    expires_at=now + timedelta(seconds=self.token_seconds),
                )
            )
        log.info("partner token issued to %s (key %s)", partner.id, kid)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_seconds,
            "scope": " ".join(scopes),
        }

    def verify(self, assertion: str, now: datetime) -> tuple[Partner, str, dict]:
        """The partner, key id and claims of a valid client assertion (signature, then the
        claims); AuthError naming the first check that fails."""
        header, unverified = _unverified(assertion)
        client_id = unverified.get("sub")
        if not client_id or unverified.get("iss") != client_id:
            raise refuse("client_assertion iss and sub must both be the client_id")
        partner = self.partners().by_client(str(client_id))
        if partner is None or partner.client is None:
            raise refuse(f"unknown client {str(client_id)[:100]!r}")
        client = partner.client
        if client.revoked:
            raise refuse("this client is revoked")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in client.algorithms:
            raise refuse(f"client_assertion alg must be one of {client.algorithms} (got {alg!r})")
        if not kid or not isinstance(kid, str):
            raise refuse("client_assertion header has no kid")
        if kid in client.revoked_kids:
            raise refuse(f"the key {kid!r} is revoked")
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise refuse("client_assertion typ must be JWT")
        key = self._key(partner, kid, str(alg))
        try:
            claims = jwt.decode(assertion, key, algorithms=[str(alg)]).claims
        except JoseError as error:
            raise refuse(f"client_assertion signature is invalid ({error.error})") from None
        self._check_claims(claims, client_id, now)
        return partner, kid, claims

    def _key(self, partner: Partner, kid: str, alg: str) -> RSAKey | ECKey:
        client = partner.client
        assert client is not None
        documents = [client.jwks] if client.jwks else []
        if client.jwks_uri:
            documents.append(self.fetch(client.jwks_uri))
        try:
            return jws.signing_key((k for d in documents for k in d["keys"]), kid, alg)
        except jws.NoSuchKid:
            raise refuse(f"no key with kid {kid[:100]!r} in the client's JWKS") from None
        except jws.KeyCannotVerify:
            raise refuse(f"the client's key {kid[:100]!r} cannot verify {alg}") from None

    def _check_claims(self, claims: dict, client_id: str, now: datetime) -> None:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise refuse("client_assertion iss and sub must both be the client_id")
        aud = claims.get("aud")
        if (aud if isinstance(aud, list) else [aud]) != [self.token_url]:
            raise refuse(f"client_assertion aud must be the token URL {self.token_url}")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise refuse("client_assertion has no exp (a number)")
        moment = now.timestamp()
        if exp < moment - CLOCK_SKEW_SECONDS:
            raise refuse("client_assertion has expired")
        if exp > moment + MAX_ASSERTION_SECONDS + CLOCK_SKEW_SECONDS:
            raise refuse("client_assertion exp is more than 5 minutes ahead")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > moment + CLOCK_SKEW_SECONDS:
            raise refuse("client_assertion is not valid yet (nbf)")
        jti = claims.get("jti")
        if not jti or not isinstance(jti, str) or len(jti) > 200:
            raise refuse("client_assertion needs a jti (a string of at most 200 characters)")

    def _scopes(self, partner: Partner, requested: str) -> list[str]:
        allowed = partner.client.scopes if partner.client else []
        asked = [s for s in requested.split() if s]
        granted = [s for s in asked if s in allowed]
        if not granted:
            raise AuthError("invalid_scope", f"ask for one or more of: {' '.join(allowed)}")
        return granted

    def _use_jti(self, partner: Partner, jti: str, exp: float, now: datetime) -> None:
        """Record the jti; a second use (in any process) is a replay and refused."""
        client_id = partner.client.client_id if partner.client else ""
        expires = datetime.fromtimestamp(exp + CLOCK_SKEW_SECONDS, UTC)
        try:
            with self.db.session() as session:
                session.execute(delete(PartnerAssertion).where(PartnerAssertion.expires_at < now))
                session.add(PartnerAssertion(client_id=client_id, jti=jti, expires_at=expires))
        except IntegrityError:
            raise refuse("client_assertion jti was used before (replay)") from None

    def authenticate(self, authorization: str | None, now: datetime | None = None) -> Grant:
        """The grant of a request's `Authorization: Bearer` token; AuthError (401) when it is
        missing, unknown, expired, or its client or key was revoked since."""
        now = now or datetime.now(UTC)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("invalid_token", "a Bearer token is needed", 401)
        with self.db.session() as session:
            row = session.get(PartnerToken, token_hash(token.strip()))
            found = (
                None
                if row is None
                else (row.partner_id, row.client_id, row.kid, row.scope, row.expires_at)
            )
        if found is None:
            raise AuthError("invalid_token", "unknown token", 401)
        partner_id, client_id, kid, scope, expires_at = found
        if (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)) <= now:
            raise AuthError("invalid_token", "the token has expired", 401)
        partner = self.partners().by_id(partner_id)
        client = partner.client if partner else None
        if partner is None or client is None or client.client_id != client_id or client.revoked:
            raise AuthError("invalid_token", "the client is revoked", 401)
        if kid in client.revoked_kids:
            raise AuthError("invalid_token", "the key this token was issued for is revoked", 401)
        return Grant(partner=partner, scopes=frozenset(scope.split()), kid=kid)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def smart_configuration(token_url: str, scopes: tuple[str, ...]) -> dict[str, Any]:
    """`/partner/.well-known/smart-configuration`: what a partner's backend client needs."""
    return {
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "scopes_supported": list(scopes),
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    }
