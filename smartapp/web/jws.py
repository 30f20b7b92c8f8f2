"""A client's signed JWT before its signature is checked: its header and claims (which
issuer and key to check it with), the client's key set and the key that verifies it. joserfc
parses and imports; callers turn the ValueErrors into their protocol's refusal (a CDS Hooks
401, an OAuth invalid_client)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import requests
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey


def unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS whose claims are a JSON object; ValueError if not."""
    try:
        parsed = jws.extract_compact(token.encode())
        claims = json.loads(parsed.payload)
    except (JoseError, ValueError, UnicodeError) as error:
        raise ValueError("not a signed JWT") from error
    header = parsed.headers()
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise ValueError("not a signed JWT")
    return header, claims


#: The signing algorithms Handoff accepts from clients, with their key type and curve.
KEY_TYPES: dict[str, tuple[type, str | None]] = {
    "RS384": (RSAKey, None),
    "ES384": (ECKey, "P-384"),
}


class KeySetUnreadable(ValueError):
    """A client's JWKS URL did not answer; the message names the error's kind."""


class NotAKeySet(ValueError):
    """A client's JWKS URL answered something other than a JWK Set."""


class NoSuchKid(ValueError):
    """No key of the client's set carries the JWT's `kid`."""


class KeyCannotVerify(ValueError):
    """The client's keys with the JWT's `kid` cannot verify its `alg`."""


def fetch_key_set(url: str, timeout: float) -> dict:
    """GET a client's JWK Set (KeySetUnreadable, NotAKeySet)."""
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise KeySetUnreadable(error.__class__.__name__) from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise NotAKeySet(url)
    return document


def signing_key(keys: Iterable[object], kid: str, alg: str) -> RSAKey | ECKey:
    """The key among `keys` (JWKs as dicts) with `kid` that verifies `alg` (one of
    KEY_TYPES): its `alg` and `use` allow it and its type and curve fit (NoSuchKid,
    KeyCannotVerify)."""
    matching = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
    if not matching:
        raise NoSuchKid(kid)
    key_type, curve = KEY_TYPES[alg]
    for data in matching:
        if data.get("alg") not in (None, alg) or data.get("use") not in (None, "sig"):
            continue
        try:
            key = KeySet.import_key_set({"keys": [data]}).keys[0]
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, key_type) and (curve is None or data.get("crv") == curve):
            return key  # type: ignore[return-value]
    raise KeyCannotVerify(kid)
