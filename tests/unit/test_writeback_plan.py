"""The write plan built from a signed decision, per profile, with no server: which resources,
their identifiers, the Part 2 labels, the references between them, and the JSON round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from smartapp.writeback import profiles
from smartapp.writeback.plan import (
    Delivery,
    Method,
    Mode,
    Operation,
    Status,
    WritePlan,
    as_plan,
    resolve_references,
)
from smartapp.writeback.resources import (
    ItemDecision,
    build_plan,
    plan_writes,
    referral_key,
    transaction_bundle_from_operations,
)
from smartapp.writeback.task_update import TaskChanges, apply_task_changes, updated_task
from tests.unit.referrals import ALL_ACCEPTED, SETTINGS, SYSTEM, referral

pytestmark = pytest.mark.unit


def plan_for(profile: str, decisions=ALL_ACCEPTED, settings=SETTINGS, **overrides) -> WritePlan:
    return plan_writes(referral(decisions, **overrides), settings, profiles.profile(profile))


def by_type(plan: WritePlan) -> dict[str, Operation]:
    return {op.type: op for op in plan.operations}


def layout(plan: WritePlan) -> list[tuple[str, str, str]]:
    return [(op.type, op.mode.value, op.status.value) for op in plan.operations]


# -- which resources, per profile ------------------------------------------------------------


def test_fhir_rest_writes_everything_in_one_transaction():
    plan = plan_for("fhir-rest")
    assert plan.delivery is Delivery.TRANSACTION and plan.order_route == "rest"
    assert layout(plan) == [
        ("ServiceRequest", "rest", "pending"),
        ("Task", "rest", "pending"),
        ("MedicationRequest", "rest", "pending"),
        ("MedicationRequest", "rest", "pending"),
        ("DocumentReference", "rest", "pending"),
        ("Provenance", "rest", "pending"),
    ]
    assert all(op.method is Method.CREATE for op in plan.operations)
    assert by_type(plan)["DocumentReference"].resource["docStatus"] == "preliminary"


def test_epic_sends_the_note_and_drafts_one_by_one_and_keeps_the_order():
    plan = plan_for("epic")
    assert plan.delivery is Delivery.SEARCH_FIRST and plan.order_route == "cds-hooks"
    assert layout(plan) == [
        ("ServiceRequest", "local", "kept"),
        ("Task", "local", "kept"),
        ("MedicationRequest", "rest", "pending"),
        ("MedicationRequest", "rest", "pending"),
        ("DocumentReference", "rest", "pending"),
        ("Provenance", "local", "kept"),
    ]
    assert [op.type for op in plan.kept] == ["ServiceRequest", "Task", "Provenance"]


def test_oracle_hands_off_by_communication_and_forces_a_final_note():
    plan = plan_for("oracle-health")
    assert plan.delivery is Delivery.SEARCH_FIRST and plan.order_route == "kept"
    assert layout(plan) == [
        ("ServiceRequest", "local", "kept"),
        ("Task", "local", "kept"),
        ("Communication", "rest", "pending"),
        ("MedicationRequest", "local", "kept"),
        ("MedicationRequest", "local", "kept"),
        ("DocumentReference", "rest", "pending"),
        ("Provenance", "rest", "pending"),
    ]
    assert by_type(plan)["DocumentReference"].resource["docStatus"] == "final"


def test_no_coach_pool_means_no_communication():
    plan = plan_for("oracle-health", settings=replace(SETTINGS, coach_pool=None))
    assert "Communication" not in by_type(plan)


def test_declined_consult_and_no_drafts_leave_the_note_and_its_provenance():
    decisions = [ItemDecision("prc-consult", False, "Patient declined")]
    plan = plan_for("fhir-rest", decisions, settings=replace(SETTINGS, draft_medications=False))
    assert [op.type for op in plan.operations] == ["DocumentReference", "Provenance"]


def test_drafts_only_for_accepted_medications_with_a_code():
    codes = {"naloxone-kit": SETTINGS.medication_codes["naloxone-kit"]}
    decisions = [ItemDecision("moud-buprenorphine", True), ItemDecision("naloxone-kit", True)]
    plan = plan_for("fhir-rest", decisions, settings=replace(SETTINGS, medication_codes=codes))
    [draft] = [op for op in plan.operations if op.type == "MedicationRequest"]
    assert draft.resource["medicationCodeableConcept"]["coding"] == [codes["naloxone-kit"]]
    assert draft.resource["status"] == "draft" and draft.resource["intent"] == "proposal"


# -- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_identifiers_are_handoffs_stable_keys(profile):
    plan = plan_for(profile)
    kinds = {
        "ServiceRequest": "prc-consult",
        "Task": "prc-consult-task",
        "Communication": "prc-consult-communication",
        "DocumentReference": "linkage-note",
        "Provenance": "provenance",
    }
    for op in plan.operations:
        if op.type in kinds:
            assert op.key == referral_key("http://ehr.test/fhir", "e1", "p1", kinds[op.type])
        if op.type == "Provenance":  # found by its tag (a Provenance has no identifier)
            assert op.conditional == f"_tag={SYSTEM}|{op.key}"
            assert op.resource["meta"]["tag"] == [{"system": SYSTEM, "code": op.key}]
        else:
            assert op.conditional == f"identifier={SYSTEM}|{op.key}"
            assert op.resource["identifier"] == [{"system": SYSTEM, "value": op.key}]
    assert len({op.key for op in plan.operations}) == len(plan.operations)
    assert plan_for(profile).to_json() == plan.to_json()  # the same visit, the same plan


def test_identifiers_differ_per_visit_and_without_an_encounter_per_patient():
    one = by_type(plan_for("fhir-rest"))["ServiceRequest"].key
    other = by_type(plan_for("fhir-rest", encounter_id="e2"))["ServiceRequest"].key
    no_encounter = plan_for("fhir-rest", encounter_id=None, encounter_start=None)
    assert one != other
    assert by_type(no_encounter)["ServiceRequest"].key == referral_key(
        "http://ehr.test/fhir", None, "p1", "prc-consult"
    )
    assert "encounter" not in by_type(no_encounter)["ServiceRequest"].resource


# -- security labels ------------------------------------------------------------------------


def labels(op: Operation) -> set[str]:
    return {s["code"] for s in op.resource["meta"]["security"]}


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_part2_program_labels_every_resource(profile):
    plan = plan_for(profile, settings=replace(SETTINGS, part2_program=True))
    for op in plan.operations:
        assert labels(op) == {"R", "OPIOIDUD", "42CFRPart2", "NORDSCLCD"}, op.type


def test_without_part2_only_restricted_and_the_sensitivity():
    assert {frozenset(labels(op)) for op in plan_for("fhir-rest").operations} == {
        frozenset({"R", "OPIOIDUD"})
    }
    not_opioid = plan_for("fhir-rest", opioid=False)
    assert {frozenset(labels(op)) for op in not_opioid.operations} == {frozenset({"R", "SUD"})}


# -- references ------------------------------------------------------------------------------


def test_resources_reference_each_other_by_urn_until_written():
    ops = by_type(plan_for("oracle-health"))
    order = ops["ServiceRequest"].full_url
    assert ops["Task"].resource["basedOn"] == [{"reference": order}]
    assert ops["Task"].resource["focus"] == {"reference": order}
    assert ops["Communication"].resource["basedOn"] == [{"reference": order}]
    assert ops["DocumentReference"].resource["context"]["related"] == [{"reference": order}]
    assert ops["ServiceRequest"].resource["reasonReference"] == [{"reference": "Condition/c1"}]
    targets = [t["reference"] for t in ops["Provenance"].resource["target"]]
    plan = plan_for("oracle-health")
    assert targets == [op.full_url for op in plan.operations if op.type != "Provenance"]
    assert ops["Provenance"].resource["agent"][0]["who"] == {
        "reference": "Practitioner/doc",
        "display": "Avery Demo, MD",
    }


def test_references_resolve_to_written_ids_or_to_identifiers_kept_in_handoff():
    plan = plan_for("oracle-health")
    ops = by_type(plan)
    ops["Communication"].mark_written("comm-1", "201 Created")
    local = plan.local_references()
    assert set(local) == {op.full_url for op in plan.kept}
    resolved = resolve_references(ops["Communication"].resource, {}, local)
    assert resolved["basedOn"] == [
        {
            "display": "ServiceRequest kept in Handoff",
            "identifier": {"system": SYSTEM, "value": ops["ServiceRequest"].key},
        }
    ]
    assert plan.written_references() == {ops["Communication"].full_url: "Communication/comm-1"}
    task = resolve_references(ops["Task"].resource, {ops["ServiceRequest"].full_url: "SR/9"}, {})
    assert task["focus"] == {"reference": "SR/9"}


def test_transaction_of_operations_is_conditional_creates():
    plan = plan_for("fhir-rest")
    bundle = transaction_bundle_from_operations(plan.rest_creates)
    assert bundle["type"] == "transaction"
    assert [e["request"] for e in bundle["entry"]] == [
        {"method": "POST", "url": op.type, "ifNoneExist": op.conditional} for op in plan.operations
    ]
    assert [e["fullUrl"] for e in bundle["entry"]] == [op.full_url for op in plan.operations]


# -- the JSON column -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_round_trip_through_json(profile):
    plan = plan_for(profile)
    plan.operations[0].mark_written("x1", "201 Created")
    plan.operations[-1].unanswered_at = "2026-11-20T15:00:01+00:00"
    stored = json.loads(json.dumps(plan.to_json()))  # what the database gives back
    again = WritePlan.from_json(stored)
    assert again == plan
    assert again.to_json() == stored
    assert isinstance(again.operations[0].mode, Mode)
    assert again.operations[0].status is Status.WRITTEN


def test_stored_form_is_what_build_plan_returns_and_readers_expect():
    stored = build_plan(referral(), SETTINGS, profiles.profile("epic"))
    assert stored == plan_for("epic").to_json()
    assert set(stored) == {
        "profile",
        "transaction",
        "conditional_create",
        "order_route",
        "operations",
    }
    assert stored["transaction"] is False and stored["conditional_create"] is False
    op = stored["operations"][0]
    assert {"key", "type", "mode", "method", "conditional", "resource", "status", "id"} == set(op)
    assert isinstance(op["mode"], str) and type(op["mode"]) is str


def test_older_stored_plans_still_read():
    """Plans stored before the typed plan: no method on creates, minimal test rows."""
    old = build_plan(referral(), SETTINGS, profiles.profile("fhir-rest"))
    for op in old["operations"]:
        del op["method"]
    assert WritePlan.from_json(old) == plan_for("fhir-rest")
    minimal = WritePlan.from_json({"profile": "epic", "operations": []})
    assert minimal.operations == [] and not minimal.has_rest_writes
    assert WritePlan.from_json({}).profile == ""


def test_from_json_copies_so_the_row_is_left_alone():
    stored = build_plan(referral(), SETTINGS, profiles.profile("fhir-rest"))
    plan = as_plan(stored)
    plan.operations[0].resource["status"] = "revoked"
    plan.operations[0].keep_in_handoff()
    assert stored["operations"][0]["resource"]["status"] == "active"
    assert stored["operations"][0]["mode"] == "rest"
    assert as_plan(plan) is plan


# -- changes to a plan -----------------------------------------------------------------------


def test_types_the_ehr_did_not_grant_are_kept_in_handoff():
    plan = plan_for("fhir-rest")
    moved = plan.keep_in_handoff_unless(lambda type_: type_ == "DocumentReference")
    assert {op.type for op in moved} == {
        "ServiceRequest",
        "Task",
        "MedicationRequest",
        "Provenance",
    }
    assert [op.type for op in plan.operations if op.mode is Mode.REST] == ["DocumentReference"]
    assert all(op.status is Status.KEPT for op in moved)
    plan.keep_in_handoff_unless(lambda type_: False)
    assert not plan.has_rest_writes


CHANGES = TaskChanges(
    status="in-progress",
    modified_at=datetime(2026, 11, 20, 16, 30, tzinfo=UTC),
    owner_ref="Practitioner/coach",
    owner_name="Jordan Rivera",
    contact_note="Met at bedside",
)


def test_a_task_the_ehr_holds_gets_a_put_queued():
    plan = plan_for("fhir-rest")
    task = plan.task_create()
    assert task is not None
    task.mark_written("task-7", "201 Created")
    assert apply_task_changes(plan, CHANGES) is True
    update, provenance = plan.operations[-2:]
    assert provenance.type == "Provenance" and provenance.about == [update.key]
    assert (update.type, update.method, update.mode, update.status, update.id) == (
        "Task",
        Method.UPDATE,
        Mode.REST,
        Status.PENDING,
        "task-7",
    )
    assert update.key == f"{task.key}-update-{len(plan.operations) - 2}"
    assert update.resource["id"] == "task-7" and update.resource["status"] == "in-progress"
    assert update.resource["lastModified"] == "2026-11-20T16:30:00Z"
    assert update.is_pending_update and not plan.all_rest_written
    assert task.resource["status"] == "requested"  # the create stays as it was written
    assert plan.task_create() is task


def test_a_task_kept_in_handoff_changes_in_place():
    plan = plan_for("epic")
    count = len(plan.operations)
    assert apply_task_changes(plan, CHANGES) is False
    assert len(plan.operations) == count
    task = plan.task_create()
    assert task is not None and task.resource["status"] == "in-progress"
    assert task.resource["note"] == [
        {"text": "Coach contact: Met at bedside", "time": "2026-11-20T16:30:00Z"}
    ]


def test_no_task_nothing_to_change():
    plan = plan_for("fhir-rest", [ItemDecision("prc-consult", False, "Patient declined")])
    assert apply_task_changes(plan, CHANGES) is False


def test_updated_task_owner_only_for_a_fhir_reference():
    task = {"resourceType": "Task", "status": "requested", "owner": {"display": "Coach team"}}
    staff = replace(CHANGES, owner_ref="urn:staff:coach-1", contact_note=None)
    closed = replace(staff, status="cancelled", closed_reason="Other: moved away")
    # Staff known only to Handoff own the Task by name and Handoff's identifier (a urn).
    assert updated_task(task, staff)["owner"] == {
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:staff:coach-1"},
        "display": "Jordan Rivera",
    }
    assert updated_task(task, CHANGES)["owner"] == {
        "reference": "Practitioner/coach",
        "display": "Jordan Rivera",
    }
    assert updated_task(task, closed)["statusReason"] == {"text": "Other: moved away"}
    linked = updated_task(task, replace(CHANGES, linked_program="Bridge (555)"))
    assert linked["output"] == [{"type": {"text": "Linked program"}, "valueString": "Bridge (555)"}]
    assert task["status"] == "requested"  # a copy


def test_a_plan_read_from_its_row_is_an_exact_copy():
    """from_json copies the row's JSON (editing the plan leaves the row alone) and keeps every
    value as stored, an integer past 64 bits too (the JSON columns read it exactly)."""
    row = {
        "profile": "fhir-rest",
        "transaction": True,
        "operations": [
            {
                "key": "note",
                "type": "DocumentReference",
                "mode": "rest",
                "status": "pending",
                "resource": {"resourceType": "DocumentReference", "size": 2**70},
            }
        ],
    }
    kept = json.loads(json.dumps(row))
    plan = WritePlan.from_json(row)
    assert plan.to_json()["operations"][0]["resource"]["size"] == 2**70
    plan.operations[0].resource["size"] = 1
    assert row == kept
