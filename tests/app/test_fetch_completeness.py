"""Chart completeness over real HTTP: the sandbox EHR withholds a consent-restricted record
(42 CFR Part 2) with an OperationOutcome saying so, answers in small pages, and lets its
next links expire; Handoff's chart read (`read_chart`, as the launch screen reads) marks
that type unread, and the engine's `chart-incomplete` notice names it. Never a partial
answer taken for the whole chart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from smartapp.engine import Evaluation, evaluate, load_pack
from smartapp.engine.readable import readable_chart
from smartapp.fhir import chart as fhir_chart
from smartapp.fhir.client import ChartLimits, ChartRead, FhirClient, IncompleteSearch
from smartapp.sandbox.fhir.access import FullAccess
from tests.engine.helpers import RULES
from tests.sandbox.conftest import CLIENT_ID, NOW, REDIRECT_URI, RunningSandbox, start_sandbox
from tests.smart_helpers import token_for

PATIENT, ENCOUNTER = "P01-pt", "P01-enc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PART2 = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "42CFRPart2"}
#: Methadone the patient takes, recorded by a 42 CFR Part 2 program (consent restricted).
METHADONE = {
    "resourceType": "MedicationStatement",
    "id": "p01-part2-methadone",
    "meta": {"security": [PART2]},
    "status": "active",
    "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6813"}]},
    "subject": {"reference": f"Patient/{PATIENT}"},
    "effectivePeriod": {"start": "2026-12-01T00:00:00Z"},
}
#: A second, older OUD diagnosis: two Conditions, so a page of one has a next page.
OLD_OUD = {
    "resourceType": "Condition",
    "id": "p01-old-oud",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "verificationStatus": {"coding": [{"code": "confirmed"}]},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F11.20"}]},
    "subject": {"reference": f"Patient/{PATIENT}"},
    "onsetDateTime": "2025-03-01T00:00:00Z",
}


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp("completeness"), test_controls=True)
    service = running.app.extensions["sandbox"].service
    with service.db.write() as conn:  # seeded as the EHR holds them
        for resource in (METHADONE, OLD_OUD):
            rtype, rid = resource["resourceType"], resource["id"]
            service.create(conn, rtype, dict(resource), FullAccess(), assigned_id=rid)
    yield running
    running.handle.stop()


@pytest.fixture(scope="module")
def client(ehr: RunningSandbox) -> FhirClient:
    token = token_for(ehr.base, PATIENT, CLIENT_ID, REDIRECT_URI)
    return FhirClient(ehr.fhir, token["access_token"])


@pytest.fixture(autouse=True)
def no_faults_left(ehr: RunningSandbox) -> Iterator[None]:
    yield
    assert requests.post(f"{ehr.base}/_sandbox/faults", json={}, timeout=10).ok


def set_faults(ehr: RunningSandbox, **faults: Any) -> None:
    response = requests.post(f"{ehr.base}/_sandbox/faults", json=faults, timeout=10)
    assert response.status_code == 200, response.text


def read(client: FhirClient, limits: ChartLimits | None = None) -> ChartRead:
    return client.read_chart(PATIENT, ENCOUNTER, NOW, observation_days=3650, limits=limits)


def decide(read: ChartRead) -> Evaluation:
    """As the launch screen decides: the readable chart, and what could not be read."""
    readable = readable_chart(read.resources)
    unread = sorted(read.incomplete | readable.incomplete_types)
    pack = load_pack(RULES / "packs" / "default.yaml")
    return evaluate(readable.chart, NOW, pack, ENCOUNTER, unread=unread)


def keys(read: ChartRead, rtype: str) -> set[str]:
    return {r["id"] for r in read.resources if r["resourceType"] == rtype}


def test_a_well_behaved_ehr_gives_the_whole_chart(client: FhirClient) -> None:
    """Baseline: the restricted record is disclosed, the chart complete, and the patient
    on methadone gets "continue" rather than buprenorphine."""
    found = read(client)
    assert (found.incomplete, found.notices) == (set(), [])
    assert METHADONE["id"] in keys(found, "MedicationStatement")
    result = decide(found)
    assert result.notice("chart-incomplete") is None
    kinds = [s.kind for s in result.suggestions]
    assert kinds == ["prc-consult", "moud-continue", "naloxone-kit"]
    assert [(w.kind, w.reason) for w in result.withheld] == [("moud-buprenorphine", "on-moud")]


def test_records_withheld_for_consent_make_the_chart_incomplete(
    ehr: RunningSandbox, client: FhirClient
) -> None:
    """The EHR leaves the Part 2 methadone out and says so: MedicationStatement is unread,
    the physician is told why, and buprenorphine carries the chart-incomplete caution."""
    set_faults(ehr, withhold_restricted=True)
    found = read(client)
    assert METHADONE["id"] not in keys(found, "MedicationStatement")
    assert found.incomplete == {"MedicationStatement"}
    (notice,) = found.notices
    assert "withheld some MedicationStatement records" in notice
    assert "suppressed" in notice and "42 CFR Part 2" in notice
    result = decide(found)
    incomplete = result.notice("chart-incomplete")
    assert incomplete is not None and incomplete.unread == ("MedicationStatement",)
    bup = next(s for s in result.suggestions if s.kind == "moud-buprenorphine")
    assert "chart-incomplete" in bup.cautions
    assert bup.variant == "home-initiation"  # COWS 11: below the raised threshold, 13


def test_small_pages_are_all_read(ehr: RunningSandbox, client: FhirClient) -> None:
    """One match a page: every next page is followed, and the chart is complete."""
    set_faults(ehr, page_size=1)
    found = read(client)
    assert keys(found, "Condition") == {"P01-cond1", OLD_OUD["id"]}
    assert (found.incomplete, found.notices) == (set(), [])


def test_a_next_page_that_fails_makes_the_type_unread(
    ehr: RunningSandbox, client: FhirClient
) -> None:
    """The second page of Conditions has expired (410): the first is read, Condition is
    unread, and the engine's notice names it."""
    set_faults(ehr, page_size=1, expire_next_pages=True)
    found = read(client)
    assert len(keys(found, "Condition")) == 1
    assert "Condition" in found.incomplete
    assert any("a next page could not be read (HTTP 410)" in n for n in found.notices)
    incomplete = decide(found).notice("chart-incomplete")
    assert incomplete is not None and "Condition" in incomplete.unread


