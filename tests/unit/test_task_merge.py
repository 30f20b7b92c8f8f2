"""The pure side of lifecycle writes, with no server: our change merged onto the Task as the
EHR holds it (only the fields it sets, never another party's change overwritten), the
businessStatus steps as data, the queued follow-ups per profile (Task, ServiceRequest,
Provenance naming who acted), and the versioned PUT's conflict handling against an EHR kept
in memory (412 -> re-read -> our change found already landed, or re-applied)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from smartapp.fhir.errors import FhirError
from smartapp.writeback import profiles, versioned
from smartapp.writeback.actor import Actor
from smartapp.writeback.business_status import BusinessStatus, parse_steps, steps
from smartapp.writeback.plan import Method, Mode, WritePlan
from smartapp.writeback.resources import plan_writes
from smartapp.writeback.task_update import (
    TaskChanges,
    TaskOutput,
    applied,
    apply_task_changes,
    merge_service_request,
    merge_task,
)
from tests.unit.referrals import SETTINGS, referral

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)
COACH = Actor("coach", "Jordan Rivera", "Practitioner/coach-1")
PARTNER = Actor("partner", "Example Bridge Clinic", "urn:handoff:partner:bridge")
TASK = {
    "resourceType": "Task",
    "id": "t1",
    "meta": {"versionId": "3"},
    "status": "accepted",
    "focus": {"reference": "ServiceRequest/sr1"},
    "basedOn": [{"reference": "ServiceRequest/sr1"}],
    "owner": {"reference": "Practitioner/coach-1", "display": "Jordan Rivera"},
}
CONTACTED = TaskChanges(
    "in-progress", NOW, actor=COACH, business_status="contacted", contact_note="Met"
)


def step(code: str) -> dict:
    return steps().get(code).concept()


# -- the merge -----------------------------------------------------------------------------


def test_our_change_sets_only_its_fields_and_keeps_the_link():
    merged = merge_task(TASK, CONTACTED)
    assert merged["status"] == "in-progress"
    assert merged["businessStatus"] == {
        "coding": [
            {
                "system": "urn:handoff:task-business-status",
                "code": "contacted",
                "display": "Patient contacted",
            }
        ],
        "text": "Patient contacted",
    }
    assert merged["note"] == [
        {
            "text": "Coach contact: Met",
            "time": "2026-11-20T16:30:00Z",
            "authorReference": {"reference": "Practitioner/coach-1", "display": "Jordan Rivera"},
        }
    ]
    assert merged["focus"] == TASK["focus"] and merged["basedOn"] == TASK["basedOn"]
    assert merged["owner"] == TASK["owner"]  # the change names no owner
    assert TASK["status"] == "accepted"  # a copy


def test_another_partys_note_and_later_step_are_kept():
    theirs = TASK | {
        "note": [{"text": "EHR: call in the morning"}],
        "businessStatus": step("appointment-scheduled"),
    }
    merged = merge_task(theirs, CONTACTED)
    assert [n["text"] for n in merged["note"]] == ["EHR: call in the morning", "Coach contact: Met"]
    assert merged["businessStatus"] == step("appointment-scheduled")  # ours is earlier
    later = merge_task(theirs, replace(CONTACTED, business_status="appointment-attended"))
    assert later["businessStatus"]["coding"][0]["code"] == "appointment-attended"


def test_a_closed_task_stays_closed_and_a_reason_goes_with_a_close():
    cancelled = TASK | {"status": "cancelled", "statusReason": {"text": "EHR: transferred"}}
    merged = merge_task(cancelled, CONTACTED)
    assert merged["status"] == "cancelled" and merged["statusReason"] == cancelled["statusReason"]
    closing = TaskChanges("cancelled", NOW, actor=COACH, status_reason="Could not reach")
    assert merge_task(TASK, closing)["statusReason"] == {"text": "Could not reach"}
    assert "statusReason" not in merge_task(TASK, replace(CONTACTED, status_reason="x"))


def test_merging_twice_changes_nothing_more():
    once = merge_task(TASK, CONTACTED)
    assert applied(once, CONTACTED) and not applied(TASK, CONTACTED)
    assert merge_task(once, CONTACTED) == once  # no second note


def test_outputs_one_per_label_a_reference_or_words():
    first = merge_task(TASK, replace(CONTACTED, output="Appointment/a1"))
    assert first["output"] == [
        {"type": {"text": "Outcome"}, "valueReference": {"reference": "Appointment/a1"}}
    ]
    second = merge_task(first, replace(CONTACTED, output="Attended on 11/22", linked_program="B"))
    assert second["output"] == [
        {"type": {"text": "Outcome"}, "valueString": "Attended on 11/22"},
        {"type": {"text": "Linked program"}, "valueString": "B"},
    ]
    assert TaskOutput.of("Bridge clinic / walk-in").text == "Bridge clinic / walk-in"


def test_owner_a_staff_member_known_only_to_handoff():
    accepted = TaskChanges(
        "accepted", NOW, owner_ref="urn:staff:coach-9", owner_name="Robin", actor=COACH
    )
    assert merge_task(TASK, accepted)["owner"] == {
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:staff:coach-9"},
        "display": "Robin",
    }


def test_a_change_sets_what_differs_from_the_one_before():
    whole = replace(CONTACTED, owner_ref="Practitioner/coach-1", owner_name="Jordan Rivera")
    step_only = replace(whole, business_status="appointment-scheduled", actor=PARTNER)
    delta = step_only.since(whole)
    assert delta.sets == frozenset({"business_status"})
    theirs = TASK | {"status": "on-hold", "owner": {"display": "Other coach"}}
    merged = merge_task(theirs, delta)
    assert (merged["status"], merged["owner"]) == ("on-hold", {"display": "Other coach"})
    assert merged["businessStatus"]["coding"][0]["code"] == "appointment-scheduled"
    assert TaskChanges.from_json(delta.to_json()).to_json() == delta.to_json()
    assert whole.since(None) is whole


def test_service_request_completed_or_revoked_unless_closed_already():
    order = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active"}
    assert merge_service_request(order, "completed")["status"] == "completed"
    revoked = order | {"status": "revoked"}
    assert merge_service_request(revoked, "completed")["status"] == "revoked"
    assert TaskChanges("cancelled", NOW).service_request_status == "revoked"
    assert TaskChanges("rejected", NOW).service_request_status is None


# -- the steps as data ---------------------------------------------------------------------


def test_lifecycle_steps_from_the_catalog_file_in_order():
    lifecycle = steps()
    assert [s.code for s in lifecycle.steps] == [
        "contacted",
        "appointment-scheduled",
        "appointment-attended",
        "engaged-30-days",
    ]
    assert all(s.text for s in lifecycle.steps)
    assert lifecycle.rank({"text": "First appointment attended"}) == 2
    assert lifecycle.rank({"coding": [{"code": "other"}]}) is None
    assert lifecycle.get("made-up") == BusinessStatus("made-up", "made-up", lifecycle.system)
    with pytest.raises(ValueError, match="step and a text"):
        parse_steps({"steps": [{"code": "x"}]})
    with pytest.raises(ValueError, match="steps"):
        parse_steps(["x"])
    with pytest.raises(ValueError, match="in order"):  # Handoff's steps are fixed
        parse_steps({"steps": [{"step": "contacted", "text": "Reached"}]})


def test_a_site_gives_the_steps_its_own_codes_and_words():
    """A site's lifecycle file may name its own code system, codes and words; Handoff still
    knows each step (the worklist and dashboard count them) and sends the site's coding."""
    names = ("contacted", "appointment-scheduled", "appointment-attended", "engaged-30-days")
    site = parse_steps(
        {
            "system": "http://example.org/ed-bridge-steps",
            "steps": [
                {"step": n, "code": f"S{i}", "text": f"Step {i}"} for i, n in enumerate(names)
            ],
        }
    )
    attended = site.get("appointment-attended")
    assert attended.concept() == {
        "coding": [
            {"system": "http://example.org/ed-bridge-steps", "code": "S2", "display": "Step 2"}
        ],
        "text": "Step 2",
    }
    assert site.get("S2") == attended and site.rank({"coding": [{"code": "S2"}]}) == 2
    assert site.words()["engaged-30-days"] == "Step 3"


