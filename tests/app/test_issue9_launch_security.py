"""Issue 9, launch security, from the attacker's side over real HTTP: open redirects after staff
sign-in, session fixation at the launch, staff sessions that outlive logout, what the access
logs keep, what the staff sign-in cookie carries, the EHR's own error text, and sessions that
end before their time."""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import requests

from tests import launch_flow
from tests.launch_flow import Controls


@pytest.fixture
def controls(sandbox):
    controls = Controls(sandbox.url)
    controls.clear()
    yield controls
    controls.clear()


def warned(caplog, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


# --- staff sign-in, driven with `requests` as the browser ------------------------------------


def follow_to(browser: requests.Session, url: str, stop_prefix: str) -> requests.Response:
    """Follow redirects one at a time until one points at `stop_prefix` (not followed), or a
    page is answered. The sandbox's sign-in page is answered by picking the user."""
    answer = browser.get(url, allow_redirects=False, timeout=15)
    for _ in range(10):
        if answer.status_code not in (301, 302, 303):
            return answer
        location = urljoin(answer.url, answer.headers["Location"])
        if location.startswith(stop_prefix):
            return answer
        answer = browser.get(location, allow_redirects=False, timeout=15)
    raise AssertionError("too many redirects")


def staff_sign_in(
    handoff_url: str, user_id: str, next_raw: str | None = None, browser=None
) -> tuple[requests.Session, requests.Response]:
    """Sign in at /staff/login (with a raw, already-encoded `next` query value) through the
    sandbox's sign-in page; returns the browser and Handoff's answer to the callback."""
    browser = browser or requests.Session()
    login = f"{handoff_url}/staff/login" + (f"?next={next_raw}" if next_raw is not None else "")
    callback_prefix = f"{handoff_url}/staff/callback"
    page = follow_to(browser, login, callback_prefix)
    if page.status_code == 200 and 'name="user"' in page.text:
        csrf = html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1])
        target = html.unescape(re.search(r'name="next" value="([^"]*)"', page.text)[1])
        signed = browser.post(
            page.url.split("?")[0],
            data={"csrf_token": csrf, "next": target, "user": user_id},
            allow_redirects=False,
            timeout=15,
        )
        assert signed.status_code == 302, signed.text[:300]
        page = follow_to(browser, urljoin(page.url, signed.headers["Location"]), callback_prefix)
    assert page.status_code in (302, 303), page.text[:300]
    callback = page.headers["Location"]
    assert callback.startswith(callback_prefix), callback
    return browser, browser.get(callback, allow_redirects=False, timeout=15)


# --- 31: open redirect after staff sign-in ---------------------------------------------------


@pytest.mark.parametrize(
    "next_raw",
    [
        "/%09/evil.example",
        "/%0A/evil.example",
        "%0A",
        "//evil.example",
        "/%5C/evil.example",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
        "/%0D%0ASet-Cookie:%20x=y",
        "javascript:alert(1)",
        "%20//evil.example",
    ],
)
def test_sign_in_redirects_only_to_a_same_origin_path(sandbox, handoff, next_raw):
    _, answer = staff_sign_in(handoff.url, "demo-coach-1", next_raw)
    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:300])
    location = answer.headers["Location"]
    # What a browser does with it: strip tabs and newlines, read backslashes as slashes.
    as_browser = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip()
    target = urlsplit(urljoin(f"{handoff.url}/staff/callback", as_browser))
    assert f"{target.scheme}://{target.netloc}" == handoff.url, location
    assert target.path.startswith("/") and not target.path.startswith("//"), location
    assert "evil" not in target.netloc


def test_sign_in_keeps_a_local_next(sandbox, handoff):
    _, answer = staff_sign_in(handoff.url, "demo-auditor", "/console/events%3Fpatient%3Dp1")
    assert answer.headers["Location"] == "/console/events?patient=p1"


# --- 36: the JWKS keeps its own cache header --------------------------------------------------


