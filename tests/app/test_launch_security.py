"""SMART App Launch, against the sandbox over HTTP: each launch kind, each client auth method,
refresh, and each way a launch must fail (a clear page, no token issued or used, a log line)."""

from __future__ import annotations

import html
import logging
import time

import pytest
import requests
from sqlalchemy import select, update

from smartapp.db import LaunchContext, PendingAuthorization, Referral
from tests import launch_flow
from tests.launch_flow import Controls


@pytest.fixture
def controls(sandbox):
    controls = Controls(sandbox.url)
    controls.clear()
    yield controls
    controls.clear()


def db_of(handle):
    return handle.app.extensions["handoff"].db


def contexts(handle) -> list[LaunchContext]:
    with db_of(handle).session() as session:
        return list(session.scalars(select(LaunchContext)))


def warned(caplog, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


def text_of(response) -> str:
    return html.unescape(response.text)


def assert_screen(response, patient_name: str) -> None:
    assert response.status_code == 200, response.text[:500]
    assert "Suggestions for this visit" in response.text
    assert patient_name in response.text


# --- launches that work -------------------------------------------------------------------


def test_ehr_launch_public_client(sandbox, handoff, controls):
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    assert_screen(launch.final, "Test P02")
    # After the callback, the browser is only ever sent to Handoff's opaque screen URL.
    assert launch.steps and all("/c/" in step and "code=" not in step for step in launch.steps)


def test_ehr_launch_client_secret_basic(sandbox, handoff_basic, controls):
    launch = launch_flow.full(handoff_basic.url, sandbox.url, "P03-pt")
    assert_screen(launch.final, "Test P03")


def test_ehr_launch_private_key_jwt(sandbox, handoff_jwt, controls):
    launch = launch_flow.full(handoff_jwt.url, sandbox.url, "P04-pt")
    assert_screen(launch.final, "Test P04")
    jwks = requests.get(f"{handoff_jwt.url}/.well-known/jwks.json", timeout=5).json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])  # public parts only


def test_wrong_client_secret_is_refused(sandbox, handoff_basic, controls, caplog, monkeypatch):
    from tests.conftest import BASIC_SECRET_ENV

    monkeypatch.setenv(BASIC_SECRET_ENV, "not-the-secret")
    launch = launch_flow.full(handoff_basic.url, sandbox.url, "P03-pt")
    assert launch.final.status_code == 400
    assert "refused the token request" in launch.final.text
    assert warned(caplog, "callback failed at token exchange")


def test_discovery_and_key_set_are_kept_between_launches(sandbox, handoff, controls, monkeypatch):
    """Two launches read the EHR's SMART configuration and key set once (kept 300 s by
    default, SMART_DISCOVERY_CACHE_SECONDS), and each still verifies its identity token."""
    launch_flow.forget_ehr_documents(handoff, monkeypatch)
    for patient, name in (("P02-pt", "Test P02"), ("P05-pt", "Test P05")):
        assert_screen(launch_flow.full(handoff.url, sandbox.url, patient).final, name)
    paths = [r["path"] for r in controls.requests()]
    assert sum(p.endswith(".well-known/smart-configuration") for p in paths) == 1
    assert sum(p.endswith("jwks.json") or p.endswith("/jwks") for p in paths) == 1, paths


def test_standalone_launch_discovery_fallback_and_v1_scopes(
    sandbox, handoff, controls, monkeypatch
):
    launch_flow.forget_ehr_documents(handoff, monkeypatch)  # an EHR seen for the first time
    controls.faults(smart_config_unavailable=True, advertise_v1_only=True)
    browser = requests.Session()
    browser.get(f"{sandbox.url}/", timeout=10)  # signed in at the EHR
    answer = launch_flow.follow(browser, f"{handoff.url}/start/sandbox")
    assert answer.status_code == 302
    params = launch_flow.Launch(browser=browser, authorize_url=answer.headers["Location"])
    scopes = params.authorize_params["scope"].split()
    assert "launch/patient" in scopes and "launch" not in scopes
    assert "patient/Condition.read" in scopes and "patient/ServiceRequest.write" in scopes
    assert "launch" not in params.authorize_params  # no launch value in a standalone launch


def test_refresh_when_the_access_token_expires(sandbox, handoff, controls):
    launch = launch_flow.full(handoff.url, sandbox.url, "P05-pt")
    screen = launch.final.url
    before = controls.token_requests()
    controls.expire_tokens()
    again = launch.browser.get(screen, timeout=15)
    assert_screen(again, "Test P05")
    assert controls.token_requests() == before + 1  # one refresh, then the read went through


