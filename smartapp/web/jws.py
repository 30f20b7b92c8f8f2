"""A client's signed JWT before its signature is checked: its header and claims (which
issuer and key to check it with), the client's key set and the key that verifies it. joserfc
parses and imports; callers turn the ValueErrors into their protocol's refusal (a CDS Hooks
401, an OAuth invalid_client)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


@dataclass
class JwksCache:
    """Key sets by URL, kept `ttl` seconds; a kid the kept set lacks fetches it again (at most
    once every `refetch_after` seconds per URL), so a rotation is seen without a fetch per use.
    `fetch` reads a key set (or the one given to `keys`); `ttl` 0 keeps nothing."""

    fetch: Callable[[str], dict] | None = None
    ttl: float = 300.0
    refetch_after: float = 30.0
    _entries: dict[str, tuple[float, dict]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self, url: str, kid: str | None, fetch: Callable[[str], dict] | None = None) -> dict:
        """The key set at `url` that names `kid` (None: any kept set will do)."""
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(url)
        if found is not None and self._answers(found, now, kid):
            return found[1]
        read = fetch or self.fetch
        if read is None:
            raise TypeError("JwksCache.keys needs a fetch")
        document = read(url)
        if self.ttl > 0:
            with self._lock:
                self._entries[url] = (now, document)
        return document

    def _answers(self, found: tuple[float, dict], now: float, kid: str | None) -> bool:
        """A kept set still answers: not too old, and it has the kid or was fetched just now
        (then the kid is not there: asked again only after `refetch_after`)."""
        age = now - found[0]
        return age < self.ttl and (names_kid(found[1], kid) or age < self.refetch_after)


def names_kid(document: dict, kid: str | None) -> bool:
    """Whether a key set holds a key with this kid (any set, for no kid)."""
    keys = document.get("keys")
    if kid is None or not isinstance(keys, list):
        return kid is None
    return any(isinstance(k, dict) and k.get("kid") == kid for k in keys)
