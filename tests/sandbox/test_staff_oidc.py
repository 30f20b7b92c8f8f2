"""The sandbox as the hospital's OpenID Connect identity provider for Handoff's staff pages:
the sign-in page, plain OIDC code flow (PKCE S256, client_secret_basic or public), the
id_token's `handoff_roles` / `name` / `fhirUser`, and `aud` still required for SMART launches.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from authlib.integrations.flask_client import OAuth
from flask import Flask, jsonify
from joserfc import jwt
from joserfc.jwk import KeySet

from smartapp.sandbox import SandboxClient
from smartapp.web.serving import reserve_port, serve_in_thread
from tests.sandbox.conftest import (
    APP_ORIGIN,
    CLIENT_ID,
    REDIRECT_URI,
    RunningSandbox,
    pkce_pair,
    start_sandbox,
)

STAFF_ID = "handoff-staff"
STAFF_SECRET = "staff-s3cret-for-tests"
STAFF_REDIRECT = f"{APP_ORIGIN}/staff/callback"
PUBLIC_STAFF_ID = "handoff-staff-public"
SCOPE = "openid profile fhirUser"
STAFF_USERS = {
    "demo-coach-1": ("Jordan Rivera, CPRS", ["coach"]),
    "demo-coach-2": ("Sam Lee, CPRS", ["coach"]),
    "demo-auditor": ("Morgan Ellis", ["auditor"]),
    "demo-program-manager": ("Pat Quinn", ["program-manager"]),
    "demo-supervisor": ("Casey Morgan, LCSW", ["supervisor"]),
}
PHYSICIAN = ("demo-ed-physician", "Avery Demo, MD", ["physician"])


@dataclass
class Authlib:
    """A stand-in for Handoff's staff sign-in: authlib's Flask client on its own port."""

    url: str
    ehr: RunningSandbox


@pytest.fixture(scope="module")
def staff_app_port() -> int:
    return reserve_port()


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory, staff_app_port: int) -> Iterator[RunningSandbox]:
    """A sandbox with the staff client (client_secret_basic), a public one, and one whose
    redirect URI is the authlib stand-in's callback."""
    clients = (
        SandboxClient(
            client_id=STAFF_ID,
            redirect_uris=[STAFF_REDIRECT],
            launch_url=f"{APP_ORIGIN}/",
            auth_method="client_secret_basic",
            client_secret=STAFF_SECRET,
        ),
        SandboxClient(PUBLIC_STAFF_ID, [STAFF_REDIRECT], f"{APP_ORIGIN}/"),
        SandboxClient(
            "handoff-staff-authlib",
            [f"http://127.0.0.1:{staff_app_port}/staff/callback"],
            f"http://127.0.0.1:{staff_app_port}/",
            auth_method="client_secret_basic",
            client_secret=STAFF_SECRET,
        ),
    )
    running = start_sandbox(tmp_path_factory.mktemp("staff"), extra_clients=clients)
    yield running
    running.handle.stop()


def discovery(ehr: RunningSandbox) -> dict:
    response = requests.get(f"{ehr.fhir}/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200
    return response.json()


def authorize_params(challenge: str, client_id: str = STAFF_ID, **extra: str) -> dict:
    """A plain OpenID Connect request, as authlib's client sends it: no aud, no launch."""
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": STAFF_REDIRECT,
        "scope": SCOPE,
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(12),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def login_form(page: str) -> tuple[str, str, dict[str, str]]:
    """(csrf token, next, {user id: button label}) of the sign-in page."""
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    target = re.search(r'name="next" value="([^"]*)"', page)
    assert csrf and target, page
    buttons = re.findall(
        r'<button type="submit" name="user" value="([^"]+)"[^>]*>([^<]+)</button>', page
    )
    return (
        html.unescape(csrf.group(1)),
        html.unescape(target.group(1)),
        {value: html.unescape(label) for value, label in buttons},
    )


def redirect_query(response: requests.Response, to: str = STAFF_REDIRECT) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(to), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in_through_form(
    ehr: RunningSandbox, browser: requests.Session, params: dict, user_id: str
) -> requests.Response:
    """Authorize without an EHR session -> sign-in page -> pick `user_id` -> authorize again.
    Returns the final authorize response (the redirect to the app)."""
    url = discovery(ehr)["authorization_endpoint"]
    first = browser.get(url, params=params, allow_redirects=False, timeout=10)
    assert first.status_code == 302, first.text
    login_url = urljoin(ehr.base, first.headers["Location"])
    assert urlsplit(login_url).path == "/auth/login"
    page = browser.get(login_url, timeout=10)
    assert page.status_code == 200
    csrf, target, buttons = login_form(page.text)
    assert user_id in buttons
    assert target.startswith("/auth/authorize?")
    signed = browser.post(
        f"{ehr.base}/auth/login",
        data={"csrf_token": csrf, "next": target, "user": user_id},
        allow_redirects=False,
        timeout=10,
    )
    assert signed.status_code == 302, signed.text
    assert signed.headers["Location"] == target
    return browser.get(urljoin(ehr.base, target), allow_redirects=False, timeout=10)


def exchange(
    ehr: RunningSandbox,
    code: str,
    verifier: str,
    client_id: str = STAFF_ID,
    secret: str | None = STAFF_SECRET,
) -> requests.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": STAFF_REDIRECT,
        "code_verifier": verifier,
    }
    if secret is None:
        return requests.post(ehr.token_url, data={**form, "client_id": client_id}, timeout=10)
    return requests.post(ehr.token_url, data=form, auth=(client_id, secret), timeout=10)


