"""The one reader of a JWS's header and claims before its signature is checked (CDS Hooks
calls, partner client assertions)."""

from __future__ import annotations

import pytest
from joserfc import jws as jose_jws
from joserfc import jwt
from joserfc.jwk import ECKey

from smartapp.web import jws


def test_header_and_claims_of_a_signed_jwt():
    key = ECKey.generate_key("P-384")
    token = jwt.encode({"alg": "ES384", "kid": "k1"}, {"iss": "ehr"}, key, algorithms=["ES384"])
    header, claims = jws.unverified(token)
    assert (header["kid"], header["alg"], claims) == ("k1", "ES384", {"iss": "ehr"})


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "x" * 50 + ".." + "y"])
def test_anything_else_is_a_value_error(token):
    with pytest.raises(ValueError, match="not a signed JWT"):
        jws.unverified(token)


def test_claims_must_be_a_json_object():
    key = ECKey.generate_key("P-384")
    token = jose_jws.serialize_compact({"alg": "ES384"}, b"[1, 2]", key, algorithms=["ES384"])
    with pytest.raises(ValueError, match="not a signed JWT"):
        jws.unverified(token)