def test_jwks_is_cacheable_and_pages_are_not(sandbox, handoff):
    jwks = requests.get(f"{handoff.url}/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200
    assert jwks.headers["Cache-Control"] == "max-age=300"
    page = requests.get(f"{handoff.url}/", timeout=10)
    assert page.headers["Cache-Control"] == "no-store"


# --- 20: the EHR's own error text ------------------------------------------------------------


def test_the_ehrs_authorize_error_is_shown_and_logged(sandbox, handoff, controls, caplog):
    """A launch value used twice: the EHR redirects back with its error and description."""
    first = launch_flow.authorize(launch_flow.start(handoff.url, sandbox.url, "P02-pt"))
    query = urlencode({"iss": f"{sandbox.url}/fhir", "launch": first.launch_value})
    again = launch_flow.Launch(browser=first.browser)
    answer = launch_flow.follow(first.browser, f"{handoff.url}/launch?{query}")
    again.authorize_url = answer.headers["Location"]
    launch_flow.authorize(again)
    assert "error_description=" in again.callback_url
    page = launch_flow.finish(again)
    assert page.status_code == 403
    text = html.unescape(page.text)
    assert "did not authorize" in text
    assert "invalid_request" in text
    assert "'launch' is unknown, expired or already used" in text
    assert warned(caplog, "'launch' is unknown, expired or already used")


def test_the_ehrs_error_description_is_escaped_and_cleaned(sandbox, handoff, controls, caplog):
    launch = launch_flow.start(handoff.url, sandbox.url, "P02-pt")
    state = launch.authorize_params["state"]
    said = 'Invalid client_id "x". Expected "y" <script>alert(1)</script>\nFORGED log line'
    answer = launch_flow.follow(
        launch.browser,
        f"{handoff.url}/callback?"
        + urlencode({"state": state, "error": "invalid_client", "error_description": said}),
    )
    assert answer.status_code == 403
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text
    text = html.unescape(answer.text)
    assert 'Invalid client_id "x". Expected "y"' in text and "invalid_client" in text
    lines = [r.getMessage() for r in caplog.records if 'Expected "y"' in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)  # no forged log line


def test_the_token_endpoints_error_description_is_shown(sandbox, handoff_basic, monkeypatch):
    from tests.conftest import BASIC_SECRET_ENV

    monkeypatch.setenv(BASIC_SECRET_ENV, "not-the-secret")
    launch = launch_flow.full(handoff_basic.url, sandbox.url, "P03-pt")
    assert launch.final.status_code == 400
    text = html.unescape(launch.final.text)
    assert "refused the token request (invalid_client" in text
    assert "secret" in text.split("invalid_client", 1)[1]  # the EHR's description of the check


# --- 34: access logs keep no query string ----------------------------------------------------

SECRETS = {
    "code": "CODE-d41d8cd98f00b204",
    "state": "STATE-e9800998ecf8427e",
    "patient": "PATIENT-Q1x7",
    "launch": "LAUNCH-5d41402abc4b2a76",
}


def secret_requests(app_url: str, sandbox_url: str) -> None:
    """What passes through an access log: a callback, a launch (whose redirect carries state,
    a PKCE challenge and the launch value), an auditor's search, an EHR page as Referer."""
    referer = {"Referer": f"{sandbox_url}/chart/x?patient={SECRETS['patient']}"}
    query = f"code={SECRETS['code']}&state={SECRETS['state']}&patient={SECRETS['patient']}"
    requests.get(f"{app_url}/callback?{query}", headers=referer, timeout=10)
    requests.get(
        f"{app_url}/launch",
        params={"iss": f"{sandbox_url}/fhir", "launch": SECRETS["launch"]},
        allow_redirects=False,
        timeout=10,
    )
    requests.get(f"{app_url}/console/events?patient={SECRETS['patient']}", timeout=10)


def assert_no_secret(log: str) -> None:
    for name, value in SECRETS.items():
        assert value not in log, f"the {name} is in the access log:\n{log}"


@pytest.mark.parametrize(
    "log_format",
    [
        None,  # the format the shipped config sets
        # an operator's own format with every atom that can carry a query string
        '"%(r)s" %(U)s ?%(q)s "%(f)s" %({referer}i)s %({location}o)s %({raw_uri}e)s '
        "%({query_string}e)s %({request_uri}e)s",
    ],
)
def test_gunicorn_access_log_keeps_no_query_string(tmp_path, sandbox, launch_dir, log_format):
    import os
    import secrets
    import subprocess
    import sys

    from smartapp.config import REPO_ROOT
    from smartapp.launch.tokens import TokenCipher
    from smartapp.web.serving import reserve_port
    from tests.stacks import started

    port = reserve_port()
    access_log = tmp_path / "access.log"
    data = tmp_path / "data"
    data.mkdir()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:smartapp.web.gunicorn_conf",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
    ]
    if log_format:
        command += ["--access-logformat", log_format]
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{data / 'handoff.sqlite'}",  # keys kept apart from data
        "HANDOFF_LAUNCH_DIR": str(launch_dir),
        "HANDOFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HANDOFF_SECRET_KEY": secrets.token_urlsafe(32),
        "HANDOFF_TOKEN_KEY": TokenCipher.new_key(),
        "HANDOFF_KEYS_DIR": str(tmp_path / "keys"),
        "HANDOFF_AUDIT_SIGNING_KEY": str(tmp_path / "audit-key.pem"),
    }
    with open(tmp_path / "gunicorn.err", "w") as errors:  # gunicorn's own log, for a failure
        process = subprocess.Popen(
            [*command, "smartapp.wsgi:app"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            started(process, f"http://127.0.0.1:{port}/")
            secret_requests(f"http://127.0.0.1:{port}", sandbox.url)
        finally:
            process.terminate()
            process.wait(15)
    log = access_log.read_text()
    assert "GET /callback?" in log and "GET /console/events?" in log  # the lines are there
    assert_no_secret(log)


def test_dev_server_access_log_keeps_no_query_string(sandbox, handoff, caplog):
    import socket

    caplog.set_level(logging.INFO, logger="werkzeug")
    secret_requests(handoff.url, sandbox.url)
    # A raw `"` in the query (a client that does not encode it) must not end the redaction.
    host, port = handoff.url.removeprefix("http://").split(":")
    raw = f'GET /callback?x="&code={SECRETS["code"]}&state={SECRETS["state"]} HTTP/1.1\r\n'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((raw + f"Host: {host}\r\nConnection: close\r\n\r\n").encode())
        while sock.recv(65536):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("/callback?" in line for line in lines)
    assert_no_secret("\n".join(lines))


# --- 21: sessions that end before their time ---------------------------------------------------


def context_of(handoff, launch) -> str:
    return launch.final.url.rsplit("/", 1)[1]


def set_expiry(handoff, context_id: str, seconds_left: float) -> None:
    """Handoff's record of when the access token expires (the EHR's own clock is not moved)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from smartapp.db import LaunchContext

    with handoff.app.extensions["handoff"].db.session() as session:
        session.execute(
            update(LaunchContext)
            .where(LaunchContext.id == context_id)
            .values(access_expires_at=datetime.now(UTC) + timedelta(seconds=seconds_left))
        )


def referral_status(handoff, patient_id: str) -> str:
    from sqlalchemy import select

    from smartapp.db import Referral

    with handoff.app.extensions["handoff"].db.session() as session:
        rows = session.scalars(select(Referral).where(Referral.patient_id == patient_id)).all()
        return rows[-1].status


def test_online_access_is_asked_where_the_ehr_advertises_it(
    sandbox, handoff, controls, monkeypatch
):
    scopes = launch_flow.start(handoff.url, sandbox.url, "P02-pt").authorize_params["scope"]
    assert "online_access" in scopes.split()
    controls.faults(smart_config_unavailable=True)  # no capabilities known: not asked
    launch_flow.forget_ehr_documents(handoff, monkeypatch)  # as the kept ones expire
    scopes = launch_flow.start(handoff.url, sandbox.url, "P02-pt").authorize_params["scope"]
    assert "online_access" not in scopes.split()


def test_the_launch_gets_a_refresh_token(sandbox, handoff, controls):
    launch = launch_flow.full(handoff.url, sandbox.url, "P05-pt")
    services = handoff.app.extensions["handoff"]
    from smartapp.db import LaunchContext

    with services.db.session() as session:
        context = session.get(LaunchContext, context_of(handoff, launch))
        token = services.cipher.decrypt(context.token_ciphertext, context.id)
    assert token.get("refresh_token")
    assert "online_access" in token["scope"].split()


def test_sandbox_gives_no_refresh_token_without_online_or_offline_access(sandbox):
    from tests.conftest import TEST_READER, TEST_READER_REDIRECT
    from tests.smart_helpers import token_for

    plain = token_for(sandbox.url, "P01-pt", TEST_READER, TEST_READER_REDIRECT)
    assert "refresh_token" not in plain
    online = token_for(
        sandbox.url,
        "P01-pt",
        TEST_READER,
        TEST_READER_REDIRECT,
        scope="launch openid fhirUser patient/*.rs online_access",
    )
    assert online["refresh_token"]


def test_sign_at_65_seconds_of_a_2_minute_token_without_refresh(sandbox, handoff, controls):
    """55 s are left: the token is still good, so it is used (the EHR refuses refreshes)."""
    controls.faults(access_token_lifetime=120, refuse_refresh=True)
    launch = launch_flow.full(handoff.url, sandbox.url, "P06-pt")
    assert launch.final.status_code == 200
    set_expiry(handoff, context_of(handoff, launch), 55)
    before = controls.token_requests()
    signed = launch_flow.sign_all(launch, handoff.url)
    assert signed.status_code == 200
    assert referral_status(handoff, "P06-pt") == "written", signed.text[-800:]
    assert controls.token_requests() == before  # no refresh was needed


def test_sign_near_the_end_of_a_2_minute_token_refreshes(sandbox, handoff, controls):
    """Inside the margin (5 s left of 120 s), the refresh token keeps the session alive."""
    controls.faults(access_token_lifetime=120)
    launch = launch_flow.full(handoff.url, sandbox.url, "P08-pt")
    set_expiry(handoff, context_of(handoff, launch), 5)
    before = controls.token_requests()
    signed = launch_flow.sign_all(launch, handoff.url)
    assert signed.status_code == 200
    assert referral_status(handoff, "P08-pt") == "written", signed.text[-800:]
    assert controls.token_requests() == before + 1  # one refresh


def test_extra_scopes_add_to_the_defaults(tmp_path, sandbox):
    from smartapp.launch.client import may
    from smartapp.launch.registrations import DEFAULT_SCOPES
    from smartapp.web.serving import reserve_port
    from tests.conftest import CLIENT_IDS, start_app, write_registration

    folder = write_registration(
        tmp_path / "launch",
        sandbox.url,
        client_id=CLIENT_IDS["public"],
        extra_scopes=["patient/Procedure.rs"],
    )
    app = start_app(tmp_path / "app", reserve_port(), folder)
    try:
        launch = launch_flow.start(app.url, sandbox.url, "P02-pt")
    finally:
        app.stop()
    scopes = launch.authorize_params["scope"].split()
    assert "patient/Procedure.rs" in scopes
    for scope in DEFAULT_SCOPES:  # each default still asked (reads merged with writes)
        if "/" in scope:
            type_ = scope.split("/")[1].split(".")[0]
            assert may(" ".join(scopes), type_, "r") and may(" ".join(scopes), type_, "s")
        else:
            assert scope in scopes


# --- 32: session fixation at the launch --------------------------------------------------------


def session_cookie(browser: requests.Session) -> str | None:
    return browser.cookies.get("handoff_session")


def test_a_planted_cookie_does_not_open_the_victims_screen(sandbox, handoff, controls):
    # The attacker gets a session of their own from Handoff...
    attacker = requests.Session()
    launch_flow.start(handoff.url, sandbox.url, "P01-pt", browser=attacker)
    planted = session_cookie(attacker)
    assert planted
    # ...and plants it in the victim's browser, who then launches Handoff from the chart.
    victim = requests.Session()
    victim.cookies.set("handoff_session", planted, domain="127.0.0.1", path="/")
    launch = launch_flow.authorize(
        launch_flow.start(handoff.url, sandbox.url, "P09-pt", browser=victim)
    )
    screen = launch_flow.finish(launch)
    assert screen.status_code == 200 and "Test P09" in screen.text
    assert session_cookie(victim) != planted  # a fresh session was issued at the callback
    stolen = attacker.get(screen.url, timeout=15)
    assert stolen.status_code == 403
    assert "Test P09" not in stolen.text
    # Nor does a copy of the planted cookie in a third browser.
    copy = requests.Session()
    copy.cookies.set("handoff_session", planted, domain="127.0.0.1", path="/")
    assert copy.get(screen.url, timeout=15).status_code == 403


def test_an_earlier_launch_in_the_same_browser_still_works(sandbox, handoff, controls):
    """A fresh session at each callback must not cut off the tab launched before it."""
    first = launch_flow.full(handoff.url, sandbox.url, "P10-pt")
    second = launch_flow.authorize(
        launch_flow.start(handoff.url, sandbox.url, "P14-pt", browser=first.browser)
    )
    assert launch_flow.finish(second).status_code == 200
    again = first.browser.get(first.final.url, timeout=15)
    assert again.status_code == 200 and "Test P10" in again.text
    signed = launch_flow.sign_all(first, handoff.url)  # the form rendered before the second
    assert signed.status_code == 200
    assert referral_status(handoff, "P10-pt") in ("written", "queued")


# --- 33 and 36: staff sessions on the server; the sign-in cookie carries no secret -------------


def cookie_payload(value: str) -> str:
    """What a Flask session cookie says (it is signed, not encrypted: anyone can read it)."""
    import base64
    import zlib

    compressed = value.startswith(".")
    body = value.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return (zlib.decompress(data) if compressed else data).decode()


def logout_form_token(page: str) -> str:
    match = re.search(
        r'action="/staff/logout"><input type="hidden" name="csrf_token" value="([^"]+)"', page
    ) or re.search(r'name="csrf_token" value="([^"]+)"', page)
    return html.unescape(match[1])


def copy_of(browser: requests.Session) -> requests.Session:
    thief = requests.Session()
    thief.cookies.set("handoff_session", session_cookie(browser), domain="127.0.0.1", path="/")
    return thief


def test_staff_sign_in_cookie_carries_no_pkce_verifier_or_nonce(sandbox, handoff):
    browser = requests.Session()
    start = browser.get(f"{handoff.url}/staff/login", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    nonce = re.search(r"[?&]nonce=([^&]+)", start.headers["Location"])[1]
    payload = cookie_payload(session_cookie(browser))
    assert "code_verifier" not in payload and "nonce" not in payload and nonce not in payload
    # ...and sign-in still works with them kept on the server.
    _, done = staff_sign_in(handoff.url, "demo-auditor", browser=browser)
    assert done.status_code == 302 and browser.get(f"{handoff.url}/console/").status_code == 200


def test_sign_out_ends_the_staff_session_for_every_copy_of_the_cookie(sandbox, handoff):
    browser, _ = staff_sign_in(handoff.url, "demo-auditor")
    page = browser.get(f"{handoff.url}/console/", timeout=10)
    assert page.status_code == 200
    thief = copy_of(browser)
    assert thief.get(f"{handoff.url}/console/", timeout=10).status_code == 200
    out = browser.post(
        f"{handoff.url}/staff/logout",
        data={"csrf_token": logout_form_token(page.text)},
        allow_redirects=False,
        timeout=10,
    )
    assert out.status_code == 302
    again = thief.get(f"{handoff.url}/console/", allow_redirects=False, timeout=10)
    assert again.status_code == 302 and "/staff/login" in again.headers["Location"]


@pytest.mark.parametrize("limit", ["idle", "absolute"])
def test_staff_sessions_end_at_their_idle_and_absolute_limits(sandbox, handoff, limit):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from smartapp.db import StaffSession

    browser, _ = staff_sign_in(handoff.url, "demo-program-manager")
    assert browser.get(f"{handoff.url}/console/dashboard", timeout=10).status_code == 200
    config = handoff.app.config
    now = datetime.now(UTC)
    if limit == "idle":  # no request for longer than the idle limit
        values = {"last_seen_at": now - timedelta(seconds=config["STAFF_SESSION_IDLE_SECONDS"] + 5)}
    else:  # in use all along, but signed in longer ago than the absolute limit
        values = {"created_at": now - timedelta(seconds=config["STAFF_SESSION_MAX_SECONDS"] + 5)}
    with handoff.app.extensions["handoff"].db.session() as session:
        session.execute(update(StaffSession).values(**values))
    ended = browser.get(f"{handoff.url}/console/dashboard", allow_redirects=False, timeout=10)
    assert ended.status_code == 302 and "/staff/login" in ended.headers["Location"]


def test_staff_sign_in_issues_a_fresh_session(sandbox, handoff):
    """A staff cookie planted in another's browser gives the planter nothing of theirs."""
    attacker, _ = staff_sign_in(handoff.url, "demo-coach-1")
    planted = session_cookie(attacker)
    victim = requests.Session()
    victim.cookies.set("handoff_session", planted, domain="127.0.0.1", path="/")
    staff_sign_in(handoff.url, "demo-auditor", browser=victim)
    assert session_cookie(victim) != planted
    assert victim.get(f"{handoff.url}/console/", timeout=10).status_code == 200
    console = attacker.get(f"{handoff.url}/console/", allow_redirects=False, timeout=10)
    assert console.status_code != 200 and "Morgan Ellis" not in console.text


@pytest.mark.parametrize(
    ("capabilities", "scopes_supported", "asked"),
    [
        (("permission-online",), (), True),
        ((), ("openid", "online_access"), True),  # advertised among the scopes only
        (("permission-offline",), ("offline_access",), False),
        ((), (), False),
    ],
)
def test_online_access_follows_what_the_ehr_advertises(capabilities, scopes_supported, asked):
    from smartapp.launch.client import SmartConfiguration, requested_scopes
    from smartapp.launch.registrations import Registration

    registration = Registration(id="x", name="X", iss="https://ehr.example/fhir", client_id="c")
    config = SmartConfiguration(
        "https://ehr.example/authorize",
        "https://ehr.example/token",
        None,
        None,
        capabilities,
        ("S256",),
        scopes_supported,
    )
    assert ("online_access" in requested_scopes(registration, config, False).split()) is asked
    # A registration that asks offline_access itself is not asked online_access on top.
    offline = registration.model_copy(update={"extra_scopes": ["offline_access"]})
    scopes = requested_scopes(offline, config, False).split()
    assert "offline_access" in scopes and "online_access" not in scopes