def verified_claims(ehr: RunningSandbox, id_token: str) -> dict:
    """The id_token's claims, its signature checked against the discovered JWKS."""
    jwks = requests.get(discovery(ehr)["jwks_uri"], timeout=10).json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    jwt.JWTClaimsRegistry(exp={"essential": True}, iat={"essential": True}).validate(token.claims)
    return token.claims


def practitioner(ehr: RunningSandbox, reference: str) -> dict:
    """Read the resource `fhirUser` points at, with a user-level token."""
    api = ehr.api(ehr.token("P01-pt", "launch user/*.rs"))
    response = api.get(reference, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_openid_configuration_advertises_the_staff_claims(ehr: RunningSandbox) -> None:
    config = discovery(ehr)
    assert config["issuer"] == ehr.fhir
    assert config["authorization_endpoint"] == f"{ehr.base}/auth/authorize"
    assert config["token_endpoint"] == f"{ehr.base}/auth/token"
    assert config["jwks_uri"] == f"{ehr.base}/auth/jwks"
    assert config["userinfo_endpoint"] == f"{ehr.base}/auth/userinfo"
    assert {"openid", "profile", "fhirUser"} <= set(config["scopes_supported"])
    assert {"sub", "name", "fhirUser", "handoff_roles", "nonce"} <= set(config["claims_supported"])
    assert {"client_secret_basic", "none"} <= set(config["token_endpoint_auth_methods_supported"])
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]


def test_sign_in_page_offers_every_user_with_labelled_buttons(ehr: RunningSandbox) -> None:
    page = requests.get(f"{ehr.base}/auth/login", params={"next": "/chart/P01-pt"}, timeout=10)
    assert page.status_code == 200
    csrf, target, buttons = login_form(page.text)
    assert csrf and target == "/chart/P01-pt"
    assert buttons == {
        PHYSICIAN[0]: "Sign in as Avery Demo, MD (physician)",
        "demo-coach-1": "Sign in as Jordan Rivera, CPRS (coach)",
        "demo-coach-2": "Sign in as Sam Lee, CPRS (coach)",
        "demo-auditor": "Sign in as Morgan Ellis (auditor)",
        "demo-program-manager": "Sign in as Pat Quinn (program-manager)",
        "demo-supervisor": "Sign in as Casey Morgan, LCSW (supervisor)",
        "demo-partner": "Sign in as Robin Hale (partner)",
    }
    assert 'method="post"' in page.text
    assert "<legend>" in page.text


