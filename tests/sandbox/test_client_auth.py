"""Token endpoint client authentication: public, client_secret_basic, private_key_jwt.

private_key_jwt clients prove themselves with an RS384 or ES384 signed JWT; their public keys
come from a JWKS served over HTTP by a tiny local server (RS384 client, so key rotation can be
shown) or inline in the registration (ES384 client).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from authlib.oauth2.rfc7523 import private_key_jwt_sign
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from smartapp.sandbox import SandboxClient
from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests.sandbox.conftest import (
    CLIENT_ID,
    CONFIDENTIAL_ID,
    CONFIDENTIAL_SECRET,
    LAUNCH_URL,
    REDIRECT_URI,
    RunningSandbox,
    start_sandbox,
)

RS_CLIENT = "handoff-rs384"
ES_CLIENT = "handoff-es384"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "launch openid fhirUser patient/*.rs offline_access"


@dataclass
class JwksServer:
    """A tiny WSGI JWKS endpoint whose key list a test can change (rotation)."""

    keys: list[dict] = field(default_factory=list)
    hits: int = 0

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        self.hits += 1
        body = json.dumps({"keys": self.keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


@dataclass
class Keys:
    rs: RSAKey
    es: ECKey
    jwks: JwksServer
    jwks_handle: ServerHandle


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    rs = RSAKey.generate_key(2048, parameters={"kid": "rs-1"}, private=True)
    es = ECKey.generate_key("P-384", parameters={"kid": "es-1"}, private=True)
    server = JwksServer(keys=[{**rs.as_dict(private=False), "alg": "RS384", "use": "sig"}])
    handle = serve_in_thread(server, port=reserve_port())
    yield Keys(rs, es, server, handle)
    handle.stop()


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[RunningSandbox]:
    clients = (
        SandboxClient(
            RS_CLIENT,
            [REDIRECT_URI],
            LAUNCH_URL,
            name="Handoff (RS384, jwks_uri)",
            auth_method="private_key_jwt",
            jwks_uri=f"{keys.jwks_handle.url}/.well-known/jwks.json",
        ),
        SandboxClient(
            ES_CLIENT,
            [REDIRECT_URI],
            LAUNCH_URL,
            name="Handoff (ES384, inline jwks)",
            auth_method="private_key_jwt",
            jwks={"keys": [keys.es.as_dict(private=False)]},
        ),
    )
    running = start_sandbox(tmp_path_factory.mktemp("client-auth"), extra_clients=clients)
    yield running
    running.handle.stop()


def assertion(
    key: RSAKey | ECKey | OctKey,
    token_url: str,
    client_id: str = RS_CLIENT,
    alg: str = "RS384",
    header: dict | None = None,
    **claims: object,
) -> str:
    """A client assertion; `header`/`claims` override the defaults (None drops a field)."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(16),
    }
    body.update(claims)
    head = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    head.update(header or {})
    return jwt.encode(
        {k: v for k, v in head.items() if v is not None},
        {k: v for k, v in body.items() if v is not None},
        key,
        algorithms=[alg],
    )


def exchange(ehr: RunningSandbox, code: str, verifier: str, signed: str) -> requests.Response:
    return requests.post(
        ehr.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed,
        },
        timeout=10,
    )


def refused(response: requests.Response, words: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    assert words in body["error_description"], body["error_description"]


def test_discovery_advertises_the_three_auth_methods(ehr: RunningSandbox) -> None:
    config = ehr.smart_config()
    assert config["token_endpoint_auth_methods_supported"] == [
        "private_key_jwt",
        "client_secret_basic",
        "none",
    ]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
    } <= set(config["capabilities"])


