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


def _jwk(key, **extra) -> dict:
    return key.as_dict(private=False) | extra


def test_the_key_with_the_kid_that_verifies_the_alg():
    ec = ECKey.generate_key("P-384")
    other = ECKey.generate_key("P-256")
    keys = [_jwk(other, kid="k1"), _jwk(ec, kid="k1", use="sig"), _jwk(ec, kid="k2")]
    found = jws.signing_key(keys, "k1", "ES384")
    assert found.as_dict(private=False)["x"] == ec.as_dict(private=False)["x"]


def test_an_unknown_kid_or_a_key_that_cannot_verify_is_refused():
    ec = ECKey.generate_key("P-384")
    with pytest.raises(jws.NoSuchKid):
        jws.signing_key([_jwk(ec, kid="k1")], "k9", "ES384")
    with pytest.raises(jws.KeyCannotVerify):  # an EC key for RS384
        jws.signing_key([_jwk(ec, kid="k1")], "k1", "RS384")
    with pytest.raises(jws.KeyCannotVerify):  # the key says it is for encryption
        jws.signing_key([_jwk(ec, kid="k1", use="enc")], "k1", "ES384")
    with pytest.raises(jws.KeyCannotVerify):  # the key names another algorithm
        jws.signing_key([_jwk(ec, kid="k1", alg="ES256")], "k1", "ES384")