@pytest.mark.parametrize("user_id", sorted(STAFF_USERS))
def test_staff_user_signs_in_with_plain_oidc(ehr: RunningSandbox, user_id: str) -> None:
    name, roles = STAFF_USERS[user_id]
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    browser = requests.Session()
    query = redirect_query(sign_in_through_form(ehr, browser, params, user_id))
    assert query["state"] == params["state"]
    assert "error" not in query

    response = exchange(ehr, query["code"], verifier)
    assert response.status_code == 200, response.text
    token = response.json()
    assert set(token["scope"].split()) == set(SCOPE.split())
    for launch_context in ("patient", "encounter", "need_patient_banner", "smart_style_url"):
        assert launch_context not in token, launch_context

    claims = verified_claims(ehr, token["id_token"])
    assert claims["iss"] == discovery(ehr)["issuer"] == ehr.fhir
    assert claims["aud"] == STAFF_ID
    assert claims["sub"] == user_id
    assert claims["nonce"] == params["nonce"]
    assert claims["name"] == name
    assert claims["handoff_roles"] == roles
    assert claims["fhirUser"] == f"{ehr.fhir}/Practitioner/{user_id}"
    resource = practitioner(ehr, claims["fhirUser"])
    assert resource["resourceType"] == "Practitioner"
    assert resource["name"][0]["text"] == name

    # The access token of a plain sign-in opens no FHIR data, but does open userinfo.
    api = ehr.api(token)
    assert api.get(f"{ehr.fhir}/Patient/P01-pt", timeout=10).status_code == 403
    info = requests.get(
        discovery(ehr)["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert info.status_code == 200, info.text
    assert info.json() == {
        "sub": user_id,
        "name": name,
        "fhirUser": claims["fhirUser"],
        "handoff_roles": roles,
    }

    # The EHR session stays: the next sign-in of this browser needs no form.
    verifier, challenge = pkce_pair()
    again = browser.get(
        discovery(ehr)["authorization_endpoint"],
        params=authorize_params(challenge),
        allow_redirects=False,
        timeout=10,
    )
    code = redirect_query(again)["code"]
    second = verified_claims(ehr, exchange(ehr, code, verifier).json()["id_token"])
    assert second["sub"] == user_id


def test_track_board_still_signs_in_the_physician(ehr: RunningSandbox) -> None:
    browser = requests.Session()
    board = browser.get(f"{ehr.base}/", timeout=10)
    assert board.status_code == 200
    assert "Avery Demo, MD" in board.text
    verifier, challenge = pkce_pair()
    response = browser.get(
        discovery(ehr)["authorization_endpoint"],
        params=authorize_params(challenge),
        allow_redirects=False,
        timeout=10,
    )
    claims = verified_claims(
        ehr, exchange(ehr, redirect_query(response)["code"], verifier).json()["id_token"]
    )
    assert (claims["sub"], claims["name"], claims["handoff_roles"]) == PHYSICIAN
    assert claims["fhirUser"] == f"{ehr.fhir}/Practitioner/{PHYSICIAN[0]}"


def test_prompt_login_asks_again_and_switches_user(ehr: RunningSandbox) -> None:
    browser = requests.Session()
    browser.get(f"{ehr.base}/", timeout=10)  # signed in as the physician
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge, prompt="login")
    url = discovery(ehr)["authorization_endpoint"]
    first = browser.get(url, params=params, allow_redirects=False, timeout=10)
    assert first.status_code == 302
    assert urlsplit(first.headers["Location"]).path == "/auth/login"
    page = browser.get(urljoin(ehr.base, first.headers["Location"]), timeout=10)
    csrf, target, _ = login_form(page.text)
    assert "prompt" not in parse_qs(urlsplit(target).query)  # no sign-in loop
    assert "You are signed in as Avery Demo, MD" in page.text
    browser.post(
        f"{ehr.base}/auth/login",
        data={"csrf_token": csrf, "next": target, "user": "demo-auditor"},
        timeout=10,
        allow_redirects=False,
    )
    done = browser.get(urljoin(ehr.base, target), allow_redirects=False, timeout=10)
    query = redirect_query(done)
    assert query["state"] == params["state"]
    claims = verified_claims(ehr, exchange(ehr, query["code"], verifier).json()["id_token"])
    assert claims["sub"] == "demo-auditor"
    assert claims["handoff_roles"] == ["auditor"]


def test_prompt_login_without_a_session_asks_once(ehr: RunningSandbox) -> None:
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge, prompt="login")
    query = redirect_query(sign_in_through_form(ehr, requests.Session(), params, "demo-coach-2"))
    claims = verified_claims(ehr, exchange(ehr, query["code"], verifier).json()["id_token"])
    assert claims["sub"] == "demo-coach-2"


def test_public_staff_client_uses_pkce_alone(ehr: RunningSandbox) -> None:
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge, client_id=PUBLIC_STAFF_ID)
    query = redirect_query(sign_in_through_form(ehr, requests.Session(), params, "demo-coach-2"))
    wrong = exchange(ehr, query["code"], pkce_pair()[0], PUBLIC_STAFF_ID, None)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    response = exchange(ehr, query["code"], verifier, PUBLIC_STAFF_ID, None)
    assert response.status_code == 200, response.text
    claims = verified_claims(ehr, response.json()["id_token"])
    assert (claims["aud"], claims["sub"]) == (PUBLIC_STAFF_ID, "demo-coach-2")