def test_public_client_needs_no_secret_but_must_not_claim_one(ehr: RunningSandbox) -> None:
    code, verifier = ehr.code("P01-pt", SCOPE)
    ok = ehr.exchange(code, verifier)
    assert ok.status_code == 200, ok.text
    assert ok.json()["patient"] == "P01-pt"
    # A confidential client cannot pass itself off as public (no credentials at all).
    code, verifier = ehr.code("P01-pt", SCOPE, client_id=CONFIDENTIAL_ID)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": CONFIDENTIAL_ID,
    }
    anonymous = requests.post(ehr.token_url, data=form, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"


def test_client_secret_basic_right_and_wrong_secret(ehr: RunningSandbox) -> None:
    code, verifier = ehr.code("P06-pt", SCOPE, client_id=CONFIDENTIAL_ID)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    wrong = requests.post(ehr.token_url, data=form, auth=(CONFIDENTIAL_ID, "nope"), timeout=10)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    # The secret in the form body (client_secret_post) is not this client's registered method.
    posted = requests.post(
        ehr.token_url,
        data={**form, "client_id": CONFIDENTIAL_ID, "client_secret": CONFIDENTIAL_SECRET},
        timeout=10,
    )
    assert posted.status_code == 401
    right = requests.post(
        ehr.token_url, data=form, auth=(CONFIDENTIAL_ID, CONFIDENTIAL_SECRET), timeout=10
    )
    assert right.status_code == 200, right.text
    assert right.json()["patient"] == "P06-pt"


def test_private_key_jwt_rs384_from_jwks_uri_with_authlib_signer(
    ehr: RunningSandbox, keys: Keys
) -> None:
    code, verifier = ehr.code("P02-pt", SCOPE, client_id=RS_CLIENT)
    hits = keys.jwks.hits
    # authlib's own client-side signer (what an app using authlib's PrivateKeyJWT sends).
    signed = private_key_jwt_sign(
        keys.rs, RS_CLIENT, ehr.token_url, alg="RS384", header={"kid": "rs-1"}, expires_in=300
    )
    response = exchange(ehr, code, verifier, signed)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["patient"] == "P02-pt"
    assert keys.jwks.hits > hits  # the JWKS was fetched over HTTP
    # Refresh authenticates the same way.
    refreshed = requests.post(
        ehr.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys.rs, ehr.token_url),
        },
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["patient"] == "P02-pt"
    # ...and not without the assertion.
    bare = requests.post(
        ehr.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refreshed.json()["refresh_token"],
            "client_id": RS_CLIENT,
        },
        timeout=10,
    )
    assert bare.status_code == 401
    assert bare.json()["error"] == "invalid_client"


def test_private_key_jwt_es384_from_inline_jwks(ehr: RunningSandbox, keys: Keys) -> None:
    code, verifier = ehr.code("P03-pt", SCOPE, client_id=ES_CLIENT)
    signed = assertion(keys.es, ehr.token_url, client_id=ES_CLIENT, alg="ES384")
    response = exchange(ehr, code, verifier, signed)
    assert response.status_code == 200, response.text
    assert response.json()["patient"] == "P03-pt"