def test_refresh_before_the_access_token_expires(sandbox, handoff, controls):
    # The refresh margin is a share of the token's lifetime (10 % of 30 s: 3 s); Handoff's
    # record says 2 s are left (the EHR's token itself is still good, as it is in a margin).
    controls.faults(access_token_lifetime=30)
    launch = launch_flow.full(handoff.url, sandbox.url, "P05-pt")
    with db_of(handoff).session() as session:
        session.execute(
            update(LaunchContext)
            .where(LaunchContext.id == launch.final.url.rsplit("/", 1)[1])
            .values(access_expires_at=time_ago(-2))
        )
    before = controls.token_requests()
    refused = [r for r in controls.requests() if "/fhir" in r["path"] and r["status"] == 401]
    again = launch.browser.get(launch.final.url, timeout=15)
    assert_screen(again, "Test P05")
    assert controls.token_requests() == before + 1  # refreshed before use...
    assert [r for r in controls.requests() if "/fhir" in r["path"] and r["status"] == 401] == (
        refused
    )  # ...so the EHR never had to refuse an expired token


def test_refused_refresh_ends_the_session_clearly(sandbox, handoff, controls, caplog):
    launch = launch_flow.full(handoff.url, sandbox.url, "P05-pt")
    controls.faults(refuse_refresh=True)
    controls.expire_tokens()
    again = launch.browser.get(launch.final.url, timeout=15)
    assert again.status_code == 403
    assert "ended this session" in again.text
    assert warned(caplog, "refresh refused")


def test_narrowed_scopes_degrade_clearly(sandbox, handoff, controls):
    controls.faults(
        drop_write_scopes=True,
        narrow_scopes=[
            "patient/MedicationRequest.crs",
            "patient/MedicationRequest.read",
            "patient/MedicationRequest.write",
        ],
    )
    launch = launch_flow.full(handoff.url, sandbox.url, "P11-pt")
    page = launch.final.text
    assert launch.final.status_code == 200
    assert "cannot write to this chart" in page
    assert "did not let Handoff read: MedicationRequest" in page
    # v2 (chart-incomplete): without the medication list buprenorphine is still suggested
    # (withholding it would silence it wherever fewer scopes are granted), decided in the
    # engine, with the chart-incomplete caution and the notice naming what was not read.
    assert 'data-kind="moud-buprenorphine"' in page
    assert 'data-caution="chart-incomplete"' in page
    assert "ask about methadone, buprenorphine, naltrexone and allergies" in page
    assert 'data-kind="prc-consult"' in page


def test_withheld_suggestions_are_shown_with_their_reasons(sandbox, handoff, controls):
    """v2: a suggestion the engine withholds is shown as not suggested, with its reason
    (P26: on naltrexone and allergic: buprenorphine withheld, reason on-moud), and logged."""
    launch = launch_flow.full(handoff.url, sandbox.url, "P26-pt")
    page = launch.final.text
    assert_screen(launch.final, "Test P26")
    assert 'data-kind="moud-buprenorphine"' not in page
    assert 'data-withheld="moud-buprenorphine" data-reason="on-moud"' in page
    assert 'data-kind="moud-continue"' in page
    (context,) = [c for c in contexts(handoff) if c.patient_id == "P26-pt"]
    withheld = context.shown["withheld"]
    assert [(w["kind"], w["reasons"]) for w in withheld] == [
        ("moud-buprenorphine", ["on-moud", "allergy"])
    ]


# --- launches that must fail ----------------------------------------------------------------


