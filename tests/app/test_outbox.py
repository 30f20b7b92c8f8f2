"""The outbox: one referral per visit whatever the clicks, backoff with jitter, and the plan a
profile makes (what goes to the EHR, what stays in Handoff)."""

from __future__ import annotations

import random
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import requests
from sqlalchemy import func, select

from smartapp.db import Referral
from smartapp.writeback import outbox, profiles
from smartapp.writeback.resources import ItemDecision, SignedReferral, WriteSettings, build_plan
from tests import launch_flow
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.launch_flow import Controls
from tests.smart_helpers import FhirReader, token_for


def sign_form(page_html: str, **choices) -> dict:
    token = re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1)
    return {"csrf_token": token, "consult-mode": "in-person", **choices}


def test_200_double_clicks_and_parallel_submits_make_one_referral(sandbox, handoff):
    Controls(sandbox.url).clear()
    launch = launch_flow.full(handoff.url, sandbox.url, "P05-pt")
    assert launch.final.status_code == 200
    context_id = launch.final.url.rsplit("/", 1)[1]
    form = sign_form(
        launch.final.text,
        **{
            "decision-prc-consult": "accept",
            "decision-moud-buprenorphine": "accept",
            "decision-naloxone-kit": "accept",
        },
    )
    cookies = launch.browser.cookies.get_dict()

    def submit(_):
        browser = requests.Session()
        browser.cookies.update(cookies)
        return browser.post(
            f"{handoff.url}/c/{context_id}/sign", data=form, timeout=60, allow_redirects=False
        ).status_code

    with ThreadPoolExecutor(max_workers=25) as pool:
        statuses = list(pool.map(submit, range(200)))
    assert set(statuses) == {302}, statuses  # every click answered, none an error

    db = handoff.app.extensions["handoff"].db
    with db.session() as session:
        rows = session.scalar(
            select(func.count()).select_from(Referral).where(Referral.patient_id == "P05-pt")
        )
        referral = session.scalars(select(Referral).where(Referral.patient_id == "P05-pt")).one()
    assert rows == 1
    assert referral.status == "written"
    token = token_for(sandbox.url, "P05-pt", TEST_READER, TEST_READER_REDIRECT)
    fhir = FhirReader(f"{sandbox.url}/fhir", token["access_token"])
    assert len(fhir.search("ServiceRequest?patient=P05-pt")) == 1
    assert len(fhir.search("DocumentReference?patient=P05-pt")) == 1
    assert len(fhir.search("Task?patient=P05-pt")) == 1


def test_backoff_grows_with_jitter_is_capped_and_honours_retry_after():
    rng = random.Random(7)
    waits = [outbox.backoff_seconds(n, rng=rng) for n in range(1, 15)]
    assert 1.0 <= waits[0] <= 2.0
    assert 4.0 <= waits[2] <= 8.0
    assert max(waits) <= outbox.BACKOFF_CAP_SECONDS
    assert len({round(w, 6) for w in waits}) == len(waits)  # jittered, not lock-step
    assert outbox.backoff_seconds(3, retry_after=30) == 30
    assert outbox.backoff_seconds(3, retry_after=10**6) == outbox.BACKOFF_CAP_SECONDS


SETTINGS = WriteSettings(
    identifier_system="urn:handoff:referral",
    service_request_code={"system": "http://snomed.info/sct", "code": "461481000124109"},
    note_type={"system": "http://loinc.org", "code": "11488-4"},
    doc_status="preliminary",
    coach_team={"display": "Coach team"},
    part2_program=False,
    draft_medications=True,
    medication_codes={
        "naloxone-kit": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7242"}
    },
    coach_pool={"reference": "Group/coach-pool", "display": "Coach pool"},
)


def referral_for(decisions) -> SignedReferral:
    from tests.app.test_writeback import BUP, PRC

    return SignedReferral(
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        encounter_start="2026-11-20T10:00:00Z",
        user_ref="Practitioner/doc",
        user_name=None,
        signed_at=datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
        pack_id="default",
        pack_version="1",
        pack_hash="00" * 32,
        shown=(PRC, BUP),
        decisions=tuple(decisions),
        opioid=True,
    )


def modes(plan: dict) -> dict[str, str]:
    return {op["type"]: op["mode"] for op in plan["operations"]}


def test_epic_plan_writes_the_note_and_drafts_and_keeps_the_order_in_handoff():
    plan = build_plan(
        referral_for([ItemDecision("prc-consult", True), ItemDecision("moud-buprenorphine", True)]),
        SETTINGS,
        profiles.profile("epic"),
    )
    assert plan["transaction"] is False and plan["conditional_create"] is False
    assert modes(plan) == {
        "ServiceRequest": "local",
        "Task": "local",
        "DocumentReference": "rest",
        "Provenance": "local",
    }
    doc = next(op for op in plan["operations"] if op["type"] == "DocumentReference")
    assert doc["resource"]["docStatus"] == "preliminary"  # Epic: preliminary = draft
    assert doc["resource"]["content"][0]["attachment"]["contentType"].startswith("text/plain")


def test_oracle_plan_uses_a_communication_and_forces_a_final_note():
    plan = build_plan(
        referral_for(
            [
                ItemDecision("prc-consult", True),
                ItemDecision("moud-buprenorphine", False, "Patient declined"),
            ]
        ),
        SETTINGS,
        profiles.profile("oracle-health"),
    )
    assert modes(plan) == {
        "ServiceRequest": "local",
        "Task": "local",
        "Communication": "rest",
        "DocumentReference": "rest",
        "Provenance": "rest",
    }
    doc = next(op for op in plan["operations"] if op["type"] == "DocumentReference")
    assert doc["resource"]["docStatus"] == "final"
    assert doc["resource"]["context"]["period"]["end"] == "2026-11-20T15:00:00Z"
    comm = next(op for op in plan["operations"] if op["type"] == "Communication")
    assert comm["resource"]["recipient"] == [
        {"reference": "Group/coach-pool", "display": "Coach pool"}
    ]


def test_local_references_become_logical_ones():
    plan = build_plan(
        referral_for([ItemDecision("prc-consult", True)]),
        SETTINGS,
        profiles.profile("oracle-health"),
    )
    local = outbox._local_references(plan)
    comm = next(op for op in plan["operations"] if op["type"] == "Communication")
    resolved = outbox._resolve(comm["resource"], {}, local)
    based_on = resolved["basedOn"][0]
    assert "reference" not in based_on
    assert based_on["identifier"]["system"] == "urn:handoff:referral"