def test_key_rotation_on_the_jwks_uri_is_seen_at_once(ehr: RunningSandbox, keys: Keys) -> None:
    new = RSAKey.generate_key(2048, parameters={"kid": "rs-2"}, private=True)
    code, verifier = ehr.code("P02-pt", SCOPE, client_id=RS_CLIENT)
    refused(exchange(ehr, code, verifier, assertion(new, ehr.token_url)), "'rs-2'")
    old_keys = list(keys.jwks.keys)
    keys.jwks.keys = [new.as_dict(private=False)]
    try:
        refused(exchange(ehr, code, verifier, assertion(keys.rs, ehr.token_url)), "'rs-1'")
        response = exchange(ehr, code, verifier, assertion(new, ehr.token_url))
        assert response.status_code == 200, response.text
    finally:
        keys.jwks.keys = old_keys


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("wrong aud", "aud must be the token endpoint"),
        ("aud is the FHIR base", "aud must be the token endpoint"),
        ("exp too far", "more than 5 minutes"),
        ("expired", "expired"),
        ("no exp", "no exp"),
        ("missing kid", "no kid"),
        ("unknown kid", "No key with kid 'nobody'"),
        ("alg HS256", "RS384 or ES384"),
        ("alg RS256", "RS384 or ES384"),
        ("typ not JWT", "typ must be JWT"),
        ("iss not sub", "iss and sub"),
        ("no jti", "no jti"),
        ("signed by another key", "signature is invalid"),
        ("ES key for RS384 kid", "cannot verify"),
        ("unregistered client", "does not exist"),
        ("client_secret_basic client", "not private_key_jwt"),
    ],
)
def test_private_key_jwt_failures_are_invalid_client_401(
    ehr: RunningSandbox, keys: Keys, case: str, words: str
) -> None:
    url = ehr.token_url
    now = int(time.time())
    other = RSAKey.generate_key(2048, parameters={"kid": "rs-1"}, private=True)
    signed = {
        "wrong aud": lambda: assertion(keys.rs, url, aud="https://elsewhere.example/token"),
        "aud is the FHIR base": lambda: assertion(keys.rs, url, aud=ehr.fhir),
        "exp too far": lambda: assertion(keys.rs, url, exp=now + 600),
        "expired": lambda: assertion(keys.rs, url, exp=now - 120),
        "no exp": lambda: assertion(keys.rs, url, exp=None),
        "missing kid": lambda: assertion(keys.rs, url, header={"kid": None}),
        "unknown kid": lambda: assertion(keys.rs, url, header={"kid": "nobody"}),
        "alg HS256": lambda: assertion(
            OctKey.import_key(secrets.token_bytes(32), {"kid": "rs-1"}), url, alg="HS256"
        ),
        "alg RS256": lambda: assertion(keys.rs, url, alg="RS256"),
        "typ not JWT": lambda: assertion(keys.rs, url, header={"typ": "at+jwt"}),
        "iss not sub": lambda: assertion(keys.rs, url, iss=CLIENT_ID),
        "no jti": lambda: assertion(keys.rs, url, jti=None),
        "signed by another key": lambda: assertion(other, url),
        "ES key for RS384 kid": lambda: assertion(
            keys.es, url, alg="ES384", header={"kid": "rs-1"}
        ),
        "unregistered client": lambda: assertion(keys.rs, url, client_id="nobody"),
        "client_secret_basic client": lambda: assertion(keys.rs, url, client_id=CONFIDENTIAL_ID),
    }[case]()
    code, verifier = ehr.code("P01-pt", SCOPE, client_id=RS_CLIENT)
    refused(exchange(ehr, code, verifier, signed), words)
    # The code is still good for the real client: a refused assertion consumed nothing.
    ok = exchange(ehr, code, verifier, assertion(keys.rs, url))
    assert ok.status_code == 200, ok.text


def test_reused_jti_is_refused(ehr: RunningSandbox, keys: Keys) -> None:
    signed = assertion(keys.rs, ehr.token_url)
    code, verifier = ehr.code("P05-pt", SCOPE, client_id=RS_CLIENT)
    assert exchange(ehr, code, verifier, signed).status_code == 200
    code, verifier = ehr.code("P05-pt", SCOPE, client_id=RS_CLIENT)
    refused(exchange(ehr, code, verifier, signed), "jti was used before")
    # Same jti in a freshly signed assertion: still a replay.
    jti = json.loads(base64.urlsafe_b64decode(signed.split(".")[1] + "=="))["jti"]
    refused(exchange(ehr, code, verifier, assertion(keys.rs, ehr.token_url, jti=jti)), "jti")


def test_assertion_type_and_client_id_must_match(ehr: RunningSandbox, keys: Keys) -> None:
    code, verifier = ehr.code("P01-pt", SCOPE, client_id=RS_CLIENT)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    signed = assertion(keys.rs, ehr.token_url)
    wrong_type = requests.post(
        ehr.token_url,
        data={**form, "client_assertion_type": "urn:bogus", "client_assertion": signed},
        timeout=10,
    )
    refused(wrong_type, "client_assertion_type must be")
    mismatch = requests.post(
        ehr.token_url,
        data={
            **form,
            "client_id": ES_CLIENT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(keys.rs, ehr.token_url),
        },
        timeout=10,
    )
    refused(mismatch, "client_id does not match")
    garbage = requests.post(
        ehr.token_url,
        data={**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": "a.b.c"},
        timeout=10,
    )
    assert garbage.status_code == 401
    assert garbage.json()["error"] == "invalid_client"


def test_sandbox_client_validates_its_registration() -> None:
    with pytest.raises(ValueError, match="jwks_uri or jwks"):
        SandboxClient("x", [REDIRECT_URI], LAUNCH_URL, auth_method="private_key_jwt")
    with pytest.raises(ValueError, match="client_secret"):
        SandboxClient("x", [REDIRECT_URI], LAUNCH_URL, auth_method="client_secret_basic")
    with pytest.raises(ValueError, match="auth_method"):
        SandboxClient("x", [REDIRECT_URI], LAUNCH_URL, auth_method="tls_client_auth")