def test_confidential_staff_client_must_authenticate(ehr: RunningSandbox) -> None:
    verifier, challenge = pkce_pair()
    query = redirect_query(
        sign_in_through_form(ehr, requests.Session(), authorize_params(challenge), "demo-coach-1")
    )
    anonymous = exchange(ehr, query["code"], verifier, STAFF_ID, None)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    wrong = exchange(ehr, query["code"], verifier, STAFF_ID, "not-the-secret")
    assert wrong.status_code == 401
    assert exchange(ehr, query["code"], verifier).status_code == 200


def test_plain_oidc_refusals(ehr: RunningSandbox) -> None:
    browser = requests.Session()
    browser.get(f"{ehr.base}/", timeout=10)
    url = discovery(ehr)["authorization_endpoint"]
    _, challenge = pkce_pair()

    def refused(**extra: str) -> dict[str, str]:
        params = authorize_params(challenge, **extra)
        response = browser.get(url, params=params, allow_redirects=False, timeout=10)
        query = redirect_query(response)
        assert "code" not in query, extra
        assert query["state"] == params["state"]
        return query

    # aud is optional for a plain sign-in, but when sent it must be the FHIR base.
    assert refused(aud="https://other.example/fhir")["error"] == "invalid_request"
    sent = browser.get(
        url, params=authorize_params(challenge, aud=ehr.fhir), allow_redirects=False, timeout=10
    )
    assert "code" in redirect_query(sent)
    # PKCE S256 stays required.
    assert refused(code_challenge_method="plain")["error"] == "invalid_request"
    params = authorize_params(challenge)
    del params["code_challenge"], params["code_challenge_method"]
    query = redirect_query(browser.get(url, params=params, allow_redirects=False, timeout=10))
    assert query["error"] == "invalid_request"
    # prompt=none without an EHR session: login_required, sent back to the app.
    stranger = requests.get(
        url, params=authorize_params(challenge, prompt="none"), allow_redirects=False, timeout=10
    )
    assert redirect_query(stranger)["error"] == "login_required"


@pytest.mark.parametrize(
    "scope",
    [
        "launch openid fhirUser patient/*.rs",
        "launch/patient openid fhirUser",
        "openid fhirUser patient/*.rs",
        "openid profile fhirUser user/Practitioner.rs",
        "openid system/*.read",
    ],
)
def test_smart_requests_still_require_aud(ehr: RunningSandbox, scope: str) -> None:
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope.startswith("launch "):
        params["launch"] = ehr.launch("P01-pt").launch  # a real EHR launch, minus aud
    else:
        ehr.browser.get(f"{ehr.base}/", timeout=10)
    response = ehr.authorize(**params)
    query = redirect_query(response, REDIRECT_URI)
    assert query["error"] == "invalid_request"
    assert "aud" in query["error_description"]


def test_ehr_launch_with_openid_still_carries_context(ehr: RunningSandbox) -> None:
    token = ehr.token("P02-pt", "launch openid fhirUser profile patient/*.rs")
    assert token["patient"] == "P02-pt"
    assert token["need_patient_banner"] is True
    claims = verified_claims(ehr, token["id_token"])
    assert claims["sub"] == PHYSICIAN[0]
    assert claims["handoff_roles"] == ["physician"]


def test_sign_in_form_is_csrf_protected(ehr: RunningSandbox) -> None:
    browser = requests.Session()
    csrf, _, _ = login_form(browser.get(f"{ehr.base}/auth/login", timeout=10).text)
    url = f"{ehr.base}/auth/login"
    for form in (
        {"user": "demo-coach-1", "next": "/"},
        {"csrf_token": csrf + "x", "user": "demo-coach-1", "next": "/"},
        {"csrf_token": "", "user": "demo-coach-1", "next": "/"},
    ):
        forged = browser.post(url, data=form, allow_redirects=False, timeout=10)
        assert forged.status_code == 400
        assert "Location" not in forged.headers
        assert "CSRF" in forged.text
    # Another browser cannot reuse this session's token.
    other = requests.Session()
    other.get(url, timeout=10)
    stolen = other.post(
        url,
        data={"csrf_token": csrf, "user": "demo-coach-1", "next": "/"},
        allow_redirects=False,
        timeout=10,
    )
    assert stolen.status_code == 400
    # None of that signed anyone in: authorize still asks to sign in.
    _, challenge = pkce_pair()
    pending = browser.get(
        f"{ehr.base}/auth/authorize",
        params=authorize_params(challenge),
        allow_redirects=False,
        timeout=10,
    )
    assert pending.status_code == 302
    assert urlsplit(pending.headers["Location"]).path == "/auth/login"
    # Unknown users are refused; `next` stays on this origin.
    unknown = browser.post(
        url, data={"csrf_token": csrf, "user": "nobody", "next": "/"}, timeout=10
    )
    assert unknown.status_code == 400
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        signed = browser.post(
            url,
            data={"csrf_token": csrf, "user": "demo-coach-1", "next": evil},
            allow_redirects=False,
            timeout=10,
        )
        assert signed.status_code == 302
        assert signed.headers["Location"] == "/", evil