# -- the follow-ups a change queues, per profile ------------------------------------------


def written_plan(profile: str) -> WritePlan:
    plan = plan_writes(referral(), SETTINGS, profiles.profile(profile))
    for number, op in enumerate(plan.operations):
        if op.mode is Mode.REST:
            op.mark_written(f"id-{number}", "201")
    return plan


def test_a_close_queues_task_order_and_provenance_naming_the_actor():
    plan = written_plan("fhir-rest")
    attended = TaskChanges("completed", NOW, actor=PARTNER, business_status="appointment-attended")
    assert apply_task_changes(plan, attended) is True
    task, order, provenance = plan.operations[-3:]
    assert (task.type, task.method, task.of) == ("Task", Method.UPDATE, plan.task_create().key)
    assert (order.type, order.changes["status"], order.id) == (
        "ServiceRequest",
        "completed",
        plan.created("ServiceRequest").id,
    )
    assert provenance.about == [task.key, order.key] and provenance.is_follow_up
    assert provenance.conditional == f"_tag=urn:handoff:referral|{provenance.key}"
    authors = {a["type"]["coding"][0]["code"]: a["who"] for a in provenance.resource["agent"]}
    assert authors["author"] == {
        "type": "Organization",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": PARTNER.reference},
        "display": PARTNER.display,
    }
    assert authors["assembler"]["display"] == "Handoff"
    labels = {c["code"] for c in provenance.resource["meta"]["security"]}
    assert "R" in labels
    assert plan.rest_creates == [op for op in plan.operations[:6]]  # not the follow-ups
    again = WritePlan.from_json(plan.to_json())
    assert [op.to_json() for op in again.operations] == [op.to_json() for op in plan.operations]