def test_unknown_issuer_is_refused_before_any_request(sandbox, handoff, controls, caplog):
    controls.clear()
    answer = requests.get(
        f"{handoff.url}/launch",
        params={"iss": f"{sandbox.url}/unregistered-fhir", "launch": "x"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert "not registered" in answer.text
    assert controls.requests() == []  # nothing was sent to that server
    assert warned(caplog, "issuer not registered")


@pytest.mark.parametrize("state", [None, "forged-state-value"])
def test_missing_or_unknown_state_is_refused(handoff, caplog, state):
    params = {"code": "abc"} | ({"state": state} if state else {})
    answer = requests.get(f"{handoff.url}/callback", params=params, timeout=10)
    assert answer.status_code == 400
    assert "not valid" in answer.text
    assert warned(caplog, "unknown, reused or foreign state")


def test_reused_state_is_refused(sandbox, handoff, controls, caplog):
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    assert launch.final.status_code == 200
    replay = launch_flow.follow(launch.browser, launch.callback_url)
    assert replay.status_code == 400
    assert warned(caplog, "unknown, reused or foreign state")


def test_foreign_state_is_refused_and_no_token_is_issued(sandbox, handoff, controls, caplog):
    launch = launch_flow.authorize(launch_flow.start(handoff.url, sandbox.url, "P02-pt"))
    before = controls.token_requests()
    other_browser = requests.Session()
    answer = launch_flow.follow(other_browser, launch.callback_url)
    assert answer.status_code == 400
    assert controls.token_requests() == before
    assert warned(caplog, "foreign state")


def test_expired_state_is_refused(sandbox, handoff, controls, caplog):
    launch = launch_flow.authorize(launch_flow.start(handoff.url, sandbox.url, "P02-pt"))
    with db_of(handoff).session() as session:
        session.execute(update(PendingAuthorization).values(created_at=time_ago(3600)))
    answer = launch_flow.finish(launch)
    assert answer.status_code == 400 and "took too long" in answer.text
    assert warned(caplog, "state expired")


def time_ago(seconds: int):
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) - timedelta(seconds=seconds)


def test_replayed_code_is_refused(sandbox, handoff, controls, caplog):
    first = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    used_code = launch_flow.Launch(browser=first.browser, authorize_url=first.callback_url)
    used_code = used_code.authorize_params["code"]
    second = launch_flow.authorize(
        launch_flow.start(handoff.url, sandbox.url, "P02-pt", browser=first.browser)
    )
    fresh_state = launch_flow.Launch(browser=first.browser, authorize_url=second.callback_url)
    state = fresh_state.authorize_params["state"]
    count = len(contexts(handoff))
    answer = launch_flow.follow(
        first.browser, f"{handoff.url}/callback?code={used_code}&state={state}"
    )
    assert answer.status_code == 400 and "refused the token request" in answer.text
    assert len(contexts(handoff)) == count  # no launch context, no token kept
    assert warned(caplog, "callback failed at token exchange")


def test_pkce_mismatch_is_refused(sandbox, handoff, controls, caplog):
    launch = launch_flow.authorize(launch_flow.start(handoff.url, sandbox.url, "P02-pt"))
    with db_of(handoff).session() as session:
        session.execute(update(PendingAuthorization).values(code_verifier="x" * 64))
    answer = launch_flow.finish(launch)
    assert answer.status_code == 400 and "refused the token request" in answer.text
    assert warned(caplog, "callback failed at token exchange")


@pytest.mark.parametrize(
    "fault",
    [
        "id_token_wrong_aud",
        "id_token_bad_signature",
        "id_token_expired",
        "id_token_wrong_nonce",
        "id_token_wrong_iss",
    ],
)
def test_bad_identity_token_is_refused_and_its_token_unused(
    sandbox, handoff, controls, caplog, fault
):
    controls.faults(**{fault: True})
    count = len(contexts(handoff))
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    assert launch.final.status_code == 400
    assert "identity token" in text_of(launch.final)
    assert "did not use the EHR's token" in text_of(launch.final)
    assert len(contexts(handoff)) == count
    fhir_calls = [
        r
        for r in controls.requests()
        if "/fhir/" in r["path"]
        and not r["path"].endswith((".well-known/smart-configuration", "/metadata"))
    ]
    assert fhir_calls == []  # the token was never used
    assert warned(caplog, "callback refused")


def test_denied_authorization(sandbox, handoff, controls, caplog):
    controls.faults(deny_consent=True)
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    assert launch.final.status_code == 403
    assert "did not authorize" in launch.final.text
    assert warned(caplog, "authorization denied")


def test_token_without_patient_is_refused(sandbox, handoff, controls, caplog):
    controls.faults(omit_patient=True)
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    assert launch.final.status_code == 400 and "which patient" in launch.final.text
    assert warned(caplog, "no patient context")


def test_held_referral_when_write_scopes_are_dropped(sandbox, handoff, controls):
    controls.faults(drop_write_scopes=True)
    launch = launch_flow.full(handoff.url, sandbox.url, "P04-pt")
    page = launch.final.text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    context_id = launch.final.url.rsplit("/", 1)[1]
    signed = launch.browser.post(
        f"{handoff.url}/c/{context_id}/sign",
        data={"csrf_token": token, "decision-prc-consult": "accept", "consult-mode": "in-person"},
        timeout=15,
    )
    assert signed.status_code == 200
    assert "kept in Handoff, not written to the chart" in signed.text
    writes = [
        r for r in controls.requests() if r["method"] == "POST" and r["path"].endswith("/fhir")
    ]
    assert len(writes) == 1  # the chart read (a batch), and no transaction
    with db_of(handoff).session() as session:
        referral = session.scalars(select(Referral).where(Referral.patient_id == "P04-pt")).one()
    assert referral.status == "held"


def test_sign_without_csrf_token_is_refused(sandbox, handoff, controls, caplog):
    launch = launch_flow.full(handoff.url, sandbox.url, "P13-pt")
    context_id = launch.final.url.rsplit("/", 1)[1]
    answer = launch.browser.post(
        f"{handoff.url}/c/{context_id}/sign", data={"decision-prc-consult": "accept"}, timeout=10
    )
    assert answer.status_code == 400 and "expired" in answer.text
    assert warned(caplog, "CSRF")


def test_another_browser_cannot_open_a_launch(sandbox, handoff, controls, caplog):
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    stranger = requests.get(launch.final.url, timeout=10)
    assert stranger.status_code == 403
    assert "Test P02" not in stranger.text
    assert warned(caplog, "another browser")


# --- what Inferno's SMART app launch suite checks of a client --------------------------------


def test_authorize_request_is_what_inferno_expects(sandbox, handoff, controls):
    launch = launch_flow.start(handoff.url, sandbox.url, "P02-pt")
    params = launch.authorize_params
    assert params["response_type"] == "code"
    assert params["client_id"] == "handoff-test"
    assert params["redirect_uri"] == f"{handoff.url}/callback"  # the registered one
    assert params["launch"] == launch.launch_value  # echoed
    assert params["aud"] == f"{sandbox.url}/fhir"  # the iss
    assert len(params["state"]) >= 22  # at least 128 bits, base64url
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # a SHA-256, base64url, no padding
    scopes = params["scope"].split()
    assert {"launch", "openid", "fhirUser"} <= set(scopes)
    assert "patient/Condition.rs" in scopes  # v2 where the EHR advertises permission-v2
    assert params["nonce"]


def test_client_assertion_claims(sandbox):
    from joserfc import jwt
    from joserfc.jwk import ECKey, RSAKey

    from smartapp.launch.client import SmartPrivateKeyJWT

    class Auth:
        client_id = "handoff-jwt"

    for alg, key in (("RS384", RSAKey.generate_key(2048)), ("ES384", ECKey.generate_key("P-384"))):
        signer = SmartPrivateKeyJWT(key, "kid-1", alg)
        token_endpoint = f"{sandbox.url}/auth/token"
        first = jwt.decode(signer.sign(Auth(), token_endpoint), key, algorithms=[alg])
        second = jwt.decode(signer.sign(Auth(), token_endpoint), key, algorithms=[alg])
        assert first.header["alg"] == alg and first.header["kid"] == "kid-1"
        assert first.claims["iss"] == first.claims["sub"] == "handoff-jwt"
        assert first.claims["aud"] == token_endpoint
        assert 0 < first.claims["exp"] - int(time.time()) <= 300
        assert first.claims["jti"] and first.claims["jti"] != second.claims["jti"]


def test_security_headers_and_cookie_flags(sandbox, handoff, controls):
    launch = launch_flow.full(handoff.url, sandbox.url, "P02-pt")
    policy = launch.final.headers["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {sandbox.url}" in policy
    first = requests.get(
        f"{handoff.url}/launch",
        allow_redirects=False,
        timeout=10,
        params={"iss": f"{sandbox.url}/fhir", "launch": launch.launch_value},
    )
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("handoff_session=") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie  # a local http demo; https gets Secure; SameSite=None


def test_cookie_policy_on_https(tmp_path):
    from smartapp import create_app

    app = create_app(
        {
            "PUBLIC_URL": "https://handoff.hospital.example",
            "TESTING": True,
            "DATABASE_URL": "sqlite://",
            "DEMO": True,  # no EHR registration needed here
        },
        instance_path=str(tmp_path),
    )
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "None"
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
