"""The physician's screen: suggestions with evidence, the opt-out coach referral, Sign.

Web layer only: it reads the chart through `fhir`, decides through the engine, writes through
the outbox, and records each step in the referral log.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from smartapp import outbox, profiles, referral_log, sessions, smart, writeback
from smartapp.db import LaunchContext
from smartapp.describe import describe, in_words
from smartapp.engine import Chart, ChartError, evaluate
from smartapp.fhir import CHART_TYPES, FhirError
from smartapp.services import current_services
from smartapp.web import browser_id, check_csrf

bp = Blueprint("screen", __name__, url_prefix="/c")
log = logging.getLogger("handoff.screen")

OPIOID_KINDS = {"moud-buprenorphine", "moud-continue", "naloxone-kit"}
# Without these, Handoff cannot rule out methadone, other MOUD or an allergy to buprenorphine.
MEDICATION_SAFETY_TYPES = {"MedicationRequest", "MedicationStatement", "AllergyIntolerance"}


def load_context(context_id: str) -> LaunchContext:
    """The launch context, only for the browser that launched it."""
    with current_services().db.session() as db:
        context = db.get(LaunchContext, context_id)
    if context is None or context.browser_id != browser_id():
        log.warning("screen refused: unknown context or another browser's")
        abort(
            403,
            description="This Handoff session is not yours or has ended. "
            "Launch Handoff again from the patient's chart.",
        )
    return context


def with_fhir(context: LaunchContext, call):
    """Run `call(client)` with a live token; on a 401 (expired early, revoked) refresh once and
    retry. A session the EHR ended gives a clear page."""
    services = current_services()
    try:
        try:
            return call(sessions.client_for(services, context.id))
        except FhirError as exc:
            if exc.status != 401:
                raise
            log.info("EHR answered 401: refreshing once")
            return call(sessions.client_for(services, context.id, force_refresh=True))
    except sessions.SessionEnded as exc:
        abort(403, description=str(exc))


def visit_key(context: LaunchContext) -> str:
    return writeback.referral_key(context.iss, context.encounter_id, context.patient_id, "visit")


def readable_types(scope: str) -> tuple[tuple[str, ...], list[str]]:
    """The chart types the granted scopes let Handoff read, and those they do not."""
    wanted = ("Patient", "Observation", *CHART_TYPES)
    allowed = tuple(t for t in wanted if smart.may(scope, t, "r" if t == "Patient" else "s"))
    return allowed, [t for t in wanted if t not in allowed]


def missing_write_scopes(scope: str, registration) -> list[str]:
    """The resource types the EHR's write profile needs but the granted scopes do not allow."""
    needed = profiles.profile(registration.write.profile).rest_types - {"MedicationRequest"}
    return sorted(t for t in needed if not smart.may(scope, t, "c"))


