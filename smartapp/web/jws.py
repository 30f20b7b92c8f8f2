"""The header and claims of a compact JWS before its signature is checked: which issuer and
key to check it with. joserfc parses it; callers turn a ValueError into their protocol's
refusal (a CDS Hooks 401, an OAuth invalid_client)."""

from __future__ import annotations

import json

from joserfc import jws
from joserfc.errors import JoseError


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
