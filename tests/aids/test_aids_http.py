"""The decision aids over real HTTP (issue 13 item 4): a sandbox EHR and Handoff on real
ports, real OAuth launches, real databases.

- the COWS calculator on charts where buprenorphine is suggested without a COWS this visit
  (expected.json: P02, P05, P11, P12, P15, P17, P18, P21, P24, P28, P29; never P01, P10, P14,
  P23, P25, P27, which have one, even below the threshold): 11 answers -> an
  Observation at the EHR (fhir-rest) with the site's code, the value, this encounter, the
  labels; kept in Handoff under a profile that takes no Observation (epic); either way the
  screen evaluates again at once and buprenorphine's variant becomes ED induction;
- the DSM-5 checklist on a chart with `confirm-oud` (P05): its result in the linkage note;
- hostile input: missing items, out-of-range scores, no CSRF, another browser's context, an
  aid that is not offered, a signed visit: refused, nothing recorded.
"""

from __future__ import annotations

import pytest
import requests

from tests import launch_flow
from tests.aids.helpers import (
    COWS_14,
    COWS_CODE,
    bup,
    cows_form,
    cows_observations,
    events,
    note_texts,
    open_screen,
    shown,
)
from tests.stacks import start_stack


@pytest.fixture(scope="module")
def rest(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("aids-rest"), shared_dir)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def epic(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("aids-epic"), shared_dir, "epic", "epic")
    yield stack
    stack.stop()


def test_cows_written_to_the_ehr_and_the_variant_changes(rest):
    screen = open_screen(rest, "P02-pt")
    before = shown(rest.database_url, screen.context_id)
    assert bup(before)["variant"] == "home-initiation"
    assert before["aids"]["cows"] == {"offered": True, "latest": None}
    assert 'id="aid-cows"' in screen.page and screen.page.count('name="cows-pulse"') == 4
    assert not cows_observations(rest, "P02-pt")

    answer = screen.post("/aids/cows", cows_form(screen, COWS_14))
    assert answer.status_code in (302, 303), answer.text[:300]
    assert answer.headers["Location"].endswith(f"/c/{screen.context_id}#aid-cows")
    # A double click (the same answers again before the screen came back): recorded once.
    assert screen.post("/aids/cows", cows_form(screen, COWS_14)).status_code in (302, 303)

    # The EHR holds the score: the site's code, the value, this encounter, the labels.
    [obs] = cows_observations(rest, "P02-pt")
    assert obs["status"] == "final"
    assert obs["valueQuantity"]["value"] == 14
    assert obs["encounter"]["reference"] == "Encounter/P02-enc"
    assert obs["subject"]["reference"] == "Patient/P02-pt"
    assert (obs["code"]["coding"][0]["system"], obs["code"]["coding"][0]["code"]) == COWS_CODE
    labels = {(s["system"].rsplit("/", 1)[1], s["code"]) for s in obs["meta"]["security"]}
    assert {("v3-Confidentiality", "R"), ("v3-ActCode", "OPIOIDUD")} <= labels
    assert obs["performer"][0]["reference"].endswith("Practitioner/demo-ed-physician")
    assert obs["effectiveDateTime"] and obs["identifier"][0]["value"]

    # The screen evaluates again through the engine: ED induction, the calculator gone.
    page = screen.reload()
    after = shown(rest.database_url, screen.context_id)
    assert bup(after)["variant"] == "ed-induction"
    assert after["aids"]["cows"]["offered"] is False
    assert after["aids"]["cows"]["latest"] == {"reference": f"Observation/{obs['id']}", "value": 14}
    assert 'data-variant="ed-induction"' in page
    assert 'id="aid-cows"' not in page
    assert 'data-cows-total="14" data-cows-written="yes"' in page
    [event] = events(rest.database_url, "aid-cows", "P02-pt")
    assert event["written"] is True and event["resource"] == f"Observation/{obs['id']}"
    assert event["total"] == 14 and event["band"] == "moderate" and "observation" not in event


def test_cows_kept_in_handoff_where_the_profile_takes_no_observation(epic):
    screen = open_screen(epic, "P24-pt")
    assert bup(shown(epic.database_url, screen.context_id))["variant"] == "home-initiation"
    answer = screen.post("/aids/cows", cows_form(screen, COWS_14))
    assert answer.status_code in (302, 303), answer.text[:300]

    assert not cows_observations(epic, "P24-pt")  # nothing reached the EHR
    [event] = events(epic.database_url, "aid-cows", "P24-pt")
    assert event["written"] is False and "takes no Observation" in event["reason"]
    kept = event["observation"]
    assert kept["valueQuantity"]["value"] == 14
    assert kept["encounter"]["reference"] == "Encounter/P24-enc"

    page = screen.reload()
    after = shown(epic.database_url, screen.context_id)
    assert bup(after)["variant"] == "ed-induction"  # the kept score counts, through the engine
    assert bup(after)["cautions"] == ["alcohol"]
    assert 'data-cows-written="no"' in page and "kept in Handoff" in page

    # A new launch of the same visit still counts the kept score.
    again = open_screen(epic, "P24-pt")
    assert bup(shown(epic.database_url, again.context_id))["variant"] == "ed-induction"