def build_shown(context: LaunchContext, now: datetime) -> dict:
    """Read the chart, evaluate the pack, and describe what the physician will see."""
    services = current_services()
    allowed, unreadable = readable_types(context.scope)
    resources = with_fhir(
        context,
        lambda client: client.read_chart(
            context.patient_id,
            context.encounter_id,
            now,
            current_app.config["CHART_OBSERVATION_DAYS"],
            types=allowed,
        ),
    )
    chart = Chart.from_resources(resources)
    evaluation = evaluate(chart, now, services.pack, encounter_id=context.encounter_id)
    notices = []
    if unreadable:
        notices.append(
            "The EHR did not let Handoff read: "
            + ", ".join(unreadable)
            + ". Suggestions may be incomplete."
        )
    withheld = sorted(set(unreadable) & MEDICATION_SAFETY_TYPES)
    suggestions = []
    for suggestion in evaluation.suggestions:
        if suggestion.kind == "moud-buprenorphine" and withheld:
            notices.append(
                "Buprenorphine is not suggested: without "
                + ", ".join(withheld)
                + " Handoff cannot rule out methadone, other MOUD or an allergy."
            )
            continue
        evidence = [describe(chart.get(ref), ref) for ref in suggestion.evidence]
        for item in evidence:
            item["words"] = in_words(item)
        suggestions.append(
            {
                "kind": suggestion.kind,
                "title": suggestion.title,
                "reason": suggestion.reason,
                "variant": suggestion.variant,
                "cautions": list(suggestion.cautions),
                "evidence": evidence,
                "rule": suggestion.rule,
                "decline_reasons": [
                    {"code": r.code, "label": r.label, "free_text": r.free_text}
                    for r in suggestion.decline_reasons
                ],
            }
        )
    missing_writes = missing_write_scopes(
        context.scope, services.registry.by_id(context.registration_id)
    )
    if missing_writes:
        notices.append(
            "Handoff can suggest but cannot write to this chart: the EHR did not grant "
            "it write access to " + ", ".join(missing_writes) + ". A signed decision "
            "is kept in Handoff's referral log only."
        )
    patient = evaluation.patient or chart.get(f"Patient/{context.patient_id}") or {}
    encounter = evaluation.encounter or {}
    return {
        "evaluated_at": now.isoformat(),
        "pack": {
            "id": services.pack.id,
            "version": services.pack.version,
            "hash": services.pack.content_hash,
        },
        "patient": patient_banner(patient),
        "demographics": demographics(patient, now),
        "encounter": {"id": encounter.get("id"), "start": encounter.get("period", {}).get("start")},
        "suggestions": suggestions,
        "opioid": any(s["kind"] in OPIOID_KINDS for s in suggestions),
        "notices": notices,
        "can_write": not missing_writes,
    }


