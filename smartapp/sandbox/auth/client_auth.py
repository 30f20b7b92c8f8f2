"""SMART asymmetric client authentication (`private_key_jwt`) on authlib's RFC 7523 machinery.

The client proves itself with a JWT signed by one of its keys, as SMART App Launch 2
("client-confidential-asymmetric") and Inferno's SMART suite require:
- `client_assertion_type` is `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`;
- header: `alg` RS384 or ES384, `kid` present and found in the client's JWKS (the inline
  `jwks`, or `jwks_uri` fetched on every token request so key rotation just works),
  `typ` JWT when present;
- claims: `iss` = `sub` = client_id, `aud` = the token endpoint URL, `exp` present and at
  most 5 minutes ahead, `jti` present and never seen before.
Each failure is `invalid_client`, HTTP 401, with an `error_description` naming the check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from smartapp.sandbox.auth.models import OAuthClient

log = logging.getLogger(__name__)

ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME_S = 300
CLOCK_SKEW_S = 5
JWKS_FETCH_TIMEOUT_S = 5
#: alg -> (key class, EC curve) of the key that can verify it.
_KEY_TYPES: dict[str, tuple[type, str | None]] = {
    "RS384": (RSAKey, None),
    "ES384": (ECKey, "P-384"),
}


def refuse(description: str) -> InvalidClientError:
    """invalid_client with HTTP 401."""
    return InvalidClientError(description=description, status_code=401)


class JtiRegistry:
    """The (client_id, jti) pairs already used, for the life of the process (replay guard)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()

    def first_use(self, client_id: str, jti: str) -> bool:
        """Record the pair; False when it was seen before."""
        with self._lock:
            if (client_id, jti) in self._seen:
                return False
            self._seen.add((client_id, jti))
            return True


def fetch_jwks(url: str) -> dict:
    """GET a JWKS document (no cache: a rotated key is seen at once)."""
    try:
        response = requests.get(
            url, timeout=JWKS_FETCH_TIMEOUT_S, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise refuse(f"The client's jwks_uri {url} could not be read: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise refuse(f"The client's jwks_uri {url} did not return a JWK Set")
    return document


class SmartPrivateKeyJWT(JWTBearerClientAssertion):
    """authlib's JWT client assertion, with SMART's algorithms, header and claim rules."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(
        self,
        token_url: str,
        jti_registry: JtiRegistry | None = None,
        fetch: Callable[[str], dict] = fetch_jwks,
    ) -> None:
        super().__init__(validate_jti=True, leeway=CLOCK_SKEW_S)
        self.token_endpoint = token_url
        self.jti_registry = jti_registry or JtiRegistry()
        self.fetch = fetch

    def __call__(self, query_client: Callable, request: Any) -> OAuthClient | None:
        form = request.form
        assertion = form.get("client_assertion")
        assertion_type = form.get("client_assertion_type")
        if not assertion and not assertion_type:
            return None  # not this method: the next one is tried
        try:
            if assertion_type != ASSERTION_TYPE:
                raise refuse(f"client_assertion_type must be {ASSERTION_TYPE}")
            if not assertion:
                raise refuse("client_assertion is missing")
            client = super().__call__(query_client, request)
            if client is not None and client.revoked:
                raise refuse(f"The client {client.client_id} is revoked")
            form_client = form.get("client_id")
            if client is not None and form_client and form_client != client.get_client_id():
                raise refuse("client_id does not match the client assertion's sub")
            return client
        except InvalidClientError as error:
            error.status_code = 401  # authlib's own checks default to 400
            raise

    def get_audiences(self) -> list[str]:
        return [self.token_endpoint]

    def extract_assertion(self, assertion: str) -> tuple[dict, dict]:
        """Header and (unverified) claims; the header rules are checked here."""
        headers, claims = super().extract_assertion(assertion)
        alg = headers.get("alg")
        if alg not in ALGORITHMS:
            raise refuse(f"client_assertion alg must be RS384 or ES384 (got {alg!r})")
        if not headers.get("kid"):
            raise refuse("client_assertion header has no kid")
        if "typ" in headers and str(headers["typ"]).upper() != "JWT":
            raise refuse(f"client_assertion typ must be JWT (got {headers['typ']!r})")
        if claims.get("iss") != claims.get("sub"):
            raise refuse("client_assertion iss and sub must both be the client_id")
        return headers, claims

    def resolve_client_public_key(self, client: OAuthClient) -> Callable[[Any], Any]:
        """A key resolver: the client's key whose kid is the assertion's."""
        if client.token_endpoint_auth_method != self.CLIENT_AUTH_METHOD:
            raise refuse(
                f"The client {client.client_id} is registered for "
                f"{client.token_endpoint_auth_method}, not private_key_jwt"
            )

        def resolve(token: Any) -> RSAKey | ECKey:
            headers = token.headers()
            return self.client_key(client, headers["kid"], headers["alg"])

        return resolve

    def client_key(self, client: OAuthClient, kid: str, alg: str) -> RSAKey | ECKey:
        """The client's public key `kid`, fit for `alg` (refusals name what is wrong)."""
        documents = []
        if client.jwks:
            documents.append(client.jwks)
        if client.jwks_uri:
            documents.append(self.fetch(client.jwks_uri))
        candidates = [k for doc in documents for k in doc["keys"] if isinstance(k, dict)]
        matching = [k for k in candidates if k.get("kid") == kid]
        if not matching:
            raise refuse(f"No key with kid {kid!r} in the client's JWKS")
        if kid in client.revoked_kids:
            raise refuse(f"The client's key {kid!r} is revoked")
        key_type, curve = _KEY_TYPES[alg]
        for data in matching:
            if data.get("alg") not in (None, alg) or data.get("use") not in (None, "sig"):
                continue
            try:
                key = KeySet.import_key_set({"keys": [data]}).keys[0]
            except (JoseError, ValueError, TypeError):
                continue
            if not isinstance(key, RSAKey | ECKey):  # the only key types _KEY_TYPES names
                continue
            if isinstance(key, key_type) and (curve is None or data.get("crv") == curve):
                return key
        raise refuse(f"The client's key {kid!r} cannot verify {alg} (wrong kty, crv, alg or use)")

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict:
        """Signature with RS384/ES384 only, then the claim checks."""
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ALGORITHMS))
        except JoseError as error:
            log.debug("client assertion refused: %r", error)
            raise refuse(f"client_assertion signature is invalid ({error.error})") from None
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: dict) -> None:
        now = time.time()
        client_id = claims.get("sub")
        if not client_id or claims.get("iss") != client_id:
            raise refuse("client_assertion iss and sub must both be the client_id")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.token_endpoint not in audiences:
            raise refuse(
                f"client_assertion aud must be the token endpoint {self.token_endpoint} "
                f"(got {aud!r})"
            )
        exp = claims.get("exp")
        if exp is None:
            raise refuse("client_assertion has no exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise refuse("client_assertion exp must be a number")
        if exp < now - CLOCK_SKEW_S:
            raise refuse("client_assertion has expired")
        if exp > now + MAX_ASSERTION_LIFETIME_S + CLOCK_SKEW_S:
            raise refuse("client_assertion exp is more than 5 minutes in the future")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + CLOCK_SKEW_S:
            raise refuse("client_assertion is not valid yet (nbf)")
        jti = claims.get("jti")
        if not jti or not isinstance(jti, str):
            raise refuse("client_assertion has no jti")
        if not self.validate_jti(claims, jti):
            raise refuse("client_assertion jti was used before (replay)")

    def validate_jti(self, claims: dict, jti: str) -> bool:
        return self.jti_registry.first_use(str(claims["sub"]), jti)