def test_dsm5_checklist_result_in_the_linkage_note(rest):
    screen = open_screen(rest, "P05-pt")
    before = shown(rest.database_url, screen.context_id)
    assert "confirm-oud" in bup(before)["cautions"]
    assert before["aids"]["dsm5"] == {"offered": True}
    assert 'id="aid-dsm5"' in screen.page and screen.page.count('name="dsm5"') == 11

    ticked = ["craving", "tolerance", "withdrawal", "larger-amounts"]
    form = [("csrf_token", screen.csrf)] + [("dsm5", c) for c in ticked]
    answer = screen.post("/aids/dsm5", form)
    assert answer.status_code in (302, 303), answer.text[:300]
    page = screen.reload()
    assert 'data-dsm5-count="4" data-dsm5-band="moderate"' in page
    [event] = events(rest.database_url, "aid-dsm5", "P05-pt")
    assert event["count"] == 4 and event["band"] == "moderate"
    assert event["met"] == ["larger-amounts", "craving", "tolerance", "withdrawal"]

    signed = launch_flow.sign_all(screen.launch, screen.app_url)
    assert signed.status_code in (200, 302, 303), signed.text[:300]
    [note] = note_texts(rest, "P05-pt")
    assert "DSM-5 OUD checklist: 4 of 11 DSM-5 OUD criteria met (moderate)" in note
    assert "Craving, or a strong desire or urge to use opioids." in note

    # Signed: the aids are closed.
    closed = screen.post("/aids/dsm5", [("csrf_token", screen.csrf), ("dsm5", "craving")])
    assert closed.status_code == 409
    assert len(events(rest.database_url, "aid-dsm5", "P05-pt")) == 1


def test_hostile_input_is_refused_and_nothing_is_recorded(rest):
    screen = open_screen(rest, "P12-pt")
    assert shown(rest.database_url, screen.context_id)["aids"]["cows"]["offered"] is True

    missing = cows_form(screen, {k: v for k, v in COWS_14.items() if k != "tremor"})
    answer = screen.post("/aids/cows", missing)
    assert answer.status_code == 422 and "Tremor" in answer.text

    for bad in ("2", "-1", "99", "x"):  # restlessness scores 0, 1, 3 or 5
        answer = screen.post("/aids/cows", cows_form(screen, COWS_14 | {"restlessness": bad}))
        assert answer.status_code == 422, bad

    no_csrf = {k: v for k, v in cows_form(screen, COWS_14).items() if k != "csrf_token"}
    assert screen.post("/aids/cows", no_csrf).status_code == 400

    # Another browser (its own session, its own CSRF token) cannot use this launch.
    other = open_screen(rest, "P12-pt")
    assert other.context_id != screen.context_id
    stolen = screen.post("/aids/cows", cows_form(other, COWS_14), browser=other.browser)
    assert stolen.status_code == 403
    stranger = requests.Session()
    assert stranger.post(screen.url("/aids/dsm5"), data={}, timeout=10).status_code == 400

    bogus = [("csrf_token", screen.csrf), ("dsm5", "made-up")]
    assert screen.post("/aids/dsm5", bogus).status_code == 422

    assert not events(rest.database_url, "aid-cows", "P12-pt")
    assert not events(rest.database_url, "aid-dsm5", "P12-pt")
    assert not cows_observations(rest, "P12-pt")


def test_an_aid_not_offered_is_refused(rest):
    screen = open_screen(rest, "P24-pt")  # OUD diagnosed: no confirm-oud, no checklist
    assert shown(rest.database_url, screen.context_id)["aids"]["dsm5"] == {"offered": False}
    assert 'id="aid-dsm5"' not in screen.page
    answer = screen.post("/aids/dsm5", [("csrf_token", screen.csrf), ("dsm5", "craving")])
    assert answer.status_code == 409
    # P01 has a COWS this visit (11): no calculator, and a posted one is refused.
    p01 = open_screen(rest, "P01-pt")
    aids = shown(rest.database_url, p01.context_id)["aids"]
    assert aids["cows"]["offered"] is False and aids["cows"]["latest"]["value"] == 11
    assert p01.post("/aids/cows", cows_form(p01, COWS_14)).status_code == 409
    # P10's COWS this visit is below the threshold (home initiation): it counts all the same.
    p10 = open_screen(rest, "P10-pt")
    aids = shown(rest.database_url, p10.context_id)["aids"]
    assert bup(shown(rest.database_url, p10.context_id))["variant"] == "home-initiation"
    assert aids["cows"]["offered"] is False and aids["cows"]["latest"]["value"] < 8
    assert 'id="aid-cows"' not in p10.page
    assert not events(rest.database_url, "aid-dsm5", "P24-pt")
    assert not events(rest.database_url, "aid-cows", "P01-pt")


@pytest.mark.parametrize(
    ("patient", "fault", "reason"),
    [
        ("P15-pt", {"refuse_create": ["Observation"]}, "The EHR refused the score"),
        ("P11-pt", {"drop_write_scopes": True}, "did not grant Handoff Observation writes"),
    ],
)
def test_cows_kept_when_the_ehr_refuses_or_grants_no_write(rest, patient, fault, reason):
    controls = launch_flow.Controls(rest.ehr_url)
    controls.faults(**fault)
    try:
        screen = open_screen(rest, patient)
        assert shown(rest.database_url, screen.context_id)["aids"]["cows"]["offered"] is True
        answer = screen.post("/aids/cows", cows_form(screen, COWS_14))
        assert answer.status_code in (302, 303), answer.text[:300]
        page = screen.reload()
    finally:
        controls.clear()
    [event] = events(rest.database_url, "aid-cows", patient)
    assert event["written"] is False and reason in event["reason"]
    assert not cows_observations(rest, patient)
    assert bup(shown(rest.database_url, screen.context_id))["variant"] == "ed-induction"
    assert 'data-cows-written="no"' in page
