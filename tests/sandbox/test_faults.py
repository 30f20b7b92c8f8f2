"""Test controls over HTTP: fault switches, token expiry, the request log; 404 when disabled."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from tests.sandbox.conftest import (
    CLIENT_ID,
    CONFIDENTIAL_ID,
    CONFIDENTIAL_SECRET,
    REDIRECT_URI,
    RunningSandbox,
    pkce_pair,
    start_sandbox,
)

SCOPE = "launch openid fhirUser patient/*.rs offline_access"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp("faults"), test_controls=True)
    yield running
    running.handle.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "ehr" in request.fixturenames:
        ehr: RunningSandbox = request.getfixturevalue("ehr")
        assert requests.post(f"{ehr.base}/_sandbox/faults", json={}, timeout=10).ok


def set_faults(ehr: RunningSandbox, **faults: object) -> dict:
    response = requests.post(f"{ehr.base}/_sandbox/faults", json=faults, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def id_token_claims(ehr: RunningSandbox, token: dict) -> tuple[dict, dict]:
    """(header, claims) of the id_token, its signature verified with the sandbox JWKS."""
    jwks = KeySet.import_key_set(requests.get(f"{ehr.base}/auth/jwks", timeout=10).json())
    decoded = jwt.decode(token["id_token"], jwks, algorithms=["RS256"])
    return decoded.header, decoded.claims


def refresh(ehr: RunningSandbox, token: dict) -> requests.Response:
    return requests.post(
        ehr.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": CLIENT_ID,
        },
        timeout=10,
    )


# -- the switchboard itself ------------------------------------------------------------------


def test_controls_are_404_unless_enabled(sandbox: RunningSandbox) -> None:
    base = sandbox.base
    assert requests.get(f"{base}/_sandbox/faults", timeout=10).status_code == 404
    posted = requests.post(f"{base}/_sandbox/faults", json={"deny_consent": True}, timeout=10)
    assert posted.status_code == 404
    assert requests.post(f"{base}/_sandbox/expire-tokens", timeout=10).status_code == 404
    assert requests.get(f"{base}/_sandbox/requests", timeout=10).status_code == 404
    assert requests.delete(f"{base}/_sandbox/requests", timeout=10).status_code == 404
    # ...and the posted fault had no effect.
    assert "code" in parse_qs(urlsplit(_authorize(sandbox).headers["Location"]).query)


def test_faults_are_replaced_read_back_and_cleared(ehr: RunningSandbox) -> None:
    url = f"{ehr.base}/_sandbox/faults"
    assert requests.get(url, timeout=10).json() == {}
    assert set_faults(ehr, deny_consent=True, narrow_scopes=["openid"]) == {
        "deny_consent": True,
        "narrow_scopes": ["openid"],
    }
    assert set_faults(ehr, refuse_refresh=True) == {"refuse_refresh": True}  # replaced
    assert requests.get(url, timeout=10).json() == {"refuse_refresh": True}
    assert set_faults(ehr) == {}
    assert requests.get(url, timeout=10).json() == {}


@pytest.mark.parametrize(
    "body",
    [
        {"no_such_fault": True},
        {"deny_consent": "yes"},
        {"narrow_scopes": "openid"},
        {"access_token_lifetime": 0},
        {"access_token_lifetime": True},
        ["deny_consent"],
    ],
)
def test_invalid_fault_sets_are_refused_and_change_nothing(
    ehr: RunningSandbox, body: object
) -> None:
    set_faults(ehr, omit_patient=True)
    response = requests.post(f"{ehr.base}/_sandbox/faults", json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_faults"
    assert requests.get(f"{ehr.base}/_sandbox/faults", timeout=10).json() == {"omit_patient": True}


# -- authorization -------------------------------------------------------------------------------


def _authorize(ehr: RunningSandbox, scope: str = SCOPE) -> requests.Response:
    launched = ehr.launch("P01-pt")
    _, challenge = pkce_pair()
    return ehr.authorize(**ehr.authorize_params(launched, scope, challenge, state="st-1"))


def test_deny_consent_redirects_access_denied_with_the_state(ehr: RunningSandbox) -> None:
    set_faults(ehr, deny_consent=True)
    response = _authorize(ehr)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT_URI)
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["st-1"]
    assert "code" not in query


def test_narrow_scopes_drops_them_from_the_grant_and_the_server_enforces_it(
    ehr: RunningSandbox,
) -> None:
    set_faults(ehr, narrow_scopes=["patient/Condition.rs", "openid"])
    token = ehr.token("P01-pt", "launch openid fhirUser patient/Patient.rs patient/Condition.rs")
    assert token["scope"].split() == ["launch", "fhirUser", "patient/Patient.rs"]
    assert "id_token" not in token  # openid was not granted
    api = ehr.api(token)
    assert api.get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).status_code == 200
    assert api.get(f"{ehr.fhir}/Condition?patient=P01-pt", timeout=10).status_code == 403


def test_drop_write_scopes_keeps_only_reads(ehr: RunningSandbox) -> None:
    set_faults(ehr, drop_write_scopes=True)
    asked = (
        "launch patient/*.cruds patient/ServiceRequest.c patient/Observation.* "
        "user/*.write patient/Task.cu patient/Condition.rs"
    )
    token = ehr.token("P01-pt", asked)
    assert token["scope"].split() == [
        "launch",
        "patient/*.rs",
        "patient/Observation.read",
        "patient/Condition.rs",
    ]
    api = ehr.api(token)
    assert api.get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).status_code == 200
    order = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": "Patient/P01-pt"},
        "code": {"text": "test"},
    }
    assert api.post(f"{ehr.fhir}/ServiceRequest", json=order, timeout=10).status_code == 403


def test_advertise_v1_only(ehr: RunningSandbox) -> None:
    set_faults(ehr, advertise_v1_only=True)
    config = ehr.smart_config()
    assert "permission-v2" not in config["capabilities"]
    assert "permission-v1" in config["capabilities"]
    clinical = [s for s in config["scopes_supported"] if "/" in s and "." in s]
    assert clinical and all(s.rsplit(".", 1)[1] in ("read", "write", "*") for s in clinical)
    token = ehr.token("P01-pt", "launch patient/*.read patient/Condition.rs")
    assert token["scope"].split() == ["launch", "patient/*.read"]  # v2 not understood
    assert ehr.api(token).get(f"{ehr.fhir}/Condition?patient=P01-pt", timeout=10).ok
    set_faults(ehr)
    assert "permission-v2" in ehr.smart_config()["capabilities"]


def test_smart_config_unavailable_leaves_the_capability_statement(ehr: RunningSandbox) -> None:
    set_faults(ehr, smart_config_unavailable=True)
    missing = requests.get(f"{ehr.fhir}/.well-known/smart-configuration", timeout=10)
    assert missing.status_code == 404
    metadata = requests.get(f"{ehr.fhir}/metadata", timeout=10).json()
    extension = next(
        e for e in metadata["rest"][0]["security"]["extension"] if e["url"] == OAUTH_URIS
    )
    uris = {e["url"]: e["valueUri"] for e in extension["extension"]}
    assert uris["authorize"] == f"{ehr.base}/auth/authorize"
    assert uris["token"] == f"{ehr.base}/auth/token"


# -- token responses ------------------------------------------------------------------------------


def test_omit_patient(ehr: RunningSandbox) -> None:
    set_faults(ehr, omit_patient=True)
    token = ehr.token("P02-pt", SCOPE)
    assert "patient" not in token
    assert token["encounter"] == "P02-enc"


def test_access_token_lifetime(ehr: RunningSandbox) -> None:
    set_faults(ehr, access_token_lifetime=1)
    token = ehr.token("P01-pt", SCOPE)
    assert token["expires_in"] == 1
    time.sleep(2.1)
    expired = ehr.api(token).get(f"{ehr.fhir}/Patient/P01-pt", timeout=10)
    assert expired.status_code == 401
    set_faults(ehr, access_token_lifetime=120)
    assert refresh(ehr, token).json()["expires_in"] == 120


def test_refuse_refresh(ehr: RunningSandbox) -> None:
    token = ehr.token("P01-pt", SCOPE)
    set_faults(ehr, refuse_refresh=True)
    refused = refresh(ehr, token)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    set_faults(ehr)
    assert refresh(ehr, token).status_code == 200  # the refresh token was not spent


def test_expire_tokens_expires_access_but_not_refresh(ehr: RunningSandbox) -> None:
    token = ehr.token("P01-pt", SCOPE)
    api = ehr.api(token)
    assert api.get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).status_code == 200
    expired = requests.post(f"{ehr.base}/_sandbox/expire-tokens", timeout=10)
    assert expired.status_code == 200
    assert expired.json()["expired"] >= 1
    assert api.get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).status_code == 401
    fresh = refresh(ehr, token)
    assert fresh.status_code == 200, fresh.text
    assert ehr.api(fresh.json()).get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).ok


# -- id_token ----------------------------------------------------------------------------------


def test_id_token_is_right_without_faults(ehr: RunningSandbox) -> None:
    token = ehr.token("P01-pt", SCOPE, nonce="n-1")
    _, claims = id_token_claims(ehr, token)
    assert claims["iss"] == ehr.fhir
    assert claims["aud"] == CLIENT_ID
    assert claims["nonce"] == "n-1"
    assert claims["exp"] > time.time()


def test_id_token_bad_signature(ehr: RunningSandbox) -> None:
    set_faults(ehr, id_token_bad_signature=True)
    token = ehr.token("P01-pt", SCOPE, nonce="n-2")
    jwks = requests.get(f"{ehr.base}/auth/jwks", timeout=10).json()
    header = json.loads(base64.urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    assert header["kid"] == jwks["keys"][0]["kid"]  # same kid, another key
    with pytest.raises(BadSignatureError):
        id_token_claims(ehr, token)


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("id_token_wrong_aud", lambda c, ehr: c["aud"] != CLIENT_ID),
        ("id_token_wrong_iss", lambda c, ehr: c["iss"] != ehr.fhir),
        ("id_token_expired", lambda c, ehr: c["exp"] < time.time() - 60),
        ("id_token_wrong_nonce", lambda c, ehr: c["nonce"] != "n-3"),
    ],
)
def test_id_token_claim_faults(ehr: RunningSandbox, fault: str, check) -> None:
    set_faults(ehr, **{fault: True})
    token = ehr.token("P01-pt", SCOPE, nonce="n-3")
    _, claims = id_token_claims(ehr, token)  # the signature is still good
    assert check(claims, ehr), claims
    # Only the faulted claim is wrong.
    assert (claims["aud"] == CLIENT_ID) == (fault != "id_token_wrong_aud")
    assert (claims["iss"] == ehr.fhir) == (fault != "id_token_wrong_iss")
    assert (claims["nonce"] == "n-3") == (fault != "id_token_wrong_nonce")
    assert (claims["exp"] > time.time()) == (fault != "id_token_expired")


# -- request log ---------------------------------------------------------------------------------


def test_request_log_records_scheme_never_credentials(ehr: RunningSandbox) -> None:
    log_url = f"{ehr.base}/_sandbox/requests"
    assert requests.delete(log_url, timeout=10).status_code == 204
    assert requests.get(log_url, timeout=10).json() == []

    token = ehr.token("P01-pt", SCOPE)
    api = ehr.api(token)
    api.get(f"{ehr.fhir}/Observation", params={"patient": "P01-pt", "_count": "2"}, timeout=10)
    code, verifier = ehr.code("P06-pt", SCOPE, client_id=CONFIDENTIAL_ID)
    basic = requests.post(
        ehr.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        auth=(CONFIDENTIAL_ID, CONFIDENTIAL_SECRET),
        timeout=10,
    ).json()
    requests.get(
        f"{ehr.fhir}/Patient/P01-pt", headers={"Authorization": "bare-secret-token"}, timeout=10
    )

    response = requests.get(log_url, timeout=10)
    entries = response.json()
    text = response.text
    secrets_sent = [
        token["access_token"],
        token["refresh_token"],
        token["id_token"],
        basic["access_token"],
        code,
        verifier,
        CONFIDENTIAL_SECRET,
        "bare-secret-token",
    ]
    for secret in secrets_sent:
        assert secret not in text
    assert all(set(e) == {"method", "path", "time", "auth_scheme", "status"} for e in entries)
    assert all("?" not in e["path"] for e in entries)
    assert not any(e["path"].startswith("/_sandbox") for e in entries)
    observation = next(e for e in entries if e["path"] == "/fhir/Observation")
    assert observation == {**observation, "method": "GET", "auth_scheme": "Bearer", "status": 200}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", observation["time"])
    token_posts = [e for e in entries if e["path"] == "/auth/token"]
    assert [e["auth_scheme"] for e in token_posts] == [None, "Basic"]
    assert entries[-1] == {**entries[-1], "path": "/fhir/Patient/P01-pt", "auth_scheme": "other"}
    assert entries[-1]["status"] == 401

    # An app that sends nothing leaves nothing.
    assert requests.delete(log_url, timeout=10).status_code == 204
    assert requests.get(log_url, timeout=10).json() == []


def test_request_log_keeps_the_last_200(ehr: RunningSandbox) -> None:
    log_url = f"{ehr.base}/_sandbox/requests"
    requests.delete(log_url, timeout=10)
    with requests.Session() as session:
        for i in range(205):
            session.get(f"{ehr.base}/smart-style.json", params={"i": i}, timeout=10)
        session.get(f"{ehr.fhir}/metadata", timeout=10)
    entries = requests.get(log_url, timeout=10).json()
    assert len(entries) == 200
    assert entries[-1]["path"] == "/fhir/metadata"
    assert entries[0]["path"] == "/smart-style.json"
