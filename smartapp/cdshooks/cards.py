"""The card for one visit, described from what the screen would show (`screen.service.
shown_from_read`: the same engine call): a one-line offer, the evidence, cautions and what was
withheld and why in words, the suggestions with their draft orders, the pack's decline reasons
as override reasons, and a SMART link that opens Handoff on the same visit. Pure: no I/O.

Orders on the card follow the registration's write profile: where the EHR takes orders only as
CDS Hooks suggestions (profile `order_route` "cds-hooks", Epic), the coach referral carries a
draft ServiceRequest for the order cart; elsewhere Handoff writes it itself after the accept
(the outbox), so the EHR never gets two. Draft MedicationRequests (no dose: status draft,
intent proposal) ride on the buprenorphine and naloxone suggestions wherever the site drafts
medications; the write-back then leaves them to the card. Identifiers are Handoff's own
(per visit and suggestion), as in every write.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from smartapp.cdshooks.models import Action, Card, Coding, Link, Source, Suggestion
from smartapp.engine import kinds
from smartapp.engine.kinds import OPT_OUT_KINDS
from smartapp.writeback import profiles
from smartapp.writeback import resources as writeback

SUMMARY_MAX = 139
CAUTION_WORDS = {
    "pregnancy": "pregnancy recorded",
    "sedatives": "on a benzodiazepine",
    "hepatic": "moderate to severe liver disease",
    "alcohol": "alcohol use disorder",
    "recent-methadone": "recent methadone (ED start at COWS 13 or more)",
    "confirm-oud": "OUD rests on an overdose alone: confirm DSM-5 criteria before starting",
    "chart-incomplete": "the chart could not all be read: ask about methadone, buprenorphine, "
    "naltrexone and allergies before starting",
}
VARIANT_WORDS = {"ed-induction": "start in the ED", "home-initiation": "start at home"}
SHORT = {
    kinds.PRC_CONSULT: "peer recovery coach",
    kinds.MOUD_BUPRENORPHINE: "buprenorphine",
    kinds.MOUD_CONTINUE: "continue MOUD",
    kinds.NALOXONE_KIT: "naloxone kit",
}


@dataclass(frozen=True)
class CardSettings:
    """What the card needs besides what was shown: ids, where Handoff lives, site choices."""

    card_id: str  # also the id Handoff keeps what was shown under (the feedback names it)
    visit_key: str
    launch_url: str  # Handoff's SMART launch URL (the registration's)
    indicator: str  # info | warning | critical (CDS_CARD_INDICATOR: the pack names none)
    override_system: str  # the system of the override reason codes (CDS_OVERRIDE_SYSTEM)
    source_url: str | None = None


def suggestion_uuid(card_id: str, kind: str) -> str:
    """The suggestion's uuid: stable per card and kind, so feedback maps back to the kind."""
    return str(uuid.uuid5(uuid.UUID(card_id), kind))


def summary(shown: dict) -> str:
    """One line: 'Handoff: offer peer recovery coach, buprenorphine (start in the ED), naloxone
    kit' (at most 139 characters)."""
    parts = []
    for s in shown["suggestions"]:
        words = SHORT.get(s["kind"], s["title"])
        if s.get("variant") in VARIANT_WORDS:
            words += f" ({VARIANT_WORDS[s['variant']]})"
        parts.append(words)
    text = "Handoff: offer " + ", ".join(parts)
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def detail(shown: dict) -> str:
    """The evidence, the cautions, what was withheld and why, and the notices (Markdown)."""
    lines = []
    for s in shown["suggestions"]:
        title = s["title"] + (f" ({VARIANT_WORDS[s['variant']]})" if s.get("variant") else "")
        lines.append(f"**{title}**: {s['reason']}")
        lines += [f"- {e['words']}" for e in s["evidence"]]
        lines += [f"- Caution: {CAUTION_WORDS.get(c, c)}" for c in s["cautions"]]
    for w in shown.get("withheld", []):
        lines.append(f"**Not suggested: {SHORT.get(w['kind'], w['kind'])}**, because {w['words']}.")
    lines += [f"_Note: {n}_" for n in shown.get("notices", [])]
    return "\n".join(lines)


