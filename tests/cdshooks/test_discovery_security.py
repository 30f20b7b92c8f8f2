"""CDS Hooks discovery and security over real HTTP: the tests' CDS client signs ES384 JWTs
with its own key; an unknown issuer, a bad signature, a wrong aud, an expired JWT or a
replayed jti get 401 and nothing is read (no chart request reaches the EHR, no log event)."""

from __future__ import annotations

import time

import requests
from sqlalchemy import func, select

from smartapp.audit.models import LogEvent
from smartapp.cdshooks.prefetch import TEMPLATES
from smartapp.db import Database
from tests.cdshooks.cds_client import PATIENT_VIEW, CdsClient, new_key
from tests.cdshooks.conftest import ORIGIN
from tests.launch_flow import Controls

HOOKS = {"patient-view", "encounter-start", "order-select", "order-sign"}


def test_discovery_lists_the_hooks_with_prefetch_covering_the_engine(cds):
    found = cds.client.discovery()
    assert {s.hook for s in found.services} == HOOKS
    for service in found.services:
        assert service.prefetch is not None
        assert set(service.prefetch) == set(TEMPLATES)
        assert all("{{context.patientId}}" in t for t in service.prefetch.values())
        assert service.usageRequirements


def test_discovery_without_a_jwt_is_refused(cds):
    response = requests.get(cds.client.url(), timeout=10)
    assert response.status_code == 401


def _events(cds) -> int:
    with Database(cds.stack.database_url).session() as session:
        return session.scalar(select(func.count()).select_from(LogEvent)) or 0


def refused_without_reading(cds, token: str, body: dict) -> None:
    before = _events(cds)
    ehr = Controls(cds.stack.ehr_url)
    ehr.clear_requests()
    response = cds.client.post(cds.client.url(PATIENT_VIEW), body, token=token)
    assert response.status_code == 401, response.text
    assert "cards" not in response.json()
    assert ehr.requests() == []  # the EHR was not asked for anything
    assert _events(cds) == before  # nothing shown, nothing logged


def test_refusals_read_nothing(cds):
    patient = "P01-pt"
    # The prefetch is absent: a call that got past the checks would read the chart with the
    # token (and log what it showed).
    body = cds.client.request(patient, "P01-enc", None, cds.authorization(patient))
    url = cds.client.url(PATIENT_VIEW)
    stranger = CdsClient(cds.client.app_url, "https://unknown.example", new_key("x"), "")
    refused_without_reading(cds, stranger.jwt(url), body)
    forger = CdsClient(cds.client.app_url, cds.client.issuer, new_key("test-ehr-1"), "")
    refused_without_reading(cds, forger.jwt(url), body)  # same kid, another key
    refused_without_reading(cds, cds.client.jwt(cds.client.url("handoff-encounter-start")), body)
    refused_without_reading(cds, cds.client.jwt(url + "/"), body)
    past = int(time.time()) - 600
    refused_without_reading(cds, cds.client.jwt(url, iat=past, exp=past + 60), body)
    refused_without_reading(cds, cds.client.jwt(url, exp=int(time.time()) + 3600), body)
    token = cds.client.jwt(url)
    Controls(cds.stack.ehr_url).clear_requests()
    first = cds.client.post(url, body, token=token)
    assert first.status_code == 200, first.text
    assert Controls(cds.stack.ehr_url).requests()  # a call that passes reads the chart
    refused_without_reading(cds, token, body)  # the same jti again: a replay


def test_malformed_requests_get_400_with_a_reason(cds):
    url = cds.client.url(PATIENT_VIEW)
    body = cds.client.request("P01-pt", "P01-enc", {})
    cases = [
        ({k: v for k, v in body.items() if k != "hookInstance"}, "hookInstance"),
        (body | {"hook": "order-sign"}, "hook"),
        (body | {"context": {"patientId": "P01-pt"}}, "userId"),
        (body | {"fhirServer": "https://elsewhere.example/fhir"}, "fhirServer"),
        (body | {"prefetch": {"patient": "not a resource"}}, "prefetch.patient"),
    ]
    for bad, named in cases:
        response = cds.client.post(url, bad)
        assert response.status_code == 400, (named, response.text)
        assert named in response.json()["reason"]


def test_cors_allows_only_the_listed_origins(cds):
    url = cds.client.url(PATIENT_VIEW)
    preflight = {"Access-Control-Request-Method": "POST"}
    listed = requests.options(url, headers={"Origin": ORIGIN} | preflight, timeout=10)
    assert listed.status_code == 204
    assert listed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in listed.headers["Access-Control-Allow-Headers"]
    assert "POST" in listed.headers["Access-Control-Allow-Methods"]
    body = cds.client.request("P06-pt", "P06-enc", {})
    answer = requests.post(
        url,
        json=body,
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {cds.client.jwt(url)}"},
        timeout=10,
    )
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    stranger = requests.options(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in stranger.headers