def test_paging_cut_by_the_readers_limits_is_never_complete(
    ehr: RunningSandbox, client: FhirClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page limit reached while a next link remains, and the resource limit reached:
    each leaves its type unread."""
    set_faults(ehr, page_size=1)
    monkeypatch.setattr(fhir_chart, "MAX_PAGES", 1)
    found = read(client)
    assert "Condition" in found.incomplete
    incomplete = decide(found).notice("chart-incomplete")
    assert incomplete is not None and "Condition" in incomplete.unread
    monkeypatch.undo()
    few = read(client, ChartLimits(max_resources=3))
    assert few.incomplete and len(few.resources) == 3


def test_search_all_never_returns_part_of_an_answer(
    ehr: RunningSandbox, client: FhirClient
) -> None:
    """FhirClient.search_all over the same faults: all pages, or IncompleteSearch."""
    query = f"Condition?patient={PATIENT}&_count=1"
    assert {r["id"] for r in client.search_all(query)} == {"P01-cond1", OLD_OUD["id"]}
    with pytest.raises(IncompleteSearch, match="More than 1 pages") as cut:
        client.search_all(query, max_pages=1)
    assert len(cut.value.resources) == 1
    set_faults(ehr, expire_next_pages=True)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": query}}],
    }
    first = client.post_bundle(batch)["entry"][0]["resource"]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert requests.get(next_url, headers=client.headers(), timeout=10).status_code == 410


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shared_dir: Any) -> Iterator[Any]:
    """The sandbox and Handoff on real ports, the Part 2 methadone seeded for P01."""
    from tests.stacks import start_stack

    running = start_stack(tmp_path_factory.mktemp("completeness-screen"), shared_dir)
    service = running.ehr.server.app.extensions["sandbox"].service
    with service.db.write() as conn:
        created = dict(METHADONE, effectivePeriod={"start": "2000-01-01T00:00:00Z"})
        service.create(conn, "MedicationStatement", created, FullAccess(), assigned_id="m-p2")
    yield running
    running.stop()


def test_the_screen_names_what_the_ehr_withheld(stack: Any) -> None:
    """Through the launch: the physician reads that the EHR withheld MedicationStatement
    records (and why), and the engine's notice naming the type."""
    from tests import launch_flow

    faults = {"withhold_restricted": True}
    answer = requests.post(f"{stack.ehr_url}/_sandbox/faults", json=faults, timeout=10)
    assert answer.status_code == 200, answer.text
    try:
        launch = launch_flow.full(stack.app.url, stack.ehr_url, PATIENT)
    finally:
        assert requests.post(f"{stack.ehr_url}/_sandbox/faults", json={}, timeout=10).ok
    page = launch.final.text
    assert launch.final.status_code == 200, page[:300]
    assert "The EHR withheld some MedicationStatement records" in page
    assert "42 CFR Part 2" in page
    assert "The EHR did not let Handoff read: MedicationStatement." in page
