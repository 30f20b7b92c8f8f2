"""The decision aids' workflow, without Flask.

- `for_screen`: which aids to offer with an evaluation (see `offer`).
- `visit_aids(db, context)`: in one read, the COWS Observations recorded through the
  calculator for the launch's visit and kept in Handoff (FHIR R4 JSON; the screen adds them to
  the chart before `evaluate`, so a kept score decides exactly as one written to the EHR), and
  the latest record of each aid for the screen (`recorded`: that part alone).
- `record_cows`: score the 11 answers, write the total as an Observation where the EHR's write
  profile and the granted scopes allow it (kept in Handoff otherwise, or when the write
  fails), and log it (`aid-cows`).
- `record_dsm5`: the checklist's result, logged (`aid-dsm5`); `for_note` carries the visit's
  latest into the signed referral (`SignedReferral.extra["dsm5"]`) for the linkage note.

Both records are events of the referral log about the visit (iss, patient, encounter): what
was kept is read back from there, so it lives as long as the visit's history does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from smartapp.aids import data
from smartapp.aids.offer import cows_code, for_screen
from smartapp.audit import log as referral_log
from smartapp.audit.models import LogEvent
from smartapp.db import Database, LaunchContext
from smartapp.engine.location import rules_dir
from smartapp.fhir.errors import FhirError
from smartapp.launch import client as smart
from smartapp.writeback import profiles
from smartapp.writeback.observation import ScoreObservation, score_observation, write_observation
from smartapp.writeback.referral import REFERRAL_NAMESPACE

if TYPE_CHECKING:
    from smartapp.services import Services

__all__ = [
    "AidRefused",
    "AidSettings",
    "CowsOutcome",
    "for_note",
    "for_screen",
    "visit_aids",
    "VisitAids",
    "record_cows",
    "record_dsm5",
    "recorded",
]

log = logging.getLogger("handoff.aids")

COWS_EVENT = "aid-cows"
DSM5_EVENT = "aid-dsm5"
COWS_TEXT = "Clinical Opiate Withdrawal Scale (COWS) total score"


class AidRefused(Exception):
    """The aid cannot be recorded for this launch now (signed, not offered); words for the
    physician. `status`: the HTTP status a view answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AidSettings:
    rules: Path
    identifier_system: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AidSettings:
        return cls(
            rules=rules_dir(config.get("RULES_DIR")),
            identifier_system=config["REFERRAL_IDENTIFIER_SYSTEM"],
        )

    @property
    def cows(self) -> data.CowsScale:
        return data.cows_scale(self.rules)

    @property
    def dsm5(self) -> data.Dsm5Checklist:
        return data.dsm5_checklist(self.rules)


@dataclass(frozen=True)
class CowsOutcome:
    score: data.CowsScore
    written: bool  # True: created at the EHR; False: kept in Handoff
    resource_id: str | None
    reason: str | None  # why it was kept in Handoff


# ---------------------------------------------------------------------------------------
# reading what was recorded for the visit


#: The visit's events of some types, oldest first (the visit: iss, patient, encounter), as
#: rows of the three columns the aids read: built once, since every screen and every Sign
#: reads it (the ORM's select of whole events, built per call, cost about a millisecond).
_VISIT_EVENTS = (
    select(LogEvent.type, LogEvent.data, LogEvent.at)
    .where(
        LogEvent.patient_id == bindparam("patient_id"),
        LogEvent.type.in_(bindparam("types", expanding=True)),
        LogEvent.iss == bindparam("iss"),
        LogEvent.encounter_id == bindparam("encounter_id"),
    )
    .order_by(LogEvent.seq)
)


def _visit_events(session: Any, context: LaunchContext, *types: str) -> list[Any]:
    """The visit's events of these types, oldest first: rows of `type`, `data` and `at`."""
    values = {
        "patient_id": context.patient_id,
        "types": list(types),
        "iss": context.iss,
        "encounter_id": context.encounter_id,
    }
    return list(session.execute(_VISIT_EVENTS, values))


