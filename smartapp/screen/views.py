"""The physician's screen: suggestions with evidence, the opt-out coach referral, Sign.

Web layer only: it reads the chart through `fhir`, decides through the engine, writes through
the outbox, and records each step in the referral log.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from smartapp.audit import log as referral_log
from smartapp.db import LaunchContext
from smartapp.engine import ChartError, Notice, evaluate
from smartapp.engine.readable import readable_chart
from smartapp.fhir.client import CHART_TYPES, ChartLimits, FhirError
from smartapp.launch import client as smart
from smartapp.launch import sessions, signer
from smartapp.screen.describe import demographics, describe, in_words, patient_banner
from smartapp.services import current_services
from smartapp.web import check_csrf, holds_browser_id
from smartapp.writeback import outbox, profiles
from smartapp.writeback import resources as writeback

bp = Blueprint("screen", __name__, url_prefix="/c")
log = logging.getLogger("handoff.screen")

OPIOID_KINDS = {"moud-buprenorphine", "moud-continue", "naloxone-kit"}
# The engine's notices and withheld reasons in the physician's words (the decision is the
# engine's: what it withholds or cautions is shown, never changed, here).
NOTICE_WORDS = {
    "not-current-ed-visit": "This encounter is not an ED visit in progress: the suggestions "
    "are for it all the same. Check that it is the visit you mean.",
    "deceased": "The chart records this patient as deceased: nothing is suggested.",
}
WITHHELD_WORDS = {
    "deceased": "the patient is recorded as deceased",
    "already-referred": "a coach referral is already placed for this visit",
    "under-age": "the patient is under the age the rules set",
    "on-moud": "the patient is already on medication for OUD",
    "allergy": "the chart records a buprenorphine allergy",
    "has-naloxone": "a naloxone kit was already prescribed or dispensed",
}


def load_context(context_id: str) -> LaunchContext:
    """The launch context, only for the browser that launched it."""
    with current_services().db.session() as db:
        context = db.get(LaunchContext, context_id)
    if context is None or not holds_browser_id(context.browser_id):
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


def notice_text(notice: Notice) -> str:
    """An engine notice as the sentence the physician reads."""
    if notice.unread:
        return (
            "The EHR did not let Handoff read: "
            + ", ".join(notice.unread)
            + ". Suggestions may be incomplete; ask about methadone, buprenorphine, "
            "naltrexone and allergies before starting buprenorphine."
        )
    return NOTICE_WORDS.get(notice.code, notice.code)


def build_shown(context: LaunchContext, now: datetime) -> dict:
    """Read the chart, evaluate the pack, and describe what the physician will see."""
    services = current_services()
    allowed, unreadable = readable_types(context.scope)
    read = with_fhir(
        context,
        lambda client: client.read_chart(
            context.patient_id,
            context.encounter_id,
            now,
            current_app.config["CHART_OBSERVATION_DAYS"],
            types=allowed,
            limits=ChartLimits.from_config(current_app.config),
        ),
    )
    # What cannot be read is left out and named (issue 9 item 27); long texts are cut (28).
    readable = readable_chart(
        read.resources,
        current_app.config["RESOURCE_TEXT_MAX_CHARS"],
        current_app.config["CHART_MAX_NOTICES"],
    )
    chart = readable.chart
    # Chart completeness is the engine's input (rules v2): what the scopes did not allow, and
    # what could not be read, decide cautions, the COWS threshold and the notice there.
    incomplete = set(unreadable) | read.incomplete | readable.incomplete_types
    evaluation = evaluate(
        chart, now, services.pack, encounter_id=context.encounter_id, unread=sorted(incomplete)
    )
    notices = read.notices + readable.notices + [notice_text(n) for n in evaluation.notices]
    suggestions = []
    for suggestion in evaluation.suggestions:
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
        "withheld": [
            {
                "kind": w.kind,
                "reason": w.reason,
                "reasons": [b.reason for b in w.reasons],
                "words": WITHHELD_WORDS.get(w.reason, w.reason),
                "evidence": list(w.evidence),
            }
            for w in evaluation.withheld
        ],
        "opioid": any(s["kind"] in OPIOID_KINDS for s in suggestions),
        "notices": notices,
        "notice_codes": [n.code for n in evaluation.notices],
        "can_write": not missing_writes,
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
            choices={},
            signed=signed_words(existing),
            writing=is_writing(existing),
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
    # Who signs, read now with the chart, so that Sign itself waits for nothing but its write.
    shown["signer_name"] = signer.display_name(services, context)
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
                "notices": shown["notices"],  # what could not be read or was cut: no PHI
                "suggestions": [
                    {k: s[k] for k in ("kind", "variant", "cautions", "rule")}
                    | {"evidence": [e["reference"] for e in s["evidence"]]}
                    for s in shown["suggestions"]
                ],
                "withheld": [
                    {k: w[k] for k in ("kind", "reason", "reasons", "evidence")}
                    for w in shown.get("withheld", [])
                ],
                "notice_codes": list(shown.get("notice_codes", [])),
            },
        )
    return render_template(
        "screen.html",
        context=context,
        shown=shown,
        referral=None,
        decided={},
        errors=[],
        choices=blank_choices(shown),
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


# Opt-out: these are accepted unless the physician declines.
PRESELECTED = {"prc-consult", "moud-continue"}


def blank_choices(shown: dict) -> dict:
    """The form as first shown: opt-out suggestions accepted, the rest left to choose."""
    return {
        "decisions": {
            s["kind"]: {"choice": "accept" if s["kind"] in PRESELECTED else None}
            for s in shown["suggestions"]
        },
        "consult_mode": "in-person",
    }


def form_choices(form, shown: dict) -> dict:
    """Everything the physician put on the form, as sent (complete or not), so that an error
    page or an "already signed" page shows it back instead of the defaults."""
    decisions = {}
    for suggestion in shown["suggestions"]:
        kind = suggestion["kind"]
        choice = form.get(f"decision-{kind}")
        decisions[kind] = {
            "choice": choice if choice in ("accept", "decline") else None,
            "reason": form.get(f"reason-{kind}", ""),
            "text": form.get(f"reason-text-{kind}", "")[:500],
        }
    return {
        "decisions": decisions,
        "consult_mode": form.get("consult-mode", ""),
        "program": form.get("program", "").strip(),
        "program_other": form.get("program-other", "").strip()[:200],
    }


def as_decision(suggestion: dict, chosen: dict) -> dict:
    """A form choice in the shape of a signed decision (reason as its label), to compare with
    what was signed; `accepted` is None when nothing was chosen."""
    accepted = {"accept": True, "decline": False}.get(chosen.get("choice"))
    label = next(
        (r["label"] for r in suggestion["decline_reasons"] if r["code"] == chosen.get("reason")),
        None,
    )
    declined = accepted is False
    return {
        "kind": suggestion["kind"],
        "accepted": accepted,
        "reason": label if declined else None,
        "text": ((chosen.get("text") or "").strip()[:500] or None) if declined else None,
    }


def decision_words(title: str, decision: dict | None) -> str:
    """One decision in plain words, e.g. "Naloxone kit: declined (Patient declined: ...)"."""
    if decision is None or decision.get("accepted") is None:
        return f"{title}: no choice made"
    if decision["accepted"]:
        return f"{title}: accepted"
    why = ": ".join(x for x in (decision.get("reason"), decision.get("text")) if x)
    return f"{title}: declined ({why or 'no reason given'})"


def consult_words(mode: str | None, program: str | None) -> str:
    return f"Coach consult: {(mode or 'not chosen').replace('-', ' ')}" + (
        f", program: {program}" if program else ""
    )


def signed_words(referral) -> dict:
    """Who signed the visit and when, in words for the page."""
    created = referral.created_at
    return {
        "by": referral.user_ref or "an unknown user",
        "at": created.strftime("%Y-%m-%d %H:%M UTC") if created else "an unknown time",
    }


def unsent_choices(shown: dict, choices: dict, referral, program: str | None) -> list[dict]:
    """The choices of this window that differ from what was signed for the visit: none of them
    was sent, so each must be shown to the physician."""
    written = decided(referral)
    differing = []
    for suggestion in shown["suggestions"]:
        mine = as_decision(suggestion, choices["decisions"].get(suggestion["kind"], {}))
        theirs = written.get(suggestion["kind"])
        if theirs is None or mine != {k: theirs.get(k) for k in mine}:
            differing.append(mine | {"words": decision_words(suggestion["title"], mine)})
    signed_decision = referral.decision
    prc = written.get("prc-consult")
    mine_prc = choices["decisions"].get("prc-consult", {}).get("choice") == "accept"
    if mine_prc and prc and prc.get("accepted"):
        mine_consult = (choices["consult_mode"] or None, program)
        theirs_consult = (signed_decision.get("consult_mode"), signed_decision.get("program"))
        if mine_consult != theirs_consult:
            differing.append(
                {"kind": "consult", "mode": mine_consult[0], "program": mine_consult[1]}
                | {"words": consult_words(*mine_consult)}
            )
    return differing


def already_signed(context: LaunchContext, shown: dict, referral, choices: dict):
    """Sign on a visit that is signed already (another window, another launch, a race): the
    physician is told by whom and when, what was written, and which of their choices were not
    sent. A repeat of the same Sign in the same window (a double click) just shows the result."""
    services = current_services()
    not_sent = unsent_choices(shown, choices, referral, chosen_program())
    if referral.context_id == context.id and not not_sent:
        return redirect(url_for("screen.show", context_id=context.id))
    log.warning(
        "sign refused: visit already signed referral=%s differing=%d",
        referral.id[:8],
        len(not_sent),
    )
    with services.db.session() as db:
        referral_log.append_about(
            db,
            "sign-after-signed",
            context,
            data={
                "referral": referral.id,
                "signed_by": referral.user_ref,
                "not_sent": [{k: v for k, v in d.items() if k != "words"} for d in not_sent],
            },
        )
    signed_shown = referral.decision.get("shown") or shown
    titles = {s["kind"]: s["title"] for s in signed_shown["suggestions"]}
    written = [
        decision_words(titles.get(d["kind"], d["kind"]), d)
        for d in referral.decision.get("decisions", [])
    ]
    if (decided(referral).get("prc-consult") or {}).get("accepted"):
        written.append(
            consult_words(referral.decision.get("consult_mode"), referral.decision.get("program"))
        )
    conflict = signed_words(referral) | {
        "by_you": bool(referral.user_ref) and referral.user_ref == context.user_ref,
        "written": written,
        "not_sent": [d["words"] for d in not_sent],
    }
    return render_template(
        "screen.html",
        context=context,
        shown=signed_shown,
        referral=referral,
        decided=decided(referral),
        errors=[],
        choices={},
        signed=signed_words(referral),
        writing=is_writing(referral),
        conflict=conflict,
    ), 409


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
    choices = form_choices(request.form, shown)
    existing = outbox.for_visit(services.db, key)
    if existing is not None:
        return already_signed(context, shown, existing, choices)
    decisions, errors = read_decisions(shown)
    mode = request.form.get("consult-mode", "in-person")
    if mode not in writeback.CONSULT_MODES:
        errors.append("Choose how the coach consult happens.")
    if errors:
        return render_template(
            "screen.html",
            context=context,
            shown=shown,
            referral=None,
            decided={},
            errors=errors,
            choices=choices,
        ), 422
    registration = services.registry.by_id(context.registration_id)
    settings = registration.write
    signed = writeback.SignedReferral(
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        encounter_start=shown["encounter"].get("start"),
        user_ref=context.user_ref,
        user_name=shown["signer_name"] if "signer_name" in shown else signer.display_name(
            services, context
        ),
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
    if not created:  # another window signed the visit between our check and our submit
        return already_signed(context, shown, referral, choices)
    if referral.status == "held":
        outbox.hold(
            services.db,
            referral.id,
            "The EHR did not grant Handoff write access; "
            "the signed decision is kept in Handoff's referral log.",
        )
    elif referral.status == "queued":
        # Wait a bounded time for the write; a slow EHR gets "queued, writing" and the page
        # follows the delivery, which goes on beside the request (and in the outbox worker).
        delivery = deliver_in_background(referral.id)
        delivery.join(current_app.config["SIGN_WAIT_SECONDS"])
        if delivery.is_alive():
            log.info("sign answered before the write landed: referral=%s", referral.id[:8])
    return redirect(url_for("screen.show", context_id=context.id))


def deliver_in_background(referral_id: str) -> threading.Thread:
    """Start the referral's first write in a thread of its own (under the outbox's lease, so
    no worker writes it at the same time); if this process dies, the lease runs out and the
    outbox worker takes over."""
    app = current_app._get_current_object()

    def run() -> None:
        with app.app_context():
            try:
                outbox.deliver(current_services().db, referral_id, client_for_referral)
            except Exception:  # it stays queued; the outbox worker retries it
                log.exception("delivery crashed: referral=%s", referral_id[:8])

    thread = threading.Thread(target=run, name=f"sign-{referral_id[:8]}", daemon=True)
    thread.start()
    return thread


def is_writing(referral, now: datetime | None = None) -> bool:
    """Whether a delivery holds the referral's lease now (a write is under way)."""
    until = referral.lease_until
    if referral.status != "queued" or until is None:
        return False
    if until.tzinfo is None:  # SQLite gives naive UTC datetimes back
        until = until.replace(tzinfo=UTC)
    return until > (now or datetime.now(UTC))


@bp.get("/<context_id>/status")
def status(context_id: str):
    """Where the visit's signed referral stands, for the page to follow a write that is still
    under way (polled by handoff.js; the page reloads when it changes)."""
    context = load_context(context_id)
    referral = outbox.for_visit(current_services().db, visit_key(context))
    if referral is None:
        return jsonify(status="unsigned", attempts=0, writing=False)
    return jsonify(
        status=referral.status, attempts=referral.attempts, writing=is_writing(referral)
    )


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