def override_reasons(shown: dict, system: str) -> list[Coding]:
    """The pack's decline reasons offered with the suggestions, once each, in pack order."""
    seen: dict[str, str] = {}
    for s in shown["suggestions"]:
        for r in s["decline_reasons"]:
            seen.setdefault(r["code"], r["label"])
    return [Coding(system=system, code=code, display=label) for code, label in seen.items()]


def draft_orders(
    shown: dict, signed: writeback.SignedReferral, write: Any, identifier_system: str
) -> dict[str, dict]:
    """The draft orders the card carries, by suggestion kind (see the module's note)."""
    profile = profiles.profile(write.profile)
    settings = _write_settings(write, identifier_system)
    planned = writeback.plan_resources(signed, settings, profile)
    orders: dict[str, dict] = {}
    for item in planned:
        resource = item.resource
        if resource["resourceType"] == "ServiceRequest" and profile.order_route == "cds-hooks":
            orders[kinds.PRC_CONSULT] = resource | {"status": "draft"}
        elif resource["resourceType"] == "MedicationRequest":
            code = resource["medicationCodeableConcept"]["coding"][0]
            kind = next((k for k, c in settings.medication_codes.items() if c == code), None)
            if kind in writeback.DRAFT_MEDICATION_KINDS:
                orders[kind] = resource
    return orders


def _write_settings(write: Any, identifier_system: str) -> writeback.WriteSettings:
    return writeback.WriteSettings(
        identifier_system=identifier_system,
        service_request_code=write.service_request_code,
        note_type=write.note_type,
        doc_status=write.doc_status,
        coach_team=write.coach_team,
        part2_program=write.part2_program,
        draft_medications=write.draft_medications,
        medication_codes=write.medication_codes,
        coach_pool=write.coach_pool,
    )


def build_card(
    shown: dict, orders: dict[str, dict], settings: CardSettings, pack_label: str
) -> Card:
    """The one card of a visit with an offer (`shown["suggestions"]` not empty)."""
    suggestions = []
    for s in shown["suggestions"]:
        action = None
        if s["kind"] in orders:
            action = Action(
                type="create",
                description=f"Draft order: {s['title']} (to complete and sign)",
                resource=orders[s["kind"]],
            )
        suggestions.append(
            Suggestion(
                label=s["title"],
                uuid=suggestion_uuid(settings.card_id, s["kind"]),
                isRecommended=s["kind"] in OPT_OUT_KINDS,
                actions=[action] if action else None,
            )
        )
    link = Link(
        label="Open Handoff for this visit",
        url=settings.launch_url,
        type="smart",
        appContext=json.dumps({"handoff_visit": settings.visit_key, "card": settings.card_id}),
    )
    return Card(
        uuid=settings.card_id,
        summary=summary(shown),
        detail=detail(shown),
        indicator=settings.indicator,  # type: ignore[arg-type]
        source=Source(label=pack_label, url=settings.source_url),
        suggestions=suggestions,
        selectionBehavior="any",
        overrideReasons=override_reasons(shown, settings.override_system) or None,
        links=[link],
        # CDS Hooks' reserved member: the offer in codes (kinds, reasons, references: no
        # words about the patient), for EHR analytics and for tests.
        extension={"handoff-offer": offer_of(shown)},
    )


def pack_label(shown: dict) -> str:
    """'Handoff (rule pack handoff-default 2.0.0)': the source names Handoff and the pack."""
    return f"Handoff (rule pack {shown['pack']['id']} {shown['pack']['version']})"


def offer_of(shown: dict) -> dict:
    """The offer in codes (suggestion kinds with variant and cautions; withheld kinds with
    their reasons), as the equality test compares it with the screen's."""
    return {
        "suggestions": [
            {
                "kind": s["kind"],
                "variant": s.get("variant"),
                "cautions": list(s["cautions"]),
                "evidence": [e["reference"] for e in s["evidence"]],
            }
            for s in shown["suggestions"]
        ],
        "withheld": [{"kind": w["kind"], "reason": w["reason"]} for w in shown.get("withheld", [])],
    }


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