@dataclass(frozen=True)
class VisitAids:
    """What the aids recorded for a visit, read in one query: `kept`, the COWS Observations
    kept in Handoff (those written to the EHR come back with the chart), and `recorded`, the
    latest of each aid for the screen (`cows`, `dsm5`: a summary or None)."""

    kept: list[dict]
    recorded: dict


def visit_aids(db: Database, context: LaunchContext) -> VisitAids:
    """The visit's aid records (see VisitAids); nothing before the launch knows its visit."""
    if not context.encounter_id:
        return VisitAids([], {"cows": None, "dsm5": None})
    with db.read() as connection:  # a read: no ORM unit of work (every screen)
        events = _visit_events(connection, context, COWS_EVENT, DSM5_EVENT)
    cows = [e for e in events if e.type == COWS_EVENT]
    dsm5 = [e for e in events if e.type == DSM5_EVENT]
    kept = [
        dict(e.data["observation"])
        for e in cows
        if isinstance(e.data, dict) and not e.data.get("written") and e.data.get("observation")
    ]
    recorded = {
        "cows": _summary(cows[-1]) if cows else None,
        "dsm5": _summary(dsm5[-1]) if dsm5 else None,
    }
    return VisitAids(kept, recorded)


def recorded(db: Database, context: LaunchContext) -> dict:
    """What the aids recorded this visit, for the screen: `cows` (the latest score: total,
    band, written or kept, when) and `dsm5` (the latest checklist result), each or None."""
    return visit_aids(db, context).recorded


def _summary(event: Any) -> dict:
    found = {k: v for k, v in (event.data or {}).items() if k != "observation"}
    return found | {"at": event.at.strftime("%Y-%m-%d %H:%M UTC") if event.at else ""}


def for_note(db: Database, context: LaunchContext) -> dict:
    """The visit's latest DSM-5 checklist for the signed referral (`extra["dsm5"]`), in words:
    `{"dsm5": {"summary", "met": [criterion texts], "at"}}`; {} when none was recorded."""
    found = recorded(db, context)["dsm5"]
    if not found:
        return {}
    return {
        "dsm5": {
            "summary": found["words"],
            "met": list(found.get("met_texts", [])),
            "at": found["at"],
        }
    }


# ---------------------------------------------------------------------------------------
# recording


def _check_open(services: Services, context: LaunchContext, aid: str) -> None:
    """Refuse unless the aid was offered on what the screen showed, and the visit is not
    signed yet."""
    from smartapp.screen.service import signed_referral  # the screen imports this module

    if signed_referral(services, context) is not None:
        raise AidRefused("This visit is signed already; the aid is closed.")
    offered = ((context.shown or {}).get("aids") or {}).get(aid) or {}
    if not offered.get("offered"):
        raise AidRefused("This aid is not offered for this visit (reload the screen).")


def record_cows(
    services: Services,
    context: LaunchContext,
    sent: Mapping[str, str],
    settings: AidSettings,
    now: datetime,
) -> CowsOutcome:
    """Score the answers and record the total as an Observation of the visit: at the EHR
    where its write profile and the granted scopes allow an Observation create, else (or if
    the EHR refuses) kept in Handoff. Raises data.AidInputError (what was sent cannot be
    scored) or AidRefused."""
    _check_open(services, context, "cows")
    scale = settings.cows
    score = data.score_cows(scale, sent)
    resource = cows_resource(services, context, score, scale, settings, now)
    repeat = _recorded_as(services.db, context, resource["identifier"][0]["value"])
    if repeat is not None:  # the same submission again (a double click): recorded once
        return CowsOutcome(score, bool(repeat.get("written")), None, repeat.get("reason"))
    written, resource_id, reason = _write(services, context, resource)
    event: dict[str, Any] = {
        "total": score.total,
        "band": score.band.code,
        "words": score.words(),
        "answers": dict(score.answers),
        "written": written,
        "identifier": resource["identifier"][0]["value"],
    }
    if written:
        event["resource"] = f"Observation/{resource_id}"
    else:
        # Kept in Handoff: a local id (the chart keys resources by type and id).
        kept = resource | {"id": f"handoff-{event['identifier']}"}
        event |= {"observation": kept, "reason": reason}
    with services.db.session() as session:
        referral_log.append_about(
            session, COWS_EVENT, context, data=event, user_name=_signer(context)
        )
    log.info("cows recorded: written=%s", written)
    return CowsOutcome(score, written, resource_id, reason)


