"""SMART App Launch: discovery, the EHR launch with PKCE S256, id_token, refresh, refusals."""

from __future__ import annotations

import html
import logging
import re
import time
import warnings
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.sandbox.conftest import (
    CLIENT_ID,
    CONFIDENTIAL_ID,
    CONFIDENTIAL_SECRET,
    REDIRECT_URI,
    RunningSandbox,
    pkce_pair,
)

SCOPE = "launch openid fhirUser patient/*.rs patient/ServiceRequest.c offline_access"


def _redirect_query(response: requests.Response) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)


def test_smart_configuration_lists_endpoints_and_capabilities(sandbox: RunningSandbox) -> None:
    config = sandbox.smart_config()
    assert config["issuer"] == sandbox.fhir
    assert config["authorization_endpoint"] == f"{sandbox.base}/auth/authorize"
    assert config["token_endpoint"] == f"{sandbox.base}/auth/token"
    assert config["jwks_uri"] == f"{sandbox.base}/auth/jwks"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert set(config["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert "none" in config["token_endpoint_auth_methods_supported"]
    assert config["response_types_supported"] == ["code"]
    assert {"openid", "fhirUser", "launch", "offline_access"} <= set(config["scopes_supported"])
    assert {
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-banner",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
        "permission-offline",
        "sso-openid-connect",
    } <= set(config["capabilities"])
    # Discovery is public: no bearer token needed.
    assert requests.get(config["jwks_uri"], timeout=10).json()["keys"][0]["kty"] == "RSA"


def test_ehr_launch_code_flow_gives_context_and_verifiable_id_token(
    sandbox: RunningSandbox,
) -> None:
    launched = sandbox.launch("P01-pt")
    assert launched.iss == sandbox.fhir
    assert (
        launched.frame_src
        == f"http://127.0.0.1:9/launch?iss={sandbox.fhir}&launch={launched.launch}"
    )
    assert launched.launch not in launched.tab_href  # the new-tab link has its own launch

    verifier, challenge = pkce_pair()
    params = sandbox.authorize_params(launched, SCOPE, challenge, nonce="nonce-123")
    query = _redirect_query(sandbox.authorize(**params))
    assert query["state"] == [params["state"]]
    response = sandbox.exchange(query["code"][0], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] > 0
    assert token["patient"] == "P01-pt"
    assert token["encounter"] == "P01-enc"
    assert token["need_patient_banner"] is True
    assert token["refresh_token"]
    assert set(token["scope"].split()) == set(SCOPE.split())

    jwks = requests.get(sandbox.smart_config()["jwks_uri"], timeout=10).json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from authlib.jose import JsonWebKey, jwt

        claims = jwt.decode(token["id_token"], JsonWebKey.import_key_set(jwks))
    claims.validate()
    assert claims["iss"] == sandbox.fhir
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == "demo-ed-physician"
    assert claims["fhirUser"] == f"{sandbox.fhir}/Practitioner/demo-ed-physician"
    assert claims["nonce"] == "nonce-123"
    assert claims["exp"] > claims["iat"]

    # The token works on the FHIR API, and fhirUser resolves there.
    api = sandbox.api(token)
    assert api.get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10).json()["id"] == "P01-pt"


def test_unsupported_scopes_are_dropped_not_refused(sandbox: RunningSandbox) -> None:
    token = sandbox.token("P02-pt", "launch system/*.read patient/Condition.rs bogus/scope")
    assert token["scope"] == "launch patient/Condition.rs"
    assert token["patient"] == "P02-pt"


def test_plain_or_missing_pkce_is_refused(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P01-pt")
    verifier, _ = pkce_pair()
    plain = sandbox.authorize_params(launched, SCOPE, verifier, code_challenge_method="plain")
    query = _redirect_query(sandbox.authorize(**plain))
    assert query["error"] == ["invalid_request"]
    assert "code" not in query

    missing = sandbox.authorize_params(launched, SCOPE, "x")
    del missing["code_challenge"], missing["code_challenge_method"]
    query = _redirect_query(sandbox.authorize(**missing))
    assert query["error"] == ["invalid_request"]


def test_wrong_aud_is_refused(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P01-pt")
    _, challenge = pkce_pair()
    for aud in (f"{sandbox.fhir}/", "https://other.example/fhir", sandbox.base):
        params = sandbox.authorize_params(launched, SCOPE, challenge, aud=aud)
        query = _redirect_query(sandbox.authorize(**params))
        assert query["error"] == ["invalid_request"], aud
        assert "aud" in query["error_description"][0]


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(
    sandbox: RunningSandbox,
) -> None:
    launched = sandbox.launch("P01-pt")
    _, challenge = pkce_pair()
    params = sandbox.authorize_params(
        launched, SCOPE, challenge, redirect_uri="https://evil.example/cb"
    )
    response = sandbox.authorize(**params)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "refused" in response.text


def test_launch_is_single_use_and_must_exist(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P03-pt")
    _, challenge = pkce_pair()
    params = sandbox.authorize_params(launched, SCOPE, challenge)
    assert "code" in _redirect_query(sandbox.authorize(**params))
    again = _redirect_query(
        sandbox.authorize(**sandbox.authorize_params(launched, SCOPE, challenge))
    )
    assert again["error"] == ["invalid_request"]
    bogus = sandbox.authorize_params(launched, SCOPE, challenge, launch="not-a-launch")
    assert _redirect_query(sandbox.authorize(**bogus))["error"] == ["invalid_request"]


def test_authorize_without_ehr_session_asks_to_sign_in(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P01-pt")
    _, challenge = pkce_pair()
    stranger = requests.get(
        sandbox.smart_config()["authorization_endpoint"],
        params=sandbox.authorize_params(launched, SCOPE, challenge),
        allow_redirects=False,
        timeout=10,
    )
    assert stranger.status_code == 302
    assert stranger.headers["Location"].startswith("/auth/login")


def test_code_is_single_use_and_bound_to_the_verifier(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P01-pt")
    verifier, challenge = pkce_pair()
    query = _redirect_query(
        sandbox.authorize(**sandbox.authorize_params(launched, SCOPE, challenge))
    )
    code = query["code"][0]
    wrong = sandbox.exchange(code, pkce_pair()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    first = sandbox.exchange(code, verifier)
    assert first.status_code == 200, first.text
    reused = sandbox.exchange(code, verifier)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_refresh_keeps_launch_context_and_rotates(sandbox: RunningSandbox) -> None:
    token = sandbox.token("P05-pt", SCOPE)
    token_url = sandbox.smart_config()["token_endpoint"]
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": CLIENT_ID,
    }
    response = requests.post(token_url, data=refresh, timeout=10)
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert fresh["access_token"] != token["access_token"]
    assert fresh["patient"] == "P05-pt"
    assert fresh["encounter"] == "P05-enc"
    assert set(fresh["scope"].split()) == set(SCOPE.split())
    api = sandbox.api(fresh)
    assert api.get(f"{sandbox.fhir}/Encounter/P05-enc", timeout=10).status_code == 200
    # Rotation: the old refresh token and the old access token are spent.
    replay = requests.post(token_url, data=refresh, timeout=10)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    old = sandbox.api(token).get(f"{sandbox.fhir}/Encounter/P05-enc", timeout=10)
    assert old.status_code == 401


def test_fhir_api_requires_a_valid_bearer_token(sandbox: RunningSandbox) -> None:
    missing = requests.get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["resourceType"] == "OperationOutcome"
    unknown = sandbox.api("not-a-token").get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10)
    assert unknown.status_code == 401
    assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]
    assert unknown.json()["issue"][0]["code"] == "login"


def test_expired_access_token_is_refused(sandbox: RunningSandbox) -> None:
    sandbox.app.config["SANDBOX_ACCESS_TOKEN_LIFETIME"] = 1
    try:
        token = sandbox.token("P01-pt", "launch patient/*.rs")
    finally:
        sandbox.app.config["SANDBOX_ACCESS_TOKEN_LIFETIME"] = 3600
    assert token["expires_in"] == 1
    time.sleep(2.1)
    response = sandbox.api(token).get(f"{sandbox.fhir}/Patient/P01-pt", timeout=10)
    assert response.status_code == 401


def _standalone_params(sandbox: RunningSandbox, scope: str, challenge: str) -> dict:
    """A standalone launch: `aud`, no `launch` parameter."""
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": "s1",
        "aud": sandbox.fhir,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": "standalone-nonce",
    }


def _picker(page: str) -> tuple[str, dict[str, str]]:
    """(CSRF token, {patient id: its row's HTML}) of the patient picker page."""
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, page
    rows = dict(re.findall(r'<tr data-patient-id="([^"]+)">(.*?)</tr>', page, re.S))
    return html.unescape(csrf.group(1)), rows


@pytest.mark.parametrize(
    ("scope", "encounter"),
    [
        ("launch/patient openid fhirUser", None),
        ("launch/patient launch/encounter openid fhirUser patient/*.rs", "P04-enc"),
    ],
)
def test_standalone_launch_picks_a_patient(
    sandbox: RunningSandbox, scope: str, encounter: str | None
) -> None:
    sandbox.browser.get(f"{sandbox.base}/", timeout=10)
    verifier, challenge = pkce_pair()
    params = _standalone_params(sandbox, scope, challenge)
    page = sandbox.authorize(**params)
    assert page.status_code == 200
    csrf, rows = _picker(page.text)
    assert {"P01-pt", "P04-pt"} <= set(rows)
    for row in rows.values():
        assert re.search(r"<button[^>]*>Select</button>", row), row
    url = sandbox.smart_config()["authorization_endpoint"]
    chosen = sandbox.browser.post(
        url,
        params=params,
        data={"csrf_token": csrf, "decision": "approve", "patient_choice": "P04-pt"},
        allow_redirects=False,
        timeout=10,
    )
    query = _redirect_query(chosen)
    assert query["state"] == ["s1"]
    token = sandbox.exchange(query["code"][0], verifier).json()
    assert token["patient"] == "P04-pt"
    assert token.get("encounter") == encounter
    assert token["id_token"]
    assert set(token["scope"].split()) == set(scope.split())


def test_standalone_picker_refuses_a_post_without_its_csrf_token(
    sandbox: RunningSandbox,
) -> None:
    sandbox.browser.get(f"{sandbox.base}/", timeout=10)
    _, challenge = pkce_pair()
    params = _standalone_params(sandbox, "launch/patient openid fhirUser", challenge)
    csrf, _ = _picker(sandbox.authorize(**params).text)
    url = sandbox.smart_config()["authorization_endpoint"]
    for form in (
        {"decision": "approve", "patient_choice": "P04-pt"},
        {"csrf_token": csrf + "x", "decision": "approve", "patient_choice": "P04-pt"},
    ):
        forged = sandbox.browser.post(
            url, params=params, data=form, allow_redirects=False, timeout=10
        )
        assert forged.status_code == 400
        assert "Location" not in forged.headers
        assert "CSRF" in forged.text
    # Another browser (another EHR session) cannot reuse this session's token either.
    other = requests.Session()
    other.get(f"{sandbox.base}/", timeout=10)
    stolen = other.post(
        url,
        params=params,
        data={"csrf_token": csrf, "decision": "approve", "patient_choice": "P04-pt"},
        allow_redirects=False,
        timeout=10,
    )
    assert stolen.status_code == 400


def test_standalone_deny_redirects_access_denied(sandbox: RunningSandbox) -> None:
    sandbox.browser.get(f"{sandbox.base}/", timeout=10)
    _, challenge = pkce_pair()
    params = _standalone_params(sandbox, "launch/patient openid fhirUser", challenge)
    csrf, _ = _picker(sandbox.authorize(**params).text)
    denied = sandbox.browser.post(
        sandbox.smart_config()["authorization_endpoint"],
        params=params,
        data={"csrf_token": csrf, "decision": "deny"},
        allow_redirects=False,
        timeout=10,
    )
    query = _redirect_query(denied)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s1"]
    assert "code" not in query


def test_confidential_client_authenticates_with_its_secret(sandbox: RunningSandbox) -> None:
    launched = sandbox.launch("P06-pt", app=CONFIDENTIAL_ID)
    verifier, challenge = pkce_pair()
    params = sandbox.authorize_params(launched, SCOPE, challenge, client_id=CONFIDENTIAL_ID)
    code = _redirect_query(sandbox.authorize(**params))["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    url = sandbox.smart_config()["token_endpoint"]
    anonymous = requests.post(url, data={**form, "client_id": CONFIDENTIAL_ID}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    wrong = requests.post(url, data=form, auth=(CONFIDENTIAL_ID, "wrong"), timeout=10)
    assert wrong.status_code == 401
    token = requests.post(url, data=form, auth=(CONFIDENTIAL_ID, CONFIDENTIAL_SECRET), timeout=10)
    assert token.status_code == 200, token.text
    assert token.json()["patient"] == "P06-pt"


def test_issued_tokens_never_reach_the_logs(
    sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = sandbox.token("P01-pt", SCOPE)
    refreshed = requests.post(
        sandbox.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": CLIENT_ID,
        },
        timeout=10,
    ).json()
    assert any("Issue token" in r.getMessage() for r in caplog.records)  # authlib did log
    logged = "\n".join(r.getMessage() for r in caplog.records)
    secrets = [token["access_token"], token["refresh_token"], token["id_token"]]
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    assert not [s for s in secrets if s in logged]
