"""The CDS client's JWT, checked on every call before anything else is read (CDS Hooks 2.0,
"Trusting CDS Clients"): `Authorization: Bearer <JWT>` signed with one of the client's keys
(ES384 or RS384, as its file allows; never `none` or a symmetric algorithm), header `kid` and
`typ` JWT; claims `iss` a trusted client's issuer exactly, `aud` the exact URL of the service
being called, `exp` not past and at most CDS_JWT_MAX_SECONDS after `iat`, `iat` not in the
future, and a `jti` never used before by that client (a database table: a replay is refused
whichever process sees it). A refusal is `Refused` (401) naming the check; no patient data is
read before this passes, and no token is ever logged. Flask-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartapp.cdshooks.clients import CdsClient, CdsClients
from smartapp.cdshooks.store import CdsJwtUse
from smartapp.cdshooks.writer import writer_for
from smartapp.db import Database
from smartapp.web import jws

# Built once: a Core INSERT with the values given at execution (no ORM bulk path, and no new
# statement, cache key and compile lookup per call).
_RECORD_JTI = insert(CdsJwtUse.__table__)  # type: ignore[arg-type]

log = logging.getLogger("handoff.cdshooks.security")

CLOCK_SKEW_SECONDS = 5
JWKS_TIMEOUT_SECONDS = 5
#: How often a process deletes the JWT ids whose JWTs have expired.
SWEEP_SECONDS = 60.0


class Refused(Exception):
    """The call is not from a trusted CDS client (401); the message names the check."""


def fetch_jwks(url: str) -> dict:
    """GET a client's JWK Set."""
    try:
        return jws.fetch_key_set(url, JWKS_TIMEOUT_SECONDS)
    except jws.NotAKeySet:
        raise Refused("the client's jwks_url did not return a JWK Set") from None
    except jws.KeySetUnreadable as error:
        raise Refused(f"the client's JWKS could not be read: {error}") from None


def _unverified(token: str) -> tuple[dict, dict]:
    """Header and claims of a compact JWS, before its signature is checked."""
    try:
        return jws.unverified(token)
    except ValueError:
        raise Refused("the bearer token is not a signed JWT") from None


@dataclass
class Verifier:
    """Checks the JWT of one call against the trusted clients and the replay table."""

    db: Database
    clients: Callable[[], CdsClients]
    max_seconds: int = 300
    jwks: jws.JwksCache = field(default_factory=lambda: jws.JwksCache(fetch_jwks))
    # Keys imported from a key set, by (issuer, kid, alg), with the key set they came from.
    _imported: dict = field(default_factory=dict)
    _next_sweep: float = 0.0  # when this process next deletes expired JWT ids

    def verify(self, authorization: str | None, audience: str, now: float | None = None):
        """The trusted client of a call whose JWT passes every check; Refused otherwise."""
        moment = time.time() if now is None else now
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused("a Bearer JWT is needed (Authorization header)")
        header, unverified = _unverified(token.strip())
        issuer = unverified.get("iss")
        client = self.clients().by_issuer(issuer) if isinstance(issuer, str) else None
        if client is None:
            raise Refused("the JWT's issuer is not a trusted CDS client")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in client.algorithms:
            raise Refused(f"the JWT's alg must be one of {client.algorithms}")
        if not isinstance(kid, str) or not kid:
            raise Refused("the JWT header has no kid")
        if str(header.get("typ", "JWT")).upper() != "JWT":
            raise Refused("the JWT's typ must be JWT")
        key = self._key(client, kid, str(alg))
        try:
            claims = jwt.decode(token.strip(), key, algorithms=[str(alg)]).claims
        except JoseError as error:
            raise Refused(f"the JWT's signature is invalid ({error.error})") from None
        self._check_claims(claims, client, audience, moment)
        self._use_jti(client, str(claims["jti"]), float(claims["exp"]), moment)
        return client

    def _key(self, client: CdsClient, kid: str, alg: str) -> RSAKey | ECKey:
        document = client.jwks if client.jwks else self.jwks.keys(str(client.jwks_url), kid)
        cache_key = (client.issuer, kid, alg)
        cached = self._imported.get(cache_key)
        if cached is not None and cached[0] is document:  # the same key set as imported
            return cached[1]
        key = self._import(document, kid, alg)
        self._imported[cache_key] = (document, key)
        return key

    def _import(self, document: dict, kid: str, alg: str) -> RSAKey | ECKey:
        try:
            return jws.signing_key(document["keys"], kid, alg)
        except jws.NoSuchKid:
            raise Refused("no key with the JWT's kid in the client's JWKS") from None
        except jws.KeyCannotVerify:
            raise Refused(f"the client's key for the JWT's kid cannot verify {alg}") from None

    def _check_claims(self, claims: dict, client: CdsClient, audience: str, now: float) -> None:
        if claims.get("iss") != client.issuer:
            raise Refused("the JWT's iss changed under its signature")
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise Refused(f"the JWT's aud must be this service's URL {audience}")
        exp, iat = claims.get("exp"), claims.get("iat")
        for name, value in (("exp", exp), ("iat", iat)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Refused(f"the JWT has no {name} (a number)")
        assert isinstance(exp, int | float) and isinstance(iat, int | float)
        if exp < now - CLOCK_SKEW_SECONDS:
            raise Refused("the JWT has expired")
        if iat > now + CLOCK_SKEW_SECONDS:
            raise Refused("the JWT was issued in the future (iat)")
        if exp - iat > self.max_seconds:
            raise Refused(f"the JWT lives longer than {self.max_seconds} seconds (exp - iat)")
        jti = claims.get("jti")
        if not jti or not isinstance(jti, str) or len(jti) > 200:
            raise Refused("the JWT needs a jti (a string of at most 200 characters)")

    def _use_jti(self, client: CdsClient, jti: str, exp: float, now: float) -> None:
        """Record the jti until the JWT expires (committed before anything is read); a second
        use (in any process) is a replay, refused by the primary key. One INSERT (no ORM
        object); the expired rows go at most every SWEEP_SECONDS per process."""
        expires = datetime.fromtimestamp(exp + CLOCK_SKEW_SECONDS, UTC)
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_SECONDS

        def record(session: Session) -> None:
            if sweep:
                cutoff = datetime.fromtimestamp(now, UTC)
                session.execute(delete(CdsJwtUse).where(CdsJwtUse.expires_at < cutoff))
            values = {"issuer": client.issuer, "jti": jti, "expires_at": expires}
            session.execute(_RECORD_JTI, values)  # a replay fails here

        try:
            writer_for(self.db).run(record)
        except IntegrityError:
            log.warning("CDS call refused: a JWT id used before (client %s)", client.id)
            raise Refused("the JWT's jti was used before (replay)") from None