US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
AGE_GROUPS = (
    (0, 18, "<18"),
    (18, 25, "18-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 55, "45-54"),
    (55, 65, "55-64"),
    (65, 200, "65+"),
)


def demographics(patient: dict, now: datetime) -> dict:
    """Categories for the program's equity figures (race, ethnicity, sex, age group), taken
    from US Core extensions where the chart carries them; never names or dates."""

    def category(url: str) -> str | None:
        for extension in patient.get("extension", []):
            if extension.get("url") == url:
                for part in extension.get("extension", []):
                    if part.get("url") == "text" and part.get("valueString"):
                        return part["valueString"]
                for part in extension.get("extension", []):
                    if part.get("url") == "ombCategory":
                        return part.get("valueCoding", {}).get("display")
        return None

    age_group = None
    birth = patient.get("birthDate")
    if birth and len(birth) >= 4 and birth[:4].isdigit():
        try:
            born = datetime.fromisoformat(birth if len(birth) == 10 else f"{birth[:4]}-12-31")
            age = now.year - born.year - ((now.month, now.day) < (born.month, born.day))
            age_group = next(label for low, high, label in AGE_GROUPS if low <= age < high)
        except (ValueError, StopIteration):
            age_group = None
    return {
        "race": category(US_CORE_RACE),
        "ethnicity": category(US_CORE_ETHNICITY),
        "sex": patient.get("gender"),
        "age_group": age_group,
    }


def patient_banner(patient: dict) -> dict:
    names = patient.get("name") or [{}]
    name = names[0]
    display = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    mrn = next(
        (i.get("value") for i in patient.get("identifier", []) if "MR" in str(i.get("type", {}))),
        None,
    )
    return {
        "name": display or "Unknown",
        "birthDate": patient.get("birthDate"),
        "gender": patient.get("gender"),
        "mrn": mrn,
    }


@bp.get("/<context_id>")
def show(context_id: str):
    context = load_context(context_id)
    services = current_services()
    existing = outbox.for_visit(services.db, visit_key(context))
    if existing is not None:
        # Signed already (in this launch or an earlier one): show what was decided and where
        # it stands, never the same suggestions as new.
        return render_template(
            "screen.html",
            context=context,
            shown=existing.decision.get("shown") or context.shown,
            referral=existing,
            decided=decided(existing),
            errors=[],
        )
    now = datetime.now(UTC)
    try:
        shown = build_shown(context, now)
    except FhirError as exc:
        log.warning("chart read failed: http=%s", exc.status)
        return render_template(
            "error.html",
            title="The chart could not be read",
            message=f"{exc} Nothing was written. Try again in a moment.",
        ), 502
    except ChartError as exc:
        log.warning("chart malformed: %s", exc.__class__.__name__)
        return render_template(
            "error.html",
            title="The chart could not be understood",
            message=f"The EHR sent data Handoff cannot read: {exc}. "
            "Nothing was written; tell your informatics team.",
        ), 502
    with services.db.session() as db:
        row = db.get(LaunchContext, context.id)
        row.shown = shown
        if row.encounter_id is None and shown["encounter"]["id"]:
            # Standalone launch without an encounter: the visit the rules chose is this visit.
            row.encounter_id = context.encounter_id = shown["encounter"]["id"]
        referral_log.append_about(
            db,
            "suggestions-shown",
            context,
            data={
                "pack": shown["pack"],
                "demographics": shown.get("demographics"),
                "encounter_start": shown["encounter"].get("start"),
                "suggestions": [
                    {k: s[k] for k in ("kind", "variant", "cautions", "rule")}
                    | {"evidence": [e["reference"] for e in s["evidence"]]}
                    for s in shown["suggestions"]
                ],
            },
        )
    return render_template(
        "screen.html", context=context, shown=shown, referral=None, decided={}, errors=[]
    )


def program_choices(now: datetime) -> dict:
    """The catalog's programs for the picker, with whether each is open now."""
    services = current_services()
    if services.catalog is None:
        return {"programs": [], "service_types": {}, "catalog_error": services.catalog_error}
    from smartapp.catalog import SERVICE_TYPES

    programs = [
        {
            "id": p.id,
            "name": p.name,
            "phone": p.phone,
            "services": p.services,
            "accepting_new": p.accepting_new,
            "hours": p.hours,
            "open": p.open_now(now),
        }
        for p in services.catalog.programs()
    ]
    return {"programs": programs, "service_types": SERVICE_TYPES, "catalog_error": None}


@bp.context_processor
def inject_programs() -> dict:
    return program_choices(datetime.now(UTC))


def chosen_program() -> str | None:
    """The program the physician picked (from the catalog) or typed, as words for the note."""
    services = current_services()
    program_id = request.form.get("program", "").strip()
    if program_id and services.catalog is not None:
        try:
            program = services.catalog.get(program_id)
        except KeyError:
            program = None
        if program is not None:
            return f"{program.name} ({program.phone})"
    other = request.form.get("program-other", "").strip()[:200]
    return other or None


def decided(referral) -> dict:
    """The signed decisions by suggestion kind, for showing a visit that was already signed."""
    if referral is None:
        return {}
    return {d["kind"]: d for d in referral.decision.get("decisions", [])}


def read_decisions(shown: dict) -> tuple[list[writeback.ItemDecision], list[str]]:
    """The form's choices per suggestion; errors in words for anything missing."""
    decisions, errors = [], []
    for suggestion in shown["suggestions"]:
        kind = suggestion["kind"]
        choice = request.form.get(f"decision-{kind}")
        if choice not in ("accept", "decline"):
            errors.append(f"{suggestion['title']}: choose to accept or decline.")
            continue
        if choice == "accept":
            decisions.append(writeback.ItemDecision(kind=kind, accepted=True))
            continue
        code = request.form.get(f"reason-{kind}", "")
        reason = next((r for r in suggestion["decline_reasons"] if r["code"] == code), None)
        text = request.form.get(f"reason-text-{kind}", "").strip()[:500] or None
        if reason is None:
            errors.append(f"{suggestion['title']}: pick a reason for declining.")
        elif reason["free_text"] and not text:
            errors.append(f"{suggestion['title']}: say why in a few words.")
        else:
            decisions.append(
                writeback.ItemDecision(
                    kind=kind, accepted=False, decline_reason=reason["label"], decline_text=text
                )
            )
    return decisions, errors


@bp.post("/<context_id>/sign")
def sign(context_id: str):
    check_csrf()
    context = load_context(context_id)
    services = current_services()
    shown = context.shown
    if not shown:
        abort(400, description="Nothing was shown yet for this launch. Reload the page.")
    key = visit_key(context)
    if outbox.for_visit(services.db, key) is not None:
        return redirect(url_for("screen.show", context_id=context.id))
    decisions, errors = read_decisions(shown)
    mode = request.form.get("consult-mode", "in-person")
    if mode not in writeback.CONSULT_MODES:
        errors.append("Choose how the coach consult happens.")
    if errors:
        return render_template(
            "screen.html", context=context, shown=shown, referral=None, decided={}, errors=errors
        ), 422
    registration = services.registry.by_id(context.registration_id)
    settings = registration.write
    signed = writeback.SignedReferral(
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        encounter_start=shown["encounter"].get("start"),
        user_ref=context.user_ref,
        user_name=None,
        signed_at=datetime.now(UTC),
        pack_id=shown["pack"]["id"],
        pack_version=shown["pack"]["version"],
        pack_hash=shown["pack"]["hash"],
        shown=tuple(
            writeback.ShownSuggestion(
                kind=s["kind"],
                title=s["title"],
                reason=s["reason"],
                variant=s["variant"],
                cautions=tuple(s["cautions"]),
                evidence=tuple(e["reference"] for e in s["evidence"]),
                evidence_words=tuple(e["words"] for e in s["evidence"]),
                rule=s["rule"],
            )
            for s in shown["suggestions"]
        ),
        decisions=tuple(decisions),
        consult_mode=mode,
        program=chosen_program(),
        opioid=shown["opioid"],
    )
    plan = writeback.build_plan(
        signed, write_settings(settings), profiles.profile(settings.profile)
    )
    for op in plan["operations"]:
        if op["mode"] == "rest" and not smart.may(context.scope, op["type"], "c"):
            op["mode"], op["status"] = "local", "kept"  # not granted: kept in Handoff, shown
    decision_record = {
        "pack": shown["pack"],
        "consult_mode": mode,
        "program": signed.program,
        "shown": shown,
        "decisions": [
            {
                "kind": d.kind,
                "accepted": d.accepted,
                "reason": d.decline_reason,
                "text": d.decline_text,
            }
            for d in decisions
        ],
    }
    referral, created = outbox.submit(
        services.db,
        visit_key=key,
        context_id=context.id,
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        user_ref=context.user_ref,
        decision=decision_record,
        plan=plan,
    )
    if created and referral.status == "held":
        outbox.hold(
            services.db,
            referral.id,
            "The EHR did not grant Handoff write access; "
            "the signed decision is kept in Handoff's referral log.",
        )
    elif created and referral.status == "queued":
        outbox.deliver(services.db, referral.id, client_for_referral)
    return redirect(url_for("screen.show", context_id=context.id))


def write_settings(settings) -> writeback.WriteSettings:
    return writeback.WriteSettings(
        identifier_system=current_app.config["REFERRAL_IDENTIFIER_SYSTEM"],
        service_request_code=settings.service_request_code,
        note_type=settings.note_type,
        doc_status=settings.doc_status,
        coach_team=settings.coach_team,
        part2_program=settings.part2_program,
        draft_medications=settings.draft_medications,
        medication_codes=settings.medication_codes,
        coach_pool=settings.coach_pool,
    )


def client_for_referral(referral, force_refresh: bool = False):
    """Credentials for a referral's writes (see sessions.client_for_referral)."""
    return sessions.client_for_referral(current_services(), referral, force_refresh)