def test_userinfo_needs_an_openid_token(ehr: RunningSandbox) -> None:
    url = discovery(ehr)["userinfo_endpoint"]
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    bogus = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bogus.status_code == 401
    no_openid = ehr.token("P01-pt", "launch patient/*.rs")
    narrow = requests.get(
        url, headers={"Authorization": f"Bearer {no_openid['access_token']}"}, timeout=10
    )
    assert narrow.status_code == 403


def test_authlib_flask_client_signs_staff_in(ehr: RunningSandbox, staff_app_port: int) -> None:
    """What Handoff's staff sign-in does (authlib Flask client: discovery, state, nonce,
    PKCE S256, client_secret_basic, id_token checks) accepts what the sandbox issues."""
    origin = f"http://127.0.0.1:{staff_app_port}"
    app = Flask("staff-stand-in")
    app.secret_key = secrets.token_urlsafe(16)
    oauth = OAuth(app)
    oauth.register(
        "staff",
        client_id="handoff-staff-authlib",
        client_secret=STAFF_SECRET,
        server_metadata_url=f"{ehr.fhir}/.well-known/openid-configuration",
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )

    @app.get("/staff/login")
    def login():  # type: ignore[no-untyped-def]
        return oauth.staff.authorize_redirect(f"{origin}/staff/callback")

    @app.get("/staff/callback")
    def callback():  # type: ignore[no-untyped-def]
        token = oauth.staff.authorize_access_token()
        return jsonify({"userinfo": dict(token["userinfo"]), "keys": sorted(token)})

    handle = serve_in_thread(app, port=staff_app_port)
    try:
        browser = requests.Session()
        start = browser.get(f"{origin}/staff/login", allow_redirects=False, timeout=10)
        assert start.status_code == 302
        sent = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["Location"]).query).items()}
        assert "aud" not in sent and sent["code_challenge_method"] == "S256"
        back = sign_in_through_form(ehr, browser, sent, "demo-coach-1")
        assert back.headers["Location"].startswith(f"{origin}/staff/callback?")
        done = browser.get(back.headers["Location"], timeout=10)
        assert done.status_code == 200, done.text
        result = done.json()
        assert "patient" not in result["keys"]
        info = result["userinfo"]
        assert info["sub"] == "demo-coach-1"
        assert info["name"] == "Jordan Rivera, CPRS"
        assert info["handoff_roles"] == ["coach"]
        assert info["fhirUser"] == f"{ehr.fhir}/Practitioner/demo-coach-1"
        assert info["iss"] == ehr.fhir
    finally:
        handle.stop()


def test_cli_registers_the_staff_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartapp.sandbox.__main__ import clients_for, parse_args

    monkeypatch.delenv("HANDOFF_STAFF_CLIENT_SECRET", raising=False)
    demo, staff = clients_for(parse_args(["--app-url", "http://127.0.0.1:8700/"]))
    assert (demo.client_id, demo.redirect_uris) == (
        "handoff-demo",
        ["http://127.0.0.1:8700/callback"],
    )
    assert staff.client_id == "handoff-staff"
    assert staff.redirect_uris == [
        "http://127.0.0.1:8700/staff/callback",
        "http://127.0.0.1:8700/partner/callback",
    ]
    assert staff.launch_url == "http://127.0.0.1:8700/"
    assert (staff.auth_method, staff.client_secret) == (
        "client_secret_basic",
        "handoff-staff-demo-secret",
    )
    monkeypatch.setenv("HANDOFF_STAFF_CLIENT_SECRET", "from-env")
    assert clients_for(parse_args([]))[1].client_secret == "from-env"
    assert clients_for(parse_args(["--staff-client-secret", "x"]))[1].client_secret == "x"
    public = clients_for(parse_args(["--staff-client-secret", ""]))[1]
    assert (public.auth_method, public.client_secret) == ("none", None)