def _recorded_as(db: Database, context: LaunchContext, identifier: str) -> dict | None:
    """The visit's `aid-cows` event for this identifier (the same submission), if any."""
    with db.session() as session:
        for event in _visit_events(session, context, COWS_EVENT):
            if isinstance(event.data, dict) and event.data.get("identifier") == identifier:
                return dict(event.data)
    return None


def cows_resource(
    services: Services,
    context: LaunchContext,
    score: data.CowsScore,
    scale: data.CowsScale,
    settings: AidSettings,
    now: datetime,
) -> dict:
    """The COWS total as the Observation Handoff writes (or keeps)."""
    code = cows_code(services.pack)
    if code is None:
        raise AidRefused("The rule pack names no COWS code; tell your informatics team.", 500)
    registration = services.registry.by_id(context.registration_id)
    part2 = bool(registration and registration.write.part2_program)
    answers = "; ".join(f"{i.title} {score.answers[i.id]}" for i in scale.items)
    # Stable for one submission: the same answers posted from the same screen (a double
    # click) make the same identifier, so the EHR's conditional create, or the log, holds
    # it once; the screen is the evaluation it was rendered from.
    rendered = (context.shown or {}).get("evaluated_at", "")
    answered = sorted(score.answers.items())
    key = uuid.uuid5(
        REFERRAL_NAMESPACE,
        f"{context.iss}|{context.encounter_id}|cows|{context.id}|{rendered}|{answered}",
    )
    return score_observation(
        ScoreObservation(
            identifier={"system": settings.identifier_system, "value": str(key)},
            code=code,
            text=COWS_TEXT,
            value=score.total,
            patient_id=context.patient_id,
            encounter_id=context.encounter_id,
            performer_ref=context.user_ref,
            performer_name=_signer(context),
            effective=now,
            note=f"{score.words()}. Items: {answers}. Recorded with Handoff's COWS calculator.",
            part2=part2,
        )
    )


def _write(
    services: Services, context: LaunchContext, resource: dict
) -> tuple[bool, str | None, str | None]:
    """(written, id, why kept): create at the EHR where allowed, else keep."""
    from smartapp.screen.service import with_fhir  # the screen imports this module

    registration = services.registry.by_id(context.registration_id)
    if registration is None:
        return False, None, "The EHR's registration is gone; the score is kept in Handoff."
    profile = profiles.profile(registration.write.profile)
    if not profile.observation_create:
        return False, None, "This EHR takes no Observation from Handoff; kept in Handoff."
    if not smart.may(context.scope, "Observation", "c"):
        return False, None, "The EHR did not grant Handoff Observation writes; kept in Handoff."
    try:
        done = with_fhir(
            services, context, lambda c: write_observation(c, resource, profile.conditional_create)
        )
    except FhirError as exc:
        log.warning("cows write refused: http=%s", exc.status)
        return False, None, f"The EHR refused the score ({exc}); kept in Handoff."
    return True, done["id"], None


def record_dsm5(
    services: Services,
    context: LaunchContext,
    ticked: list[str],
    settings: AidSettings,
) -> data.Dsm5Result:
    """Check the ticked criteria and log the result for the visit (`aid-dsm5`); the note
    summarises the latest at Sign. Raises data.AidInputError or AidRefused."""
    _check_open(services, context, "dsm5")
    checklist = settings.dsm5
    result = data.check_dsm5(checklist, ticked)
    with services.db.session() as session:
        referral_log.append_about(
            session,
            DSM5_EVENT,
            context,
            data={
                "met": list(result.met),
                "count": result.count,
                "of": len(checklist.criteria),
                "band": result.band.code,
                "words": result.words(checklist),
                # as the physician read them, for the note (the data may change later)
                "met_texts": [c.text for c in checklist.criteria if c.id in result.met],
            },
            user_name=_signer(context),
        )
    return result


def _signer(context: LaunchContext) -> str | None:
    """The physician's name as the screen read it with the chart."""
    return (context.shown or {}).get("signer_name")
