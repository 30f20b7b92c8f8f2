"""SMART Backend Services on the sandbox: the client_credentials grant with private_key_jwt.

Real HTTP throughout: a backend client proves itself with an RS384 (JWKS by URL, served by a
tiny local server) or ES384 (JWKS by value) assertion, gets a short-lived token with the
system/ scopes it is registered for, and the FHIR API honours them across every patient.
Each refusal names its reason; a revoked client or key is refused at once.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from smartapp.sandbox import SandboxClient
from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests.sandbox.conftest import (
    CONFIDENTIAL_ID,
    CONFIDENTIAL_SECRET,
    LAUNCH_URL,
    REDIRECT_URI,
    RunningSandbox,
    start_sandbox,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RS_BACKEND = "backend-rs384"
ES_BACKEND = "backend-es384"
LAUNCH_ONLY = "launch-only-jwt"
SCOPES = ["system/Task.crus", "system/ServiceRequest.crus", "system/Provenance.c"]


class Jwks:
    """A WSGI JWKS document at any path."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"keys": self.keys}).encode()]


@dataclass
class Backend:
    ehr: RunningSandbox
    rs: RSAKey
    es: ECKey
    jwks: ServerHandle


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    rs = RSAKey.generate_key(2048, parameters={"kid": "rs-backend"}, private=True)
    es = ECKey.generate_key("P-384", parameters={"kid": "es-backend"}, private=True)
    jwks = serve_in_thread(
        Jwks([{**rs.as_dict(private=False), "alg": "RS384", "use": "sig"}]), port=reserve_port()
    )
    clients = (
        SandboxClient(
            RS_BACKEND,
            [],
            "",
            name="Backend (RS384, jwks_uri)",
            auth_method="private_key_jwt",
            jwks_uri=f"{jwks.url}/.well-known/jwks.json",
            backend_scopes=SCOPES,
        ),
        SandboxClient(
            ES_BACKEND,
            [],
            "",
            name="Backend (ES384, jwks by value)",
            auth_method="private_key_jwt",
            jwks={"keys": [es.as_dict(private=False)]},
            backend_scopes=["system/*.rs"],
        ),
        SandboxClient(
            LAUNCH_ONLY,
            [REDIRECT_URI],
            LAUNCH_URL,
            auth_method="private_key_jwt",
            jwks={"keys": [es.as_dict(private=False)]},
        ),
    )
    ehr = start_sandbox(
        tmp_path_factory.mktemp("backend"), extra_clients=clients, test_controls=True
    )
    yield Backend(ehr, rs, es, jwks)
    ehr.handle.stop()
    jwks.stop()


def assertion(
    key: RSAKey | ECKey, aud: str, client_id: str, header: dict | None = None, **claims: object
) -> str:
    """A client assertion (alg from the key type); `header`/`claims` override the defaults."""
    alg = "RS384" if isinstance(key, RSAKey) else "ES384"
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": int(time.time()) + 240,
        "jti": secrets.token_urlsafe(16),
    } | claims
    head = {"alg": alg, "kid": key.kid, "typ": "JWT"} | (header or {})
    return jwt.encode(head, body, key, algorithms=[alg])


def ask(ehr: RunningSandbox, signed: str | None, scope: str, **form: str) -> requests.Response:
    """POST a client_credentials request with `signed` as the client assertion."""
    data = {"grant_type": "client_credentials", "scope": scope} | form
    if signed is not None:
        data |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}
    return requests.post(ehr.token_url, data=data, timeout=10)


def rs_token(b: Backend, scope: str = "system/Task.rus system/ServiceRequest.u") -> dict:
    response = ask(b.ehr, assertion(b.rs, b.ehr.token_url, RS_BACKEND), scope)
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: requests.Response, words: str, error: str = "invalid_client") -> None:
    assert response.status_code == (401 if error == "invalid_client" else 400), response.text
    body = response.json()
    assert body["error"] == error
    assert words in body["error_description"], body["error_description"]


