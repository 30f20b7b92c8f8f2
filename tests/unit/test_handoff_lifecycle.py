"""The handoff lifecycle's rules (pure): transitions, who may make them, and why a change is
refused; the log events each change makes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from smartapp.handoffs import lifecycle
from smartapp.handoffs.lifecycle import Change, HandoffState, LifecycleError, apply, event_types
from smartapp.writeback.actor import Actor

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
COACH = Actor("coach", "Jordan Rivera, CPRS", "urn:staff:coach-1")
OTHER = Actor("coach", "Sam Lee, CPRS", "urn:staff:coach-2")
SUPERVISOR = Actor("supervisor", "Pat Chen", "urn:staff:sup-1")
PARTNER = Actor("partner", "Example Bridge Clinic", "Organization/bridge")
PHYSICIAN = Actor("physician", "Dr Ann Lee", "Practitioner/doc")
SYSTEM = Actor("system", "Handoff")


def state(status: str = "requested", owner: Actor | None = None, **more) -> HandoffState:
    base = HandoffState(referral_id="r1", status=status)
    if owner:
        base = replace(base, owner_ref=owner.reference, owner_name=owner.display)
        base = replace(base, owner_kind=owner.kind)
    return replace(base, **more)


def test_a_coach_accepts_contacts_and_links():
    accepted = apply(state(), lifecycle.accept(), COACH, NOW)
    assert (accepted.status, accepted.owner_name, accepted.accepted_at) == (
        "accepted",
        COACH.display,
        NOW,
    )
    assert accepted.owner == COACH
    later = NOW + timedelta(minutes=5)
    nobody = apply(accepted, lifecycle.contact("no-answer"), COACH, later)
    assert (nobody.status, nobody.attempts, nobody.contacted_at) == ("accepted", 1, None)
    reached = apply(nobody, lifecycle.contact("reached", "  Met at bedside "), COACH, later)
    assert (reached.status, reached.business_status, reached.contact_note) == (
        "in-progress",
        "contacted",
        "Met at bedside",
    )
    assert (reached.attempts, reached.contacted_at, reached.updated_at) == (2, later, later)
    linked = apply(reached, lifecycle.link("Bridge clinic (555)", "bridge-clinic"), COACH, later)
    assert (linked.status, linked.linked_program, linked.linked_program_id) == (
        "completed",
        "Bridge clinic (555)",
        "bridge-clinic",
    )


@pytest.mark.parametrize(
    ("before", "change", "actor", "message"),
    [
        (state(), lifecycle.contact("reached", "x"), COACH, "Accept the handoff first."),
        (state(), lifecycle.link("x"), COACH, "Accept the handoff first."),
        (state("accepted", COACH), lifecycle.accept(), OTHER, "Already accepted by Jordan Rivera"),
        (state("accepted", COACH), lifecycle.contact("reached", "x"), OTHER, "belongs to Jordan"),
        (state("in-progress", COACH), lifecycle.close("Other"), OTHER, "belongs to"),
        (state("accepted", COACH), lifecycle.link(" "), COACH, "Name the program"),
        (state("accepted", COACH), lifecycle.close("Bored"), COACH, "Pick a reason"),
        (state("completed", COACH), lifecycle.contact("reached", "x"), COACH, "is closed"),
        (state("cancelled"), lifecycle.accept(), COACH, "This handoff is closed."),
        (state(), Change("delete"), COACH, "Unknown action"),  # type: ignore[arg-type]
        (state("accepted", COACH), lifecycle.contact("maybe"), COACH, "Say how the attempt went"),
        (state("accepted", COACH), lifecycle.contact("reached", " "), COACH, "A note is needed"),
        (state("accepted", COACH), lifecycle.contact("declined"), COACH, "A note is needed"),
        (state(), lifecycle.accept(), PHYSICIAN, "A physician cannot accept"),
        (state(), lifecycle.accept(), PARTNER, "A partner cannot accept"),
        (state(), lifecycle.accept(), SUPERVISOR, "A supervisor cannot accept"),
        (state("accepted", COACH), lifecycle.reassign(OTHER), OTHER, "belongs to Jordan"),
        (state("accepted", COACH), lifecycle.reassign(COACH), SUPERVISOR, "already belongs"),
        (state("accepted", COACH), lifecycle.reassign(PARTNER), SUPERVISOR, "Name the coach"),
        (state("accepted", COACH), Change("update", status="accepted"), PARTNER, "name the partn"),
        (state("accepted", COACH), Change("update"), SUPERVISOR, "Say what changed"),
        (
            state("accepted", COACH),
            Change("update", status="rejected", partner="bridge"),
            PARTNER,
            "Say why the referral is rejected",
        ),
        (
            state("accepted", COACH),
            Change("update", status="cancelled", reason="x", partner="bridge"),
            PARTNER,
            "A partner cannot set the status 'cancelled'",
        ),
        (
            state("in-progress", COACH, business_status="appointment-attended"),
            Change("update", business_status="appointment-scheduled", partner="bridge"),
            PARTNER,
            "already at first appointment attended",
        ),
        (
            state("in-progress", COACH),
            Change("update", status="accepted"),
            COACH,
            "already in-progress",
        ),
        (state("cancelled"), Change("update", business_status="contacted"), SYSTEM, "is closed"),
    ],
)
def test_refusals_say_why(before, change, actor, message):
    with pytest.raises(LifecycleError, match=message):
        apply(before, change, actor, NOW)


def test_a_coach_may_close_a_handoff_nobody_accepted_and_a_linked_close_completes():
    left = apply(state(), lifecycle.close("Patient left before contact"), COACH, NOW)
    assert (left.status, left.closed_reason) == ("cancelled", "Patient left before contact")
    linked = apply(
        state("in-progress", COACH), lifecycle.close("Linked to a program", " phone "), COACH, NOW
    )
    assert (linked.status, linked.closed_reason) == ("completed", "Linked to a program: phone")


def test_a_supervisor_reassigns_and_assigns_an_unaccepted_handoff():
    moved = apply(state("in-progress", COACH), lifecycle.reassign(OTHER), SUPERVISOR, NOW)
    assert (moved.status, moved.owner_ref, moved.owner_name) == (
        "in-progress",
        OTHER.reference,
        OTHER.display,
    )
    assigned = apply(state(), lifecycle.reassign(OTHER), SUPERVISOR, NOW)
    assert (assigned.status, assigned.owner_ref, assigned.accepted_at) == (
        "accepted",
        OTHER.reference,
        NOW,
    )
    handed = apply(state("accepted", COACH), lifecycle.reassign(OTHER), COACH, NOW)
    assert handed.owner_ref == OTHER.reference


def test_partner_updates_step_forward_and_never_back():
    reported = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    base = state("in-progress", COACH, business_status="contacted")
    late_accept = apply(base, Change("update", status="accepted", partner="bridge"), PARTNER, NOW)
    assert late_accept.status == "in-progress"  # a partner's late accept does not go back
    scheduled = apply(
        base,
        Change("update", business_status="appointment-scheduled", partner="bridge", at=reported),
        PARTNER,
        NOW,
    )
    assert (scheduled.business_status, scheduled.partner, scheduled.updated_at) == (
        "appointment-scheduled",
        "bridge",
        reported,
    )
    attended = apply(
        scheduled,
        Change(
            "update",
            status="completed",
            business_status="appointment-attended",
            partner="bridge",
            output="Appointment/a1",
        ),
        PARTNER,
        NOW,
    )
    assert (attended.status, attended.business_status, attended.output) == (
        "completed",
        "appointment-attended",
        "Appointment/a1",
    )
    engaged = apply(
        attended,
        Change("update", business_status="engaged-30-days", partner="bridge"),
        PARTNER,
        NOW,
    )
    assert (engaged.status, engaged.business_status) == ("completed", "engaged-30-days")
    rejected = apply(
        state("accepted", COACH),
        Change("update", status="rejected", reason="No capacity", partner="bridge"),
        PARTNER,
        NOW,
    )
    assert (rejected.status, rejected.closed_reason) == ("rejected", "No capacity")


def test_a_partner_accepting_an_unowned_referral_becomes_its_owner():
    taken = apply(state(), Change("update", status="accepted", partner="bridge"), PARTNER, NOW)
    assert (taken.status, taken.owner_ref, taken.owner_kind, taken.accepted_at) == (
        "accepted",
        "Organization/bridge",
        "partner",
        NOW,
    )
    stepped = apply(state(), Change("update", business_status="contacted"), SYSTEM, NOW)
    assert (stepped.status, stepped.contacted_at) == ("in-progress", NOW)


def test_event_types_name_the_change():
    def types(before, change, actor):
        return event_types(before, apply(before, change, actor, NOW), change, actor)

    assert types(state(), lifecycle.accept(), COACH) == ["coach-accept"]
    assert types(state("accepted", COACH), lifecycle.contact("no-answer"), COACH) == [
        "coach-contact"
    ]
    assert types(state("accepted", COACH), lifecycle.contact("reached", "ok"), COACH) == [
        "coach-contact",
        "handoff-status",
    ]
    assert types(state("accepted", COACH), lifecycle.reassign(OTHER), SUPERVISOR) == [
        "handoff-reassign"
    ]
    assert types(state("accepted", COACH), lifecycle.close("Other"), SUPERVISOR) == [
        "handoff-status"
    ]
    partner_change = Change("update", status="accepted", partner="bridge")
    assert types(state(), partner_change, PARTNER) == ["handoff-status"]
