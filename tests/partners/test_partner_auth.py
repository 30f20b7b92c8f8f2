"""Handoff's authorization server for partners (SMART Backend Services): a partner's client
gets a short-lived token for a good ES384 assertion; each bad one is refused with
invalid_client naming the check, and a revoked client or key is refused at once, tokens
already issued included."""

from __future__ import annotations

import time

import pytest
import requests
import yaml

from tests.partners.helpers import PartnerClient, new_key


def refused(answer: requests.Response, words: str) -> None:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client" and words in body["error_description"], body


def test_discovery_names_the_token_url_and_what_it_takes(partner_stack):
    config = requests.get(
        f"{partner_stack.app_url}/partner/.well-known/smart-configuration", timeout=5
    ).json()
    assert config["token_endpoint"] == f"{partner_stack.app_url}/partner/auth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"ES384", "RS384"}
    assert "system/Task.u" in config["scopes_supported"]
    metadata = requests.get(f"{partner_stack.app_url}/partner/fhir/metadata", timeout=5).json()
    assert metadata["resourceType"] == "CapabilityStatement"
    task = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Task")
    assert "Task:focus" in task["searchInclude"]


def test_a_good_assertion_earns_a_short_token_with_the_scopes_asked(partner_stack):
    a = partner_stack.a
    answer = a.token_response(scope="system/Task.rs system/Observation.rs")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] <= 300
    assert body["scope"] == "system/Task.rs"  # never more than the partner file allows
    assert answer.headers["Cache-Control"] == "no-store"
    # Read-only token: no update.
    denied = a.put("Task/x", {"resourceType": "Task"}, "v", body["access_token"])
    assert denied.status_code == 403
    # No token, a made-up token: 401 with an OperationOutcome.
    assert requests.get(f"{a.app_url}/partner/fhir/Task", timeout=5).status_code == 401
    assert a.get("Task", "made-up").status_code == 401
    other = a.get("Observation?patient=x", body["access_token"])
    assert other.status_code == 404 and other.json()["resourceType"] == "OperationOutcome"


def test_bad_assertions_are_refused(partner_stack):
    a = partner_stack.a
    assertion = a.assertion(jti="once-only")
    assert a.token_response(assertion).status_code == 200
    refused(a.token_response(assertion), "replay")
    refused(a.token_response(a.assertion(exp_in=-60)), "expired")
    refused(a.token_response(a.assertion(exp_in=600)), "more than 5 minutes")
    refused(a.token_response(a.assertion(aud=f"{a.app_url}/partner/auth/token/")), "aud")
    refused(a.token_response(a.assertion(aud=f"{partner_stack.ehr_url}/auth/token")), "aud")
    refused(a.token_response(a.assertion(kid="nobody-knows")), "no key with kid")
    stranger = new_key("bridge-1")  # right kid, wrong key: the signature fails
    refused(a.token_response(a.assertion(key=stranger)), "signature")
    refused(a.token_response(a.assertion(client_id="not-a-partner")), "unknown client")
    other = partner_stack.b  # B's own key cannot sign for A
    refused(a.token_response(a.assertion(key=other.keys[0])), "no key with kid")


def test_revoking_a_key_or_the_client_refuses_at_once(partner_stack):
    a, folder = partner_stack.a, partner_stack.partners_dir
    token_1 = a.token()  # earned with key bridge-1
    token_2 = requests.post(
        a.token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": a.assertion(key=a.keys[1]),
            "scope": "system/Task.rs",
        },
        timeout=10,
    ).json()["access_token"]
    try:
        _edit(a, folder, revoked_kids=["bridge-1"])
        refused(a.token_response(), "revoked")
        assert a.get("Task", token_1).status_code == 401
        assert a.get("Task", token_2).status_code == 200  # the other key still works
        _edit(a, folder, revoked=True)
        refused(a.token_response(a.assertion(key=a.keys[1])), "revoked")
        assert a.get("Task", token_2).status_code == 401
    finally:
        _edit(a, folder)
    assert a.get("Task", a.token()).status_code == 200


def _edit(partner: PartnerClient, folder, **client_changes) -> None:
    """Hospital IT edits the partner's file (a new mtime even within the same second)."""
    path = folder / f"{partner.partner_id}.yaml"
    data = partner.file_data(**client_changes)
    text = yaml.safe_dump(data) + f"# edited {time.time_ns()}\n"
    path.write_text(text)


def test_a_jti_used_in_one_process_is_refused_in_another(partner_stack):
    """The replay guard is the database, not a process's memory: a second token server on the
    same database (another worker process, say) refuses the jti the first one took."""
    from smartapp.db import Database
    from smartapp.partners.authserver import AuthError, TokenServer
    from smartapp.partners.registry import PartnerDirectory

    a = partner_stack.a
    assertion = a.assertion()
    assert a.token_response(assertion).status_code == 200  # the app's server took it
    other = TokenServer(
        db=Database(partner_stack.database_url),
        partners=PartnerDirectory(partner_stack.partners_dir).current,
        token_url=a.token_url,
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "scope": "system/Task.rs",
    }
    with pytest.raises(AuthError, match="replay") as error:
        other.issue(form)
    assert error.value.status == 401
