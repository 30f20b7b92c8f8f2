"""The Sign form, parsed and checked without a server (screen.decisions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from smartapp.engine import kinds
from smartapp.screen import decisions
from smartapp.writeback.resources import ItemDecision

pytestmark = pytest.mark.unit

REASONS = [
    {"code": "patient-declined", "label": "Patient declined", "free_text": False},
    {"code": "other", "label": "Other", "free_text": True},
]
SHOWN = {
    "suggestions": [
        {"kind": kinds.PRC_CONSULT, "title": "Coach consult", "decline_reasons": REASONS},
        {"kind": kinds.NALOXONE_KIT, "title": "Naloxone kit", "decline_reasons": REASONS},
    ]
}


@dataclass
class FakeReferral:
    decision: dict
    user_ref: str | None = "Practitioner/1"
    created_at: datetime | None = None
    status: str = "queued"
    lease_until: datetime | None = None
    context_id: str = "ctx"


def test_every_choice_made_gives_decisions_and_no_error():
    form = decisions.parse_form(
        {
            "decision-prc-consult": "accept",
            "decision-naloxone-kit": "decline",
            "reason-naloxone-kit": "other",
            "reason-text-naloxone-kit": "  has one at home  ",
            "consult-mode": "phone",
        },
        SHOWN,
    )
    made, errors = decisions.read_decisions(SHOWN, form)
    assert errors == []
    assert made == [
        ItemDecision(kind="prc-consult", accepted=True),
        ItemDecision(
            kind="naloxone-kit",
            accepted=False,
            decline_reason="Other",
            decline_text="has one at home",
        ),
    ]
    assert form.mode == "phone"


def test_missing_choice_reason_and_text_are_errors_in_words():
    form = decisions.parse_form(
        {"decision-naloxone-kit": "decline", "reason-naloxone-kit": "other"}, SHOWN
    )
    made, errors = decisions.read_decisions(SHOWN, form)
    assert made == []
    assert errors == [
        "Coach consult: choose to accept or decline.",
        "Naloxone kit: say why in a few words.",
    ]
    unknown = decisions.parse_form(
        {"decision-prc-consult": "accept", "decision-naloxone-kit": "decline"}, SHOWN
    )
    assert decisions.read_decisions(SHOWN, unknown)[1] == [
        "Naloxone kit: pick a reason for declining."
    ]


def test_consult_mode_defaults_to_in_person_and_an_unknown_one_is_an_error():
    absent = decisions.parse_form({}, SHOWN)
    assert absent.mode == "in-person"
    assert decisions.consult_mode_error(absent) is None
    assert decisions.form_choices(absent, SHOWN)["consult_mode"] == ""
    odd = decisions.parse_form({"consult-mode": "carrier-pigeon"}, SHOWN)
    assert decisions.consult_mode_error(odd) == "Choose how the coach consult happens."
    sent_empty = decisions.parse_form({"consult-mode": ""}, SHOWN)
    assert decisions.consult_mode_error(sent_empty) is not None


def test_the_form_is_shown_back_as_sent():
    form = decisions.parse_form(
        {
            "decision-prc-consult": "maybe",
            "reason-text-naloxone-kit": "x" * 600,
            "program": "  p1 ",
            "program-other": " " + "y" * 300,
        },
        SHOWN,
    )
    shown_back = decisions.form_choices(form, SHOWN)
    assert shown_back["decisions"]["prc-consult"]["choice"] is None
    assert len(shown_back["decisions"]["naloxone-kit"]["text"]) == 500
    assert shown_back["program"] == "p1"
    assert shown_back["program_other"] == "y" * 200


def test_opt_out_kinds_are_accepted_on_the_blank_form():
    blank = decisions.blank_choices(SHOWN)
    assert blank["decisions"] == {
        "prc-consult": {"choice": "accept"},
        "naloxone-kit": {"choice": None},
    }
    assert blank["consult_mode"] == "in-person"


def test_choices_that_differ_from_what_was_signed_are_listed():
    signed = FakeReferral(
        decision={
            "consult_mode": "in-person",
            "program": None,
            "decisions": [
                {"kind": "prc-consult", "accepted": True, "reason": None, "text": None},
                {"kind": "naloxone-kit", "accepted": True, "reason": None, "text": None},
            ],
        }
    )
    mine = decisions.form_choices(
        decisions.parse_form(
            {
                "decision-prc-consult": "accept",
                "decision-naloxone-kit": "decline",
                "reason-naloxone-kit": "patient-declined",
                "consult-mode": "phone",
            },
            SHOWN,
        ),
        SHOWN,
    )
    differing = decisions.unsent_choices(SHOWN, mine, signed, None)
    assert [d["kind"] for d in differing] == ["naloxone-kit", "consult"]
    assert differing[0]["words"] == "Naloxone kit: declined (Patient declined)"
    assert differing[1]["words"] == "Coach consult: phone"
    assert decisions.written_words(signed, SHOWN) == [
        "Coach consult: accepted",
        "Naloxone kit: accepted",
        "Coach consult: in person",
    ]


def test_a_write_is_under_way_only_while_a_queued_referral_holds_its_lease():
    now = datetime(2026, 11, 20, 15, tzinfo=UTC)
    held = FakeReferral(decision={}, lease_until=(now + timedelta(seconds=30)).replace(tzinfo=None))
    assert decisions.is_writing(held, now)
    assert not decisions.is_writing(FakeReferral(decision={}, lease_until=now), now)
    assert not decisions.is_writing(FakeReferral(decision={}, status="sent"), now)
    signed = FakeReferral(decision={}, created_at=now, user_ref=None)
    assert decisions.signed_words(signed) == {"by": "an unknown user", "at": "2026-11-20 15:00 UTC"}