def test_discovery_advertises_backend_services(backend: Backend) -> None:
    config = backend.ehr.smart_config()
    assert "client_credentials" in config["grant_types_supported"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "system/*.rs" in config["scopes_supported"]
    assert "client-confidential-asymmetric" in config["capabilities"]


def test_rs384_with_jwks_by_url_gets_system_access(backend: Backend) -> None:
    token = rs_token(backend)
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "system/Task.rus system/ServiceRequest.u"
    assert token["expires_in"] == 300  # SMART's recommended five minutes
    assert "refresh_token" not in token and "patient" not in token
    api = backend.ehr.api(token)
    # Tasks of every patient: no launch patient limits a system/ grant.
    tasks = api.get(f"{backend.ehr.fhir}/Task", timeout=10)
    assert tasks.status_code == 200, tasks.text
    # Conditions were not granted.
    assert api.get(f"{backend.ehr.fhir}/Condition", timeout=10).status_code == 403


def test_system_scope_writes_any_patient(backend: Backend) -> None:
    ehr = backend.ehr
    token = rs_token(backend, "system/ServiceRequest.crus")
    order = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"text": "Referral to peer support"},
        "subject": {"reference": "Patient/P03-pt"},
    }
    created = ehr.api(token).post(f"{ehr.fhir}/ServiceRequest", json=order, timeout=10)
    assert created.status_code == 201, created.text
    server_id = created.json()["id"]
    updated = ehr.api(token).put(
        f"{ehr.fhir}/ServiceRequest/{server_id}",
        json=created.json() | {"status": "completed"},
        timeout=10,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "completed"


def test_es384_with_jwks_by_value(backend: Backend) -> None:
    ehr = backend.ehr
    response = ask(ehr, assertion(backend.es, ehr.token_url, ES_BACKEND), "system/Patient.rs")
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["scope"] == "system/Patient.rs"  # within system/*.rs
    patients = ehr.api(token).get(f"{ehr.fhir}/Patient", timeout=10)
    assert patients.status_code == 200 and patients.json()["total"] > 1
    # Read only: a write is refused.
    denied = ehr.api(token).put(
        f"{ehr.fhir}/Patient/P01-pt", json={"resourceType": "Patient", "id": "P01-pt"}, timeout=10
    )
    assert denied.status_code == 403


def test_replayed_jti_is_refused(backend: Backend) -> None:
    signed = assertion(backend.rs, backend.ehr.token_url, RS_BACKEND)
    assert ask(backend.ehr, signed, "system/Task.rs").status_code == 200
    refused(ask(backend.ehr, signed, "system/Task.rs"), "jti was used before")


def test_assertion_exp_more_than_five_minutes_ahead_is_refused(backend: Backend) -> None:
    far = int(time.time()) + 600
    signed = assertion(backend.rs, backend.ehr.token_url, RS_BACKEND, exp=far)
    refused(ask(backend.ehr, signed, "system/Task.rs"), "more than 5 minutes")


def test_expired_assertion_is_refused(backend: Backend) -> None:
    past = int(time.time()) - 60
    signed = assertion(backend.rs, backend.ehr.token_url, RS_BACKEND, exp=past)
    refused(ask(backend.ehr, signed, "system/Task.rs"), "expired")


def test_wrong_aud_is_refused(backend: Backend) -> None:
    signed = assertion(backend.rs, backend.ehr.fhir, RS_BACKEND)
    refused(ask(backend.ehr, signed, "system/Task.rs"), "aud must be the token endpoint")


def test_unknown_kid_is_refused(backend: Backend) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-registered"}, private=True)
    signed = assertion(stranger, backend.ehr.token_url, RS_BACKEND)
    refused(ask(backend.ehr, signed, "system/Task.rs"), "No key with kid 'not-registered'")


def test_signature_by_another_key_with_a_known_kid_is_refused(backend: Backend) -> None:
    forger = RSAKey.generate_key(2048, parameters={"kid": "rs-backend"}, private=True)
    signed = assertion(forger, backend.ehr.token_url, RS_BACKEND)
    refused(ask(backend.ehr, signed, "system/Task.rs"), "signature is invalid")


def test_unregistered_client_is_refused(backend: Backend) -> None:
    signed = assertion(backend.rs, backend.ehr.token_url, "nobody-registered-this")
    refused(ask(backend.ehr, signed, "system/Task.rs"), "does not exist")


def test_scope_not_registered_is_refused(backend: Backend) -> None:
    ehr = backend.ehr
    for scope, words in (
        ("system/Task.rs system/Condition.rs", "'system/Condition.rs' is not registered"),
        ("system/Provenance.rs", "'system/Provenance.rs' is not registered"),  # only .c
        ("patient/Task.rs", "system/ only"),
        ("", "scope is required"),
    ):
        signed = assertion(backend.rs, ehr.token_url, RS_BACKEND)
        refused(ask(ehr, signed, scope), words, error="invalid_scope")


def test_client_without_backend_registration_is_refused(backend: Backend) -> None:
    ehr = backend.ehr
    signed = assertion(backend.es, ehr.token_url, LAUNCH_ONLY)
    response = ask(ehr, signed, "system/Task.rs")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unauthorized_client"
    # A client secret is not enough for backend services: private_key_jwt only.
    basic = requests.post(
        ehr.token_url,
        data={"grant_type": "client_credentials", "scope": "system/Task.rs"},
        auth=(CONFIDENTIAL_ID, CONFIDENTIAL_SECRET),
        timeout=10,
    )
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client", basic.text
    # No assertion at all.
    refused(ask(ehr, None, "system/Task.rs", client_id=RS_BACKEND), "")


def test_backend_lifetime_is_apart_from_the_launch_tokens(backend: Backend) -> None:
    controls = f"{backend.ehr.base}/_sandbox"
    requests.post(f"{controls}/faults", json={"access_token_lifetime": 60}, timeout=10)
    try:
        assert rs_token(backend)["expires_in"] == 300
        shorter = requests.post(
            f"{controls}/backend-token-lifetime", json={"seconds": 2}, timeout=10
        )
        assert shorter.json() == {"seconds": 2}
        token = rs_token(backend)
        assert token["expires_in"] == 2
        api = backend.ehr.api(token)
        assert api.get(f"{backend.ehr.fhir}/Task", timeout=10).status_code == 200
        time.sleep(3)
        expired = api.get(f"{backend.ehr.fhir}/Task", timeout=10)
        assert expired.status_code == 401
    finally:
        requests.post(f"{controls}/faults", json={}, timeout=10)
        requests.post(f"{controls}/backend-token-lifetime", json={"seconds": 300}, timeout=10)


def test_runtime_registration_then_key_and_client_revocation(backend: Backend) -> None:
    ehr = backend.ehr
    controls = f"{ehr.base}/_sandbox"
    key = ECKey.generate_key("P-384", parameters={"kid": "runtime-1"}, private=True)
    other = ECKey.generate_key("P-384", parameters={"kid": "runtime-2"}, private=True)
    public = [k.as_dict(private=False) for k in (key, other)]
    bad = requests.post(
        f"{controls}/clients",
        json={"client_id": "rt", "auth_method": "none", "backend_scopes": ["system/Task.rs"]},
        timeout=10,
    )
    assert bad.status_code == 400 and "private_key_jwt" in bad.json()["error_description"]
    registered = requests.post(
        f"{controls}/clients",
        json={
            "client_id": "runtime-backend",
            "auth_method": "private_key_jwt",
            "jwks": {"keys": public},
            "backend_scopes": ["system/Task.rs"],
        },
        timeout=10,
    )
    assert registered.status_code == 200, registered.text
    token = ask(ehr, assertion(key, ehr.token_url, "runtime-backend"), "system/Task.rs")
    assert token.status_code == 200, token.text
    # The key is revoked: refused at once; the client's other key still works.
    assert requests.post(f"{controls}/clients/runtime-backend/keys/runtime-1/revoke", timeout=10).ok
    refused(
        ask(ehr, assertion(key, ehr.token_url, "runtime-backend"), "system/Task.rs"),
        "key 'runtime-1' is revoked",
    )
    assert ask(ehr, assertion(other, ehr.token_url, "runtime-backend"), "system/Task.rs").ok
    # The client is revoked: its token no longer opens the API, and no new token is given.
    api = ehr.api(token.json())
    assert api.get(f"{ehr.fhir}/Task", timeout=10).status_code == 200
    assert requests.post(f"{controls}/clients/runtime-backend/revoke", timeout=10).ok
    assert api.get(f"{ehr.fhir}/Task", timeout=10).status_code == 401
    refused(
        ask(ehr, assertion(other, ehr.token_url, "runtime-backend"), "system/Task.rs"),
        "is revoked",
    )
    assert requests.post(f"{controls}/clients/nobody/revoke", timeout=10).status_code == 404


def test_launch_grants_never_carry_system_scopes(backend: Backend) -> None:
    token = backend.ehr.token("P01-pt", "launch openid fhirUser patient/*.rs system/Task.rs")
    assert "system/Task.rs" not in token["scope"].split()