def test_a_step_after_completion_does_not_touch_the_order_again():
    plan = written_plan("fhir-rest")
    done = TaskChanges("completed", NOW, actor=PARTNER, business_status="appointment-attended")
    apply_task_changes(plan, done)
    count = len(plan.operations)
    apply_task_changes(plan, replace(done, business_status="engaged-30-days"))
    assert [op.type for op in plan.operations[count:]] == ["Task", "Provenance"]


def test_kept_in_handoff_the_copies_change():
    plan = written_plan("epic")
    count = len(plan.operations)
    closing = TaskChanges("cancelled", NOW, actor=COACH, status_reason="Admitted")
    assert apply_task_changes(plan, closing) is False
    assert len(plan.operations) == count
    assert plan.task_create().resource["status"] == "cancelled"
    assert plan.created("ServiceRequest").resource["status"] == "revoked"


# -- the versioned PUT against an EHR in memory ----------------------------------------------


class VersionedEhr:
    """One Task with a history; PUT honours If-Match (412). `lose_answers`: that many PUTs
    commit but raise as a connection cut after the commit would."""

    base = "http://ehr.test/fhir"

    def __init__(self, task: dict) -> None:
        self.versions = [task | {"meta": {"versionId": "1", "lastUpdated": "2026-11-20T16:00:00Z"}}]
        self.lose_answers = 0
        self.calls: list[str] = []

    @property
    def current(self) -> dict:
        return self.versions[-1]

    def store(self, body: dict) -> dict:
        number = len(self.versions) + 1
        meta = {"versionId": str(number), "lastUpdated": f"2026-11-20T16:{number:02d}:00Z"}
        self.versions.append(body | {"meta": meta})
        return self.current

    def get(self, path: str) -> dict:
        self.calls.append("GET " + path.split("?")[0].split("/", 1)[-1])
        if path.endswith("_history?_count=50"):
            return {"entry": [{"resource": v} for v in reversed(self.versions)]}
        return self.current

    def put(self, body: dict, if_match: str | None = None) -> dict:
        self.calls.append("PUT")
        if if_match != f'W/"{self.current["meta"]["versionId"]}"':
            raise FhirError("conflict", status=412)
        stored = self.store(body)
        if self.lose_answers:
            self.lose_answers -= 1
            raise FhirError("cut", transient=True, unknown_outcome=True)
        return stored


def merge(current: dict) -> dict:
    return merge_task(current, CONTACTED)


def test_put_on_the_version_it_was_based_on():
    ehr = VersionedEhr(TASK)
    base = versioned.Version(ehr.current, "1")
    landed = versioned.put_change(ehr, "Task", "t1", merge, base)
    assert (landed.version, ehr.calls) == ("2", ["PUT"])


def test_a_conflict_rereads_and_reapplies_onto_theirs():
    ehr = VersionedEhr(TASK)
    base = versioned.Version(ehr.current, "1")
    ehr.store(ehr.current | {"note": [{"text": "Partner: called"}]})
    landed = versioned.put_change(ehr, "Task", "t1", merge, base)
    assert landed.version == "3" and ehr.calls == ["PUT", "GET t1", "GET t1/_history", "PUT"]
    assert [n["text"] for n in ehr.current["note"]] == ["Partner: called", "Coach contact: Met"]


def test_a_put_that_landed_unanswered_is_found_not_sent_again():
    ehr = VersionedEhr(TASK)
    base = versioned.Version(ehr.current, "1")
    ehr.lose_answers = 1
    with pytest.raises(FhirError):
        versioned.put_change(ehr, "Task", "t1", merge, base)
    # Another party changes the Task after ours landed; the retry must not re-apply ours.
    ehr.store(ehr.current | {"businessStatus": step("appointment-attended")})
    landed = versioned.put_change(ehr, "Task", "t1", merge, base)
    assert (landed.version, landed.http) == ("2", "200 (found)")
    assert len(ehr.versions) == 3
    assert ehr.current["businessStatus"] == step("appointment-attended")


def test_no_base_reads_first_and_writes_nothing_already_there():
    ehr = VersionedEhr(merge(TASK))
    landed = versioned.put_change(ehr, "Task", "t1", merge, None)
    assert landed.http == "200 (already so)" and ehr.calls == ["GET t1"]


def test_history_oldest_first_whatever_order_it_comes_in():
    ehr = VersionedEhr(TASK)
    for _ in range(3):
        ehr.store(ehr.current)
    shuffled = [ehr.versions[2], ehr.versions[0], ehr.versions[3], ehr.versions[1]]
    ehr.get = lambda path: {"entry": [{"resource": v} for v in shuffled]}  # type: ignore[method-assign]
    since = versioned._history_since(ehr, "Task", "t1", "2")
    assert [v.version for v in since or []] == ["3", "4"]
